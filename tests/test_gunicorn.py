"""gunicorn --preload with sync workers: the app's connection is opened in the master.

tests/wsgi_app.py connects at import, so with --preload in the master, before it forks
its two workers; every request queries through that connection.  tests/gunicorn_conf.py's
``on_exit`` hook queries it once more in the master after the workers have exited.
gunicorn runs as a subprocess in a session of its own, on a unix socket, stopped with
SIGTERM (killed, and the test failed, if it does not stop in time).
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .helpers import child_pythonpath

pytest.importorskip("gunicorn", reason="gunicorn is not installed")

TESTS = Path(__file__).resolve().parent
#: Seconds to wait for gunicorn to listen, for an answer, and for it to stop.
DEADLINE = 30.0
MESSAGE_PID = re.compile(r"guarddb: process (\d+) called")


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        """Connect to the unix socket instead of a TCP port."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


@dataclass
class Answer:
    """One HTTP answer: status, and the JSON body (None when it is not JSON)."""

    status: int
    body: dict[str, Any] | None


def _control_socket_flags() -> list[str]:
    # gunicorn >= 24 opens a control socket by default; older ones have no such flag.
    from gunicorn.config import KNOWN_SETTINGS

    known = any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS)
    return ["--no-control-socket"] if known else []


class Gunicorn:
    """A running ``gunicorn --preload --workers 2`` serving tests/wsgi_app.py."""

    def __init__(self, directory: Path, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.process = process
        self.socket = str(directory / "gunicorn.sock")
        self.hold = directory / "hold"
        self.log_path = directory / "error.log"
        self.exit_report_path = directory / "exit.json"

    @property
    def master_pid(self) -> int:
        """``python -m gunicorn`` runs the master (the arbiter) in the process we started."""
        return self.process.pid

    def log(self) -> str:
        """gunicorn's error log (tracebacks of failed requests) and its stderr."""
        parts = [p.read_text() for p in (self.log_path, self.directory / "stderr") if p.exists()]
        return "\n".join(parts)

    def wait_until_listening(self) -> None:
        """Poll the unix socket until the master accepts connections (with a deadline)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(self.socket)
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn not listening after {DEADLINE}s:\n{self.log()}")
            time.sleep(0.05)  # polling: nothing tells us when the master has bound

    def get(self, path: str = "/") -> Answer:
        """GET ``path``; the answer's status and JSON body."""
        conn = UnixHTTPConnection(self.socket, DEADLINE)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        return Answer(response.status, body)

    def _open_hold_writer(self) -> int:
        # Opening a FIFO's write end without blocking fails (ENXIO) while nobody reads it:
        # it succeeds once a worker is inside GET /hold, opening the read end.
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                return os.open(self.hold, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
            if time.monotonic() > deadline:
                pytest.fail(f"no worker took GET /hold in {DEADLINE}s:\n{self.log()}")
            time.sleep(0.01)  # polling: the FIFO has no "a reader arrived" event

    def get_from_both_workers(self) -> list[Answer]:
        """One answer from each worker: the first is held inside GET /hold meanwhile.

        A sync worker serves one request at a time, so while one sits in /hold, the other
        request can only be served by the other worker.
        """
        box: dict[str, Any] = {}

        def held() -> None:
            try:
                box["answer"] = self.get("/hold")
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=held, name="held-request")
        thread.start()
        try:
            writer = self._open_hold_writer()
            try:
                other = self.get("/")
            finally:
                os.close(writer)  # the held worker reads EOF and goes on to its query
        finally:
            thread.join(DEADLINE)
        assert not thread.is_alive(), "the held request never finished"
        if "error" in box:
            raise box["error"]
        return [box["answer"], other]

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait (kill and fail on timeout); what the master's on_exit hook wrote."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"gunicorn did not stop on SIGTERM in {DEADLINE}s:\n{self.log()}")
        assert self.process.returncode == 0, self.log()
        assert self.exit_report_path.exists(), f"on_exit did not run:\n{self.log()}"
        return json.loads(self.exit_report_path.read_text())  # type: ignore[no-any-return]


@contextlib.contextmanager
def gunicorn(connect_args: dict[str, Any], **env: str) -> Iterator[Gunicorn]:
    """Start gunicorn --preload with 2 sync workers on a unix socket; yield it listening."""
    # A short directory: a unix socket's path must fit in 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="guarddb-gunicorn-"))
    os.mkfifo(directory / "hold")
    environment = {
        **os.environ,
        "PYTHONPATH": child_pythonpath(),
        "GUARDDB_TEST_CONNECT_ARGS": json.dumps(connect_args),
        "GUARDDB_WSGI_HOLD": str(directory / "hold"),
        "GUARDDB_WSGI_EXIT_REPORT": str(directory / "exit.json"),
    }
    environment.pop("GUARDDB_ON_FORK", None)  # only what the test gives
    environment.update(env)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--preload",
        "--workers=2",
        "--worker-class=sync",
        f"--bind=unix:{directory / 'gunicorn.sock'}",
        f"--config={TESTS / 'gunicorn_conf.py'}",
        f"--pythonpath={TESTS}",
        f"--error-logfile={directory / 'error.log'}",
        "--graceful-timeout=10",
        *_control_socket_flags(),
        "wsgi_app:app",
    ]
    with open(directory / "stderr", "wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,  # to kill master and workers together if need be
        )
    server = Gunicorn(directory, process)
    try:
        server.wait_until_listening()
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a worker left behind
        shutil.rmtree(directory, ignore_errors=True)


def test_preloaded_connection_raises_in_the_workers(connect_args):
    with gunicorn(connect_args) as server:  # on_fork="raise", the default
        answers = server.get_from_both_workers()
        exit_report = server.stop()
        log = server.log()
    assert [answer.status for answer in answers] == [500, 500]
    assert log.count("ForkedConnectionError") >= 2, log
    workers = {int(pid) for pid in MESSAGE_PID.findall(log)}
    assert len(workers) == 2 and server.master_pid not in workers, log
    assert f"by process {server.master_pid}, inherited across fork()" in log
    # The master's session, after both workers used (and exited with) their copies.
    assert exit_report["pid"] == server.master_pid
    assert exit_report["session"] == exit_report["master_session"], exit_report


def test_preloaded_connection_reconnects_in_each_worker(connect_args):
    with gunicorn(connect_args, GUARDDB_ON_FORK="reconnect") as server:
        answers = server.get_from_both_workers()
        answers += [server.get("/") for _ in range(4)]
        exit_report = server.stop()
        log = server.log()
    assert [answer.status for answer in answers] == [200] * 6, log
    bodies = [answer.body for answer in answers]
    master_session = exit_report["master_session"]
    sessions: dict[int, set[int]] = {}
    for body in bodies:
        assert body is not None
        assert body["master_pid"] == server.master_pid  # imported in the master (--preload)
        assert body["master_session"] == master_session
        assert body["pid"] != server.master_pid
        assert body["session"] != master_session
        sessions.setdefault(body["pid"], set()).add(body["session"])
    assert len(sessions) == 2, sessions
    # Each worker keeps the one session it opened; the two workers do not share one.
    assert all(len(each) == 1 for each in sessions.values()), sessions
    assert len(set.union(*sessions.values())) == 2, sessions
    assert "ForkedConnectionError" not in log
    assert exit_report["session"] == master_session, exit_report


def test_plain_mysqlclient_workers_share_the_masters_session_and_end_it(connect_args):
    with gunicorn(connect_args, GUARDDB_WSGI_DRIVER="plain") as server:
        answers = server.get_from_both_workers()
        exit_report = server.stop()
    assert [answer.status for answer in answers] == [200, 200]
    bodies = [answer.body for answer in answers]
    assert bodies[0] is not None and bodies[1] is not None
    assert bodies[0]["pid"] != bodies[1]["pid"]
    # Both workers talk to the master's very session: three processes on one socket.
    assert bodies[0]["session"] == bodies[1]["session"] == bodies[0]["master_session"]
    # A worker's exit closed the connection it inherited: COM_QUIT ended the master's session.
    assert exit_report.get("args0") in (2006, 2013), exit_report
