"""Run a real Celery worker (prefork pool) in a subprocess, send it tasks, collect outcomes.

Shared by tests/test_celery.py and tests/test_django.py.  The worker reports through files
in a state directory (see :mod:`tests.celery_apps.state`); readiness is its ``worker_ready``
signal writing ``ready.json``, never a sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..helpers import child_pythonpath, guarddb_dir
from .state import read_json

__all__ = ["child_pythonpath", "guarddb_dir"]  # re-exported for the test modules

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unique_name(prefix: str) -> str:
    """A name no other run uses (queues, tables, node names)."""
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"


@dataclass
class Worker:
    """A running worker: its process, its queue, its state directory and log."""

    process: subprocess.Popen[bytes]
    queue: str
    state_dir: str
    log_path: str
    killed: bool = False
    returncode: int | None = None

    def state(self, name: str) -> Any:
        return read_json(self.state_dir, name)

    def log(self, limit: int = 6000) -> str:
        try:
            with open(self.log_path, errors="replace") as log:
                return log.read()[-limit:]
        except OSError:
            return "(no log)"


@dataclass
class TaskOutcome:
    """What became of one task: its state, its value or exception, its traceback."""

    args: tuple[Any, ...]
    state: str
    value: Any = None
    exception: str | None = None
    traceback: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "SUCCESS"


@contextlib.contextmanager
def run_worker(
    app_module: str,
    state_dir: str,
    env: dict[str, str],
    *,
    cwd: str = TESTS_DIR,
    ready_timeout: float = 30.0,
    stop_timeout: float = 15.0,
    pool: str = "prefork",
    concurrency: int = 2,
) -> Iterator[Worker]:
    """Start ``celery -A app_module worker`` (prefork, 2 processes) and wait until it is ready.

    ``pool`` and ``concurrency`` choose another pool (``"gevent"``: Celery patches the
    worker with gevent before anything else is imported, and runs each task in a greenlet).

    On exit: SIGTERM (warm shutdown, ``worker_shutdown`` runs), then SIGKILL of its whole
    process group if it has not ended within ``stop_timeout``.
    """
    queue = unique_name("guarddb_q")
    log_path = os.path.join(state_dir, "worker.log")
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_module,
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
        "--loglevel=INFO",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: the pool's children go with it
        )
    worker = Worker(process, queue, state_dir, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while worker.state("ready.json") is None:
            if process.poll() is not None:
                raise AssertionError(
                    f"celery worker exited ({process.returncode}) before ready:\n{worker.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"celery worker not ready in {ready_timeout}s:\n{worker.log()}"
                )
            time.sleep(0.05)  # polling for the file worker_ready writes
        yield worker
    finally:
        _stop(worker, stop_timeout)


def _stop(worker: Worker, timeout: float) -> None:
    process = worker.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            worker.killed = True
    # Whatever is left of the group (a hung main process, or a pool child): SIGKILL.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    worker.returncode = process.returncode


@contextlib.contextmanager
def client(broker_url: str, backend_url: str) -> Iterator[Any]:
    """A Celery app in the test process that only sends tasks by name and reads results."""
    from celery import Celery

    app = Celery("guarddb_test_client", broker=broker_url, backend=backend_url)
    app.conf.update(broker_connection_retry_on_startup=True, result_expires=600)
    try:
        yield app
    finally:
        app.close()


def run_tasks(
    app: Any, queue: str, name: str, arg_list: list[tuple[Any, ...]], timeout: float
) -> list[TaskOutcome]:
    """Send one task per args tuple to ``queue``; wait up to ``timeout`` s in all for them."""
    from celery.exceptions import TimeoutError as ResultTimeout

    sent = [(args, app.send_task(name, args=args, queue=queue)) for args in arg_list]
    deadline = time.monotonic() + timeout
    outcomes = []
    for args, result in sent:
        try:
            result.get(timeout=max(deadline - time.monotonic(), 0.1), propagate=False)
        except ResultTimeout:
            outcomes.append(TaskOutcome(args, "NO RESULT IN TIME"))
            continue
        state = result.state
        if state == "SUCCESS":
            outcomes.append(TaskOutcome(args, state, value=result.result))
        else:
            exc = result.result
            outcomes.append(
                TaskOutcome(
                    args,
                    state,
                    exception=f"{type(exc).__name__}: {exc}",
                    traceback=result.traceback,
                    extra={"exception_type": type(exc).__name__, "exception": exc},
                )
            )
    return outcomes
