"""A message broker for Celery: find one that runs, or start a private Redis.

Used by the demo's Celery scenario (:mod:`guarddb.tools.demo`) and by the
Celery tests (``tests/broker.py`` re-exports it).  The order of preference:

1. ``GUARDDB_TEST_BROKER`` (any Celery broker URL) when set;
2. a Redis answering ``PING`` on 127.0.0.1:6379;
3. a private ``redis-server`` (Debian's) started on a free loopback port, with no
   persistence, in a temporary directory; the caller stops it;
4. a RabbitMQ answering the AMQP handshake on 127.0.0.1:5672 (guest/guest);

else :class:`NoBroker`, whose message names everything that was looked at.
Nothing here is used by guarddb's connections themselves.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = [
    "AMQP_PORT",
    "ENV_BROKER",
    "ENV_RESULT_BACKEND",
    "LOOPBACK",
    "RABBITMQ_URL",
    "REDIS_PORT",
    "NoBroker",
    "PrivateRedis",
    "amqp_answers",
    "find_broker",
    "redis_answers",
    "result_backend_for",
]

#: A Celery broker URL to use instead of looking for one.
ENV_BROKER = "GUARDDB_TEST_BROKER"
#: A Celery result backend URL to use with it (default: the Redis itself, or rpc://).
ENV_RESULT_BACKEND = "GUARDDB_TEST_RESULT_BACKEND"

LOOPBACK = "127.0.0.1"
REDIS_PORT = 6379
AMQP_PORT = 5672
RABBITMQ_URL = f"amqp://guest:guest@{LOOPBACK}:{AMQP_PORT}//"

_SEARCH = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")


class NoBroker(Exception):
    """No broker runs and none could be started; the message names what is missing."""


def redis_answers(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """True if a Redis server answers ``PING`` at host:port (no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def amqp_answers(port: int = AMQP_PORT, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """True if an AMQP 0-9-1 server (RabbitMQ) answers the protocol header at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            # A method frame (type 1) on channel 0: Connection.Start.
            return sock.recv(7).startswith(b"\x01\x00\x00")
    except OSError:
        return False


def result_backend_for(broker_url: str) -> str:
    """The result backend to use with ``broker_url``: the same Redis, else ``rpc://``."""
    explicit = os.environ.get(ENV_RESULT_BACKEND)
    if explicit:
        return explicit
    if broker_url.startswith(("redis://", "rediss://")):
        return broker_url
    return "rpc://"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    for directory in _SEARCH:
        path = os.path.join(directory, "redis-server")
        if os.access(path, os.X_OK):
            return path
    return None


class PrivateRedis:
    """A ``redis-server`` on a free loopback port, with no persistence, in a temp directory."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="guarddb-redis-")
        self.log = os.path.join(self.dir, "redis.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker URL that reaches it."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> PrivateRedis:
        """Start the server and wait until it answers PING."""
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--logfile",
            self.log,
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not redis_answers(self.port):
            if self.process.poll() is not None:
                raise NoBroker(f"redis-server exited ({self.process.returncode}): {self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise NoBroker(f"redis-server did not answer in {timeout}s: {self.tail()}")
            time.sleep(0.02)  # polling a server we started; it signals readiness no other way
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def tail(self) -> str:
        """The end of the server's log."""
        try:
            with open(self.log, errors="replace") as log:
                return log.read()[-1000:]
        except OSError:
            return "(no log)"


def find_broker(default_redis_port: int = REDIS_PORT) -> tuple[str, PrivateRedis | None]:
    """``(broker_url, private_redis_or_None)``; the caller stops the private Redis.

    Raises :class:`NoBroker` naming every place looked at when there is none.
    """
    explicit = os.environ.get(ENV_BROKER)
    if explicit:
        return explicit, None
    # Celery talks to Redis through the redis package (celery[redis]).
    redis_client = importlib.util.find_spec("redis") is not None
    if redis_client and redis_answers(default_redis_port):
        return f"redis://{LOOPBACK}:{default_redis_port}/0", None
    binary = _redis_server_binary()
    why_not_redis = "no redis-server binary to start one (apt-get install redis-server)"
    if not redis_client:
        why_not_redis = "no redis Python package to use Redis (pip install 'celery[redis]')"
    elif binary is not None:
        try:
            private = PrivateRedis(binary).start()
        except NoBroker as exc:
            why_not_redis = f"{binary} could not be started ({exc})"
        else:
            return private.url, private
    if amqp_answers():
        return RABBITMQ_URL, None
    raise NoBroker(
        f"no Celery broker: {ENV_BROKER} is not set, no Redis to use on "
        f"{LOOPBACK}:{default_redis_port}, {why_not_redis}, and no RabbitMQ answers on "
        f"{LOOPBACK}:{AMQP_PORT}"
    )
