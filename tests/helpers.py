"""Helpers for tests: threads that sit inside a call, threads and forks that report back."""

from __future__ import annotations

import importlib.metadata
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition that no event can signal (another thread inside a C call)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


class Blocked:
    """A thread that sits inside a call on ``conn`` until released.

    It runs ``SELECT GET_LOCK(name, 60)`` while another session holds that
    lock, so the guard really sees a call in progress; ``release()`` lets it
    finish.  ``locking=False``: it runs ``SELECT SLEEP(60)`` instead (a call
    that takes no lock), which ``release()`` ends with ``KILL QUERY``.
    """

    def __init__(self, conn, holder_conn, name: str = "guarddb-test", locking: bool = True) -> None:
        self.conn = conn
        self.name = name
        self.locking = locking
        self.session = conn.thread_id()  # now: not while the thread is inside
        self.holder = holder_conn.cursor()
        if locking:
            self.holder.execute("SELECT GET_LOCK(%s, 10)", (name,))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="BlockedCaller")
        self.thread.start()
        wait_until(lambda: int(conn._guard.slot.busy) == self.thread.ident)

    def _run(self) -> None:
        try:
            cursor = self.conn.cursor()
            if not self.locking:
                try:
                    cursor.execute("SELECT SLEEP(60)")
                except Exception as exc:  # KILL QUERY: what release() does
                    if exc.args[:1] != (1317,):
                        raise
                return
            cursor.execute("SELECT GET_LOCK(%s, 60)", (self.name,))
            cursor.fetchall()
            cursor.execute("SELECT RELEASE_LOCK(%s)", (self.name,))
            cursor.close()
        except BaseException as exc:
            self.error = exc

    def release(self) -> None:
        if not self.locking:
            self.holder.execute(f"KILL QUERY {int(self.session)}")
        else:
            self.holder.execute("SELECT RELEASE_LOCK(%s)", (self.name,))
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def in_thread(fn: Callable[[], Any], name: str = "Other") -> Any:
    """Run ``fn`` in a new thread; return its result or re-raise its exception here."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "thread hung"
    if "error" in box:
        raise box["error"]
    return box.get("result")


def run_threads(target: Callable[[int], Any], count: int, timeout: float = 120.0) -> None:
    """Run ``target(n)`` in ``count`` threads at once and wait for all; a hang fails."""
    threads = [threading.Thread(target=target, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"


def share_among_threads(
    conn: Any, check: Callable[[int, int], Any], times: int, count: int = 8
) -> None:
    """Run ``check(number, i)`` ``times`` over in ``count`` threads released at once.

    ``check`` uses what ``conn`` is shared through and returns what it saw wrong
    (None if nothing).  Fails on anything wrong or raised, and unless the threads
    really waited for each other on ``conn`` (mutex mode's wait count).
    """
    wrong: list[Any] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(count)

    def work(number: int) -> None:
        barrier.wait()
        for i in range(times):
            try:
                seen = check(number, i)
            except Exception as exc:
                errors.append(exc)
            else:
                if seen is not None:
                    wrong.append(seen)

    run_threads(work, count)
    assert not wrong[:5] and not errors[:5]
    assert conn.guard_stats()["waits"] > 0  # they really did share it


def in_forked_child(fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run ``fn`` in an os.fork() child; return what it returned (JSON), or raise on death/hang.

    The child never returns into pytest: it reports through a pipe and
    leaves with os._exit.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            report = {"result": fn()}
        except BaseException as exc:
            report = {"error": type(exc).__name__, "args": [repr(a) for a in exc.args]}
        try:
            os.write(write_end, json.dumps(report, default=repr).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([read_end], [], [], max(remaining, 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"forked child hung for {timeout}s")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise AssertionError(f"forked child died of signal {os.WTERMSIG(status)}")
    report = json.loads(b"".join(chunks) or b"{}")
    if "error" in report:
        raise ChildError(report["error"], report["args"])
    return report.get("result")


class ChildError(Exception):
    """An exception raised in a forked child: its class name and args (as repr)."""

    def __init__(self, name: str, args: list[str]) -> None:
        super().__init__(name, args)
        self.name = name
        self.child_args = args


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with these environment variables added."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def guarddb_dir() -> str:
    """The directory holding the guarddb package this test process imported.

    ``<repo>/src`` when the tests run on the source tree (PYTHONPATH=src), site-packages
    when guarddb is pip-installed (CI): subprocesses must get the very same guarddb.
    """
    import guarddb

    return os.path.dirname(os.path.dirname(os.path.abspath(guarddb.__file__)))


def child_pythonpath(*extra: str) -> str:
    """PYTHONPATH for a subprocess: the extra dirs, this process's guarddb, then the caller's."""
    parts = [*extra, guarddb_dir()]
    inherited = os.environ.get("PYTHONPATH")
    if inherited:
        parts.append(inherited)
    return os.pathsep.join(parts)


_HIDE_DRIVER = '''\
"""Written by the tests: {module} cannot be imported, as if its driver were not installed."""
import sys


class _NotInstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled)
'''


def hiding_driver(directory: str | os.PathLike[str], module: str) -> str:
    """A directory whose ``sitecustomize.py`` makes ``module`` (``MySQLdb``, ``pymysql``)
    unimportable in any Python started with it first on PYTHONPATH; returns its path."""
    path = os.path.join(os.fspath(directory), f"without-{module}")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "sitecustomize.py"), "w") as file:
        file.write(_HIDE_DRIVER.format(module=module))
    return path


def pytest11_entry_points() -> list[importlib.metadata.EntryPoint]:
    """The pytest plugins installed distributions register (the ``pytest11`` group)."""
    found = importlib.metadata.entry_points()
    if hasattr(found, "select"):
        return list(found.select(group="pytest11"))
    return list(found.get("pytest11", ()))  # Python 3.9


def _entry_point_registered() -> bool:
    """Whether an installed distribution registers guarddb's plugin with pytest."""
    return any(
        entry.name == "guarddb" and entry.value == "guarddb.tools.pytest_plugin"
        for entry in pytest11_entry_points()
    )


#: What an inner pytest run needs to load guarddb's plugin: nothing when guarddb is
#: installed (pytest loads it by itself; ``-p`` would load it twice), else ``-p``.
PLUGIN_ARGS: tuple[str, ...] = (
    () if _entry_point_registered() else ("-p", "guarddb.tools.pytest_plugin")
)
