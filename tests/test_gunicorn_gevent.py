"""gunicorn -k gevent (issue 13): each request a greenlet, and guarddb's "thread" that greenlet.

gunicorn's gevent worker patches itself with ``gevent.monkey.patch_all()`` before it imports
tests/wsgi_gevent_app.py (one worker, no ``--preload``), so every request runs in a greenlet
of its own on one OS thread.  The test sends its requests at once from a thread pool, over
http.client on a unix socket; gunicorn runs in a session of its own, with the time limits
and the clean-up of tests/test_gunicorn.py.

- A connection per request, ``cooperative=True``, strict mode: every request waits on the
  server at the same time (a user lock the test holds: with statements that block the hub,
  only one could get there), and each answers its own rows on its own session.
- One connection and one cursor shared by every request, each yielding between execute and
  fetch (a barrier of greenlets: every execute comes before any fetch): mutex mode answers
  each request its own rows; exclusive mode refuses the fetch of rows another greenlet
  executed with ConcurrentUseError (500, logged) instead of handing them out; plain
  mysqlclient hands every request the last executor's rows, silently.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import MySQLdb
import pytest

from .helpers import child_pythonpath
from .test_gunicorn import DEADLINE, TESTS, Answer, UnixHTTPConnection, _control_socket_flags

pytest.importorskip("gunicorn", reason="gunicorn is not installed")
pytest.importorskip("gevent", reason="gevent is not installed (pip install 'gevent>=24')")

#: Requests sent at once (the app's barrier waits for this many executes).
PARTY = 8


class GeventGunicorn:
    """A running ``gunicorn -k gevent --workers 1`` serving tests/wsgi_gevent_app.py."""

    def __init__(self, directory: Path, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.process = process
        self.socket = str(directory / "gunicorn.sock")
        self.log_path = directory / "error.log"

    def log(self) -> str:
        """gunicorn's error log (tracebacks of failed requests) and its stderr."""
        parts = [p.read_text() for p in (self.log_path, self.directory / "stderr") if p.exists()]
        return "\n".join(parts)

    def wait_until_listening(self) -> None:
        """Poll until the worker answers (with a deadline): the app is imported by then."""
        deadline = time.monotonic() + DEADLINE
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.get("/ping").status == 404:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn not answering after {DEADLINE}s:\n{self.log()}")
            time.sleep(0.05)  # polling: nothing tells us when the worker has imported the app

    def get(self, path: str) -> Answer:
        """GET ``path``; the answer's status and JSON body (None when it is not JSON)."""
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

    def stop(self) -> None:
        """SIGTERM, wait (kill and fail on timeout)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"gunicorn did not stop on SIGTERM in {DEADLINE}s:\n{self.log()}")
        assert self.process.returncode == 0, self.log()


@contextlib.contextmanager
def gevent_gunicorn(connect_args: dict[str, Any], **env: str) -> Iterator[GeventGunicorn]:
    """Start gunicorn with one gevent worker on a unix socket; yield it answering."""
    directory = Path(tempfile.mkdtemp(prefix="guarddb-ggevent-"))  # short: a socket path
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("GUARDDB_") or "_TEST_" in k
    }
    environment.update(
        PYTHONPATH=child_pythonpath(),
        GUARDDB_TEST_CONNECT_ARGS=json.dumps(connect_args),
        GUARDDB_WSGI_PARTY=str(PARTY),
        **env,
    )
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers=1",
        "--worker-class=gevent",
        f"--bind=unix:{directory / 'gunicorn.sock'}",
        f"--pythonpath={TESTS}",
        f"--error-logfile={directory / 'error.log'}",
        "--graceful-timeout=10",
        *_control_socket_flags(),
        "wsgi_gevent_app:app",
    ]
    with open(directory / "stderr", "wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,  # to kill master and worker together if need be
        )
    server = GeventGunicorn(directory, process)
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


def get_all_at_once(server: GeventGunicorn, paths: list[str]) -> list[Answer]:
    """GET every path at once, each from a thread of its own; the answers in order."""
    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        return list(pool.map(server.get, paths))


def shared_cursor_answers(connect_args: dict[str, Any], **env: str) -> tuple[list[Answer], str]:
    """PARTY requests at once on the module's shared connection and cursor; answers, log."""
    with gevent_gunicorn(connect_args, **env) as server:
        answers = get_all_at_once(server, [f"/shared?n={n}" for n in range(1, PARTY + 1)])
        server.stop()
        log = server.log()
    return answers, log


# -- a connection per greenlet --------------------------------------------------------------


def waiting_on(holder: Any, gate: str) -> int:
    """How many sessions wait for the user lock ``gate`` now (its holder's excepted)."""
    cursor = holder.cursor()
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
        (f"SELECT GET_LOCK('{gate}'%",),
    )
    (count,) = cursor.fetchone()
    cursor.close()
    return int(count)


def test_a_connection_per_request_greenlet_cooperative_all_wait_at_once_and_answer_right(
    connect_args,
):
    """Each request opens its own connection (strict mode: the greenlet owns it) and waits
    for the test's lock on the server; with cooperative=True they all wait there at once,
    then each gets its own number back on a session of its own."""
    gate = f"guarddb-gate-{uuid.uuid4().hex[:12]}"
    holder = MySQLdb.connect(**connect_args)
    try:
        holder.cursor().execute("SELECT GET_LOCK(%s, 0)", (gate,))
        env = {"GUARDDB_MODE": "strict", "GUARDDB_COOPERATIVE": "1"}
        with gevent_gunicorn(connect_args, **env) as server:
            with ThreadPoolExecutor(max_workers=PARTY) as pool:
                pending = [
                    pool.submit(server.get, f"/own?n={n}&gate={gate}") for n in range(1, PARTY + 1)
                ]
                deadline = time.monotonic() + DEADLINE
                most = 0
                while (waiting := waiting_on(holder, gate)) < PARTY:
                    most = max(most, waiting)
                    if time.monotonic() > deadline or any(f.done() for f in pending):
                        holder.cursor().execute("SELECT RELEASE_LOCK(%s)", (gate,))
                        pytest.fail(
                            f"at most {most} of {PARTY} requests waited on the server at once: "
                            f"a statement blocked the hub\n{server.log()}"
                        )
                    time.sleep(0.02)  # polling the server: nothing signals a session's wait
                holder.cursor().execute("SELECT RELEASE_LOCK(%s)", (gate,))
                answers = [future.result() for future in pending]
            server.stop()
            log = server.log()
    finally:
        holder.close()
    assert [answer.status for answer in answers] == [200] * PARTY, log
    bodies = [answer.body for answer in answers]
    assert all(body is not None for body in bodies)
    sessions = set()
    for number, body in enumerate(bodies, 1):
        assert body["patched"] is True and body["mode"] == "strict" and body["cooperative"]
        assert body["gate"] == 1  # each got the lock once the test let it go
        ((answered, session),) = body["rows"]
        assert answered == number, body
        sessions.add(session)
    assert len(sessions) == PARTY  # a session per request
    assert len({body["ident"] for body in bodies}) == PARTY  # a greenlet per request
    assert len({body["pid"] for body in bodies}) == 1  # all of them in the one worker
    assert "Error handling request" not in log and "guarddb violation" not in log, log


# -- one connection and one cursor shared by every request ---------------------------------


def test_shared_cursor_in_mutex_mode_gives_every_request_greenlet_its_own_rows(connect_args):
    answers, log = shared_cursor_answers(connect_args, GUARDDB_MODE="mutex")
    assert [answer.status for answer in answers] == [200] * PARTY, log
    sessions = set()
    for number, answer in enumerate(answers, 1):
        assert answer.body is not None and answer.body["mode"] == "mutex"
        ((answered, session),) = answer.body["rows"]
        assert answered == number, answers  # its own rows, not another greenlet's
        sessions.add(session)
    assert len(sessions) == 1  # all on the one shared session
    assert "Error handling request" not in log, log


def test_shared_cursor_in_exclusive_mode_refuses_other_greenlets_rows(connect_args):
    """Every request executes before any fetches: the last executor's fetch is its own, every
    other fetch is of rows another greenlet executed: ConcurrentUseError, never those rows."""
    answers, log = shared_cursor_answers(connect_args, GUARDDB_MODE="exclusive")
    statuses = sorted(answer.status for answer in answers)
    assert statuses == [200] + [500] * (PARTY - 1), log
    for number, answer in enumerate(answers, 1):
        if answer.status == 200:
            assert answer.body is not None and answer.body["mode"] == "exclusive"
            assert [row[0] for row in answer.body["rows"]] == [number], answers
    assert log.count("Error handling request") == PARTY - 1, log
    assert log.count("guarddb.errors.ConcurrentUseError: ") == PARTY - 1, log
    assert "greenlet" in log.split("ConcurrentUseError: ", 1)[1].split("\n", 1)[0], log


def test_plain_mysqlclient_shared_cursor_hands_greenlets_each_others_rows(connect_args):
    """The bug the two tests above prevent: no error, and every request but the last
    executor's answers another greenlet's number."""
    answers, log = shared_cursor_answers(connect_args, GUARDDB_WSGI_DRIVER="plain")
    assert [answer.status for answer in answers] == [200] * PARTY, log
    wrong = [
        number
        for number, answer in enumerate(answers, 1)
        if [row[0] for row in answer.body["rows"]] != [number]
    ]
    assert len(wrong) == PARTY - 1, answers
