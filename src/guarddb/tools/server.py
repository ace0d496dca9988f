"""A private MariaDB server for the tests, the demo and the benchmark.

It runs Debian's ``mariadbd`` in a temporary data directory, listening on a
unix socket only, as the current user.  Nothing here is used by guarddb's
connections themselves.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

#: Set to a DSN (``mysql://user:password@host:port/db`` or
#: ``unix:///path/to/socket?user=root&db=test``) to use an existing server.
ENV_DSN = "GUARDDB_TEST_DSN"

_SEARCH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or next(
            (os.path.join(d, name) for d in _SEARCH if os.access(os.path.join(d, name), os.X_OK)),
            None,
        )
        if found:
            return found
    return None


def _ending_with_this_thread(command: list[str]) -> list[str]:
    """``command``, run so that it gets SIGTERM when the thread that starts it ends.

    A session killed outright (a CI time limit, SIGKILL) runs no clean-up: its
    server would run on, holding its memory, until the machine stops.  util-linux's
    ``setpriv --pdeathsig`` sets the parent-death signal and execs the command;
    the kernel sends it when the thread that forked ends, so only the main
    thread (which ends with the process) gets it.  Without setpriv, the command
    as it is.
    """
    setpriv = _find("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return command
    return [setpriv, "--pdeathsig", "TERM", "--", *command]


class PrivateServer:
    """One ``mariadbd`` in a temporary directory; ``connect_args`` reach it as root."""

    def __init__(self, base_dir: str | None = None) -> None:
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="guarddb-mariadb-")
        self.datadir = os.path.join(self.base_dir, "data")
        self.socket = os.path.join(self.base_dir, "mysqld.sock")
        self.log = os.path.join(self.base_dir, "error.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.connect_args: dict[str, Any] = {
            "unix_socket": self.socket,
            "user": "root",
            "database": "test",
        }

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> PrivateServer:
        """Create the data directory on first use, start the server, wait until it answers."""
        if not os.path.isdir(os.path.join(self.datadir, "mysql")):
            self._install()
        server = _find("mariadbd", "mysqld")
        if server is None:
            raise RuntimeError("mariadbd not found: install Debian's mariadb-server")
        command = [
            server,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--pid-file={os.path.join(self.base_dir, 'mysqld.pid')}",
            f"--log-error={self.log}",
            "--skip-networking",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=16M",
            "--innodb-flush-log-at-trx-commit=0",
            "--max-connections=1000",
            "--skip-name-resolve",
        ]
        if os.geteuid() == 0:
            command.append("--user=root")
        self.process = subprocess.Popen(
            _ending_with_this_thread(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_ready(timeout)
        return self

    def _install(self) -> None:
        installer = _find("mariadb-install-db", "mysql_install_db")
        if installer is None:
            raise RuntimeError("mariadb-install-db not found: install Debian's mariadb-server")
        command = [
            installer,
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if os.geteuid() == 0:
            command.append("--user=root")
        done = subprocess.run(command, capture_output=True, timeout=300, check=False)
        if done.returncode:
            raise RuntimeError(
                f"mariadb-install-db failed ({done.returncode}): {done.stderr.decode()[-2000:]}"
            )

    def _wait_until_ready(self, timeout: float) -> None:
        import MySQLdb  # the plain driver: the server, not guarddb, is under test here

        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited ({self.process.returncode}):\n{self.tail()}")
            try:
                conn = MySQLdb.connect(unix_socket=self.socket, user="root")
            except MySQLdb.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mariadbd did not answer in {timeout}s:\n{self.tail()}"
                    ) from None
                time.sleep(0.05)  # polling a process we do not control; no event to wait on
                continue
            cursor = conn.cursor()
            cursor.execute("CREATE DATABASE IF NOT EXISTS test")
            conn.close()
            return

    def kill(self) -> None:
        """SIGKILL the server (fault tests); ``start()`` brings it back on the same data."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """Shut the server down cleanly."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        """The end of the server's error log."""
        try:
            with open(self.log, errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return "(no error log)"

    def __enter__(self) -> PrivateServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()


def parse_dsn(dsn: str) -> dict[str, Any]:
    """Connect arguments from ``mysql://user:pw@host:port/db`` or ``unix:///sock?user=..&db=..``."""
    from urllib.parse import parse_qs, unquote, urlparse

    url = urlparse(dsn)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    args: dict[str, Any] = {}
    if url.scheme == "unix":
        args["unix_socket"] = unquote(url.path)
        args["user"] = query.get("user", "root")
        if "password" in query:
            args["password"] = query["password"]
        args["database"] = query.get("db", "test")
    elif url.scheme in ("mysql", "mariadb"):
        args["host"] = url.hostname or "127.0.0.1"
        args["port"] = url.port or 3306
        args["user"] = unquote(url.username or "root")
        if url.password:
            args["password"] = unquote(url.password)
        args["database"] = url.path.lstrip("/") or "test"
    else:
        raise ValueError(f"{ENV_DSN}={dsn!r}: use mysql://user:pw@host:port/db or unix:///socket")
    return args
