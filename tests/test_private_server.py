"""The private MariaDB (tests, demo, bench) ends with the session that started it."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys

import pytest

#: Starts a private server, says its pid and waits to be killed.
_SESSION = """
import sys
from guarddb.tools.server import PrivateServer

server = PrivateServer(sys.argv[1]).start()
print(server.process.pid, flush=True)
sys.stdin.read()  # until killed
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv")
def test_a_killed_session_s_server_shuts_down(tmp_path):
    session = subprocess.Popen(
        [sys.executable, "-c", _SESSION, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = session.stdout.readline() if session.stdout else ""
        assert line.strip().isdigit(), f"the session said {line!r}"
        server_pid = int(line)
        with open(f"/proc/{server_pid}/comm") as comm:
            assert comm.read().strip() in ("mariadbd", "mysqld")
        server = os.pidfd_open(server_pid)
    finally:
        session.send_signal(signal.SIGKILL)  # no clean-up runs
        session.wait(timeout=30)
    try:
        ended, _, _ = select.select([server], [], [], 60)  # readable once the server exits
        if not ended:
            os.kill(server_pid, signal.SIGKILL)
        assert ended, "the server ran on after its session was killed"
    finally:
        os.close(server)
