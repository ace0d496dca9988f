"""The scenario ``celery_prefork``: a Celery prefork worker whose module opens a connection.

A real Celery worker (``--pool=prefork --concurrency=2``, the app
:mod:`guarddb.tools.demo.celery_app`) on a real broker, whose module opens a
connection at import; 8 tasks each insert a row and make many round trips.  The
server is watched through a plain connection of the child's own
(:mod:`guarddb.tools.demo.observe`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import guarddb

from .framework import Context, Recorder
from .observe import POLL, connect_watcher, plural, query

#: The environment variable that gives the Celery worker its configuration (JSON).
CELERY_ENV = "GUARDDB_DEMO_CELERY"
#: The name the Celery tasks are sent by.
CELERY_TASK_NAME = "guarddb_demo.record"
CELERY_TASKS = 8
CELERY_ROUNDS = 200  # round trips per task: enough for two children on one socket to collide
CELERY_TIME_LIMIT = 4  # the worker's task_time_limit: a task stuck on a stolen reply is killed
CELERY_READY_TIMEOUT = 30.0
CELERY_STOP_TIMEOUT = 10.0  # a warm shutdown on RabbitMQ (rpc:// results) takes 5-6 s


def celery_prefork(ctx: Context) -> None:
    """A real prefork worker whose app module opened a connection before the pool forked.

    Plain mysqlclient: both pool children talk on the main process's socket, so
    replies go to the wrong process (wrong rows, errors, tasks stuck until the
    time limit) and the main process's own session may be lost.  guarddb with
    ``on_fork="raise"``: every task fails with ForkedConnectionError, no row
    lands, the main process's session is untouched; with ``on_fork="reconnect"``
    every task is right, on a session of its own child.
    """
    from celery import Celery

    from ..broker import result_backend_for

    rec = ctx.rec
    if not ctx.broker_url:
        raise ValueError("celery_prefork needs a broker: run it through process.run()")
    if ctx.driver == "guarddb":
        # Celery rebuilds a task's exception from its module only if that module is
        # imported here already (else a look-alike class, not a GuardError).
        import guarddb.errors  # noqa: F401
    backend = result_backend_for(ctx.broker_url)
    run_id = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    table = f"guarddb_demo_celery_{run_id}"
    queue = f"guarddb_demo_{run_id}"
    tags = [f"task-{n}" for n in range(CELERY_TASKS)]
    for tag in tags:
        rec.add(tag)
    state_dir = tempfile.mkdtemp(prefix="guarddb-demo-celery-")
    watcher = connect_watcher(ctx)
    try:
        query(
            watcher,
            f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(64) NOT NULL,"
            " pid INT NOT NULL, connection_id BIGINT NOT NULL)",
        )
        config = {
            "driver": ctx.driver,
            "options": ctx.options,
            "connect_args": ctx.connect_args,
            "table": table,
            "broker": ctx.broker_url,
            "backend": backend,
            "state_dir": state_dir,
            "time_limit": CELERY_TIME_LIMIT,
        }
        worker = _start_worker(queue, state_dir, {CELERY_ENV: json.dumps(config)})
        results: dict[str, Any] = {}
        waited = 0.0
        ready = False
        try:
            ready = _wait_ready(worker, state_dir, ctx, rec)
            if ready:
                client = Celery("guarddb_demo_client", broker=ctx.broker_url, backend=backend)
                client.conf.update(broker_connection_retry_on_startup=True, result_expires=600)
                try:
                    sent = {
                        tag: client.send_task(
                            CELERY_TASK_NAME, args=(tag, CELERY_ROUNDS), queue=queue
                        )
                        for tag in tags
                    }
                    waited = max(
                        min(3 * CELERY_TIME_LIMIT, ctx.remaining() - CELERY_STOP_TIMEOUT - 2), 1.0
                    )
                    results = _collect(sent, time.monotonic() + waited)
                finally:
                    client.close()
        finally:
            killed = _stop_worker(worker, min(CELERY_STOP_TIMEOUT, max(ctx.remaining() - 1, 0.5)))
        if not ready:
            for tag in tags:
                rec.done(tag)  # never sent: the worker's failure is the outcome
            return
        rows = [
            (str(tag), int(pid), int(cid))
            for tag, pid, cid in query(watcher, f"SELECT tag, pid, connection_id FROM {table}")
        ]
        _judge_celery(
            rec,
            tags,
            results,
            rows,
            _read_json(state_dir, "parent.json"),
            _read_json(state_dir, "shutdown.json"),
            waited,
        )
        if killed:
            rec.note("the worker did not stop on SIGTERM and was killed")
    finally:
        with contextlib.suppress(Exception):
            query(watcher, f"DROP TABLE IF EXISTS {table}")
        watcher.close()
        shutil.rmtree(state_dir, ignore_errors=True)


def _start_worker(queue: str, state_dir: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``celery -A guarddb.tools.demo.celery_app worker`` (prefork, 2 children), output to a log.

    It stays in this process's group, so that whatever is left of it at the
    end of the run goes with the scenario's child; its output goes to a file,
    never to the child's pipes (which the demo reads to their end).
    """
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "guarddb.tools.demo.celery_app",
        "worker",
        "--pool=prefork",
        "--concurrency=2",
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
        "--loglevel=WARNING",
    ]
    # This very guarddb, wherever it is (a source tree, site-packages), found from any cwd.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(guarddb.__file__)))
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    with open(os.path.join(state_dir, "worker.log"), "wb") as log:
        return subprocess.Popen(
            command,
            cwd=state_dir,
            env={**os.environ, "PYTHONPATH": path, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _log_tail(state_dir: str) -> str:
    try:
        with open(os.path.join(state_dir, "worker.log"), errors="replace") as log:
            lines = [line.strip() for line in log if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:200] if lines else "(empty log)"


def _read_json(state_dir: str, name: str) -> Any:
    try:
        with open(os.path.join(state_dir, name)) as src:
            return json.load(src)
    except (FileNotFoundError, ValueError):
        return None


def _wait_ready(
    worker: subprocess.Popen[bytes], state_dir: str, ctx: Context, rec: Recorder
) -> bool:
    """Wait for the worker's ``ready.json``; record why not if it never comes."""
    deadline = time.monotonic() + min(CELERY_READY_TIMEOUT, ctx.remaining() - 4)
    while _read_json(state_dir, "ready.json") is None:
        if worker.poll() is not None or time.monotonic() > deadline:
            what = f"exited ({worker.returncode})" if worker.poll() is not None else "not ready"
            rec.apply(
                "worker", ("error", "RuntimeError", False, f"worker {what}: {_log_tail(state_dir)}")
            )
            rec.status("worker", "done")
            return False
        time.sleep(POLL)  # polling for the file the worker_ready signal writes
    return True


def _collect(sent: dict[str, Any], deadline: float) -> dict[str, Any]:
    """Each task's ``("SUCCESS", value)``, ``("FAILURE", exception)`` or ``("NO RESULT",)``."""
    from celery.exceptions import TimeoutError as ResultTimeout

    results: dict[str, Any] = {}
    for tag, result in sent.items():
        try:
            result.get(timeout=max(deadline - time.monotonic(), 0.1), propagate=False)
        except ResultTimeout:
            results[tag] = ("NO RESULT",)
            continue
        if result.state == "SUCCESS":
            results[tag] = ("SUCCESS", result.result)
        else:
            results[tag] = ("FAILURE", result.result)
    return results


def _stop_worker(worker: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM (a warm shutdown: ``worker_shutdown`` runs), SIGKILL after ``timeout``.

    Returns True if it had to be killed.
    """
    if worker.poll() is not None:
        return False
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(timeout=10)
        return True


def _task_status(exc: BaseException) -> str | None:
    """A worker status for a task the pool lost: killed at the time limit, or by a signal."""
    name = type(exc).__name__
    if name == "TimeLimitExceeded":
        return "hung"
    if name == "WorkerLostError":
        text = str(exc)
        for candidate in ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGKILL", "SIGILL", "SIGFPE"):
            if candidate in text:
                return f"signal:{candidate}"
        return "exit:worker lost"
    return None


def _judge_celery(
    rec: Recorder,
    tags: list[str],
    results: dict[str, Any],
    rows: list[tuple[str, int, int]],
    parent: dict[str, Any] | None,
    shutdown: dict[str, Any] | None,
    waited: float,
) -> None:
    """Record each task's outcome, the table's, and the worker main process's session's.

    ``waited``: the seconds the results were waited for.
    """
    landed: dict[str, int] = {}
    for tag, _pid, _cid in rows:
        landed[tag] = landed.get(tag, 0) + 1
    parent_session = parent["connection_id"] if parent else None
    in_parent_session = 0
    child_sessions: set[int] = set()
    failed_rows = 0
    for tag in tags:
        result = results.get(tag, ("NO RESULT",))
        if result[0] == "NO RESULT":
            rec.status(tag, "hung")
            rec.hang_phrase = rec.hang_phrase or f"no result in {waited:g}s"
            continue
        if result[0] == "FAILURE":
            exc = result[1]
            status = _task_status(exc) if isinstance(exc, BaseException) else None
            if status is not None:
                rec.status(tag, status)
                if status == "hung":
                    rec.hang_phrase = f"stuck until killed at the {CELERY_TIME_LIMIT}s time limit"
                continue
            if isinstance(exc, BaseException):
                rec.error(tag, exc)
            else:
                rec.apply(tag, ("error", "TaskFailure", False, repr(exc)[:120]))
            failed_rows += landed.get(tag, 0)
            rec.done(tag)
            continue
        value = result[1]
        expected = [f"{tag}:{n}" for n in range(CELERY_ROUNDS)]
        echoes = value.get("echoes", [])
        if echoes != expected:
            n = next(
                (i for i, (got, want) in enumerate(zip(echoes, expected)) if got != want),
                min(len(echoes), len(expected) - 1),
            )
            got = echoes[n] if n < len(echoes) else None
            rec.apply(tag, ("wrong", f"{tag} read {got!r:.30} for its own {expected[n]!r}"))
        elif value.get("rows") != [[tag, value["pid"], value["connection_id"]]]:
            rec.apply(tag, ("wrong", f"{tag} read its row back as {value.get('rows')!r:.60}"))
        elif landed.get(tag, 0) != 1:
            rec.apply(tag, ("wrong", f"{tag}'s row landed {landed.get(tag, 0)} times"))
        else:
            rec.apply(tag, ("correct",))
        if value.get("connection_id") == parent_session:
            in_parent_session += 1
        else:
            child_sessions.add(value.get("connection_id"))
        rec.done(tag)
    right = sum(rec.workers[tag]["correct"] for tag in tags)
    if right == len(tags):
        rec.note(f"all {len(tags)} tasks right")
    strangers = sorted(tag for tag in landed if tag not in tags)
    if strangers:
        rec.apply("table", ("wrong", f"rows nobody wrote: {strangers[:3]}"))
        rec.done("table")
    if in_parent_session:
        rec.note(
            f"{in_parent_session} of {len(tags)} tasks ran on the session of the worker's main "
            "process"
        )
    if child_sessions and not in_parent_session:
        rec.note(
            f"each pool child on a session of its own ({len(child_sessions)} for {len(tags)} tasks)"
        )
    if not rows:
        rec.note("no row landed")
    elif not failed_rows and all(landed.get(tag) == 1 for tag in tags):
        rec.note("every row landed once")
    if failed_rows:
        rec.note(f"{plural(failed_rows, 'row')} of failed tasks landed anyway")
    _judge_parent_session(rec, parent, shutdown)


def _judge_parent_session(
    rec: Recorder, parent: dict[str, Any] | None, shutdown: dict[str, Any] | None
) -> None:
    """Did the worker main process's own session survive its children? (its shutdown query)"""
    worker = "worker main process"
    if parent is None:
        return  # the worker never imported the app: recorded as its own error
    if shutdown is None or ("error" not in shutdown and "connection_id" not in shutdown):
        rec.status(worker, "hung")  # killed before, or while, it queried its session
        rec.hang_phrase = rec.hang_phrase or (
            f"no shutdown within {CELERY_STOP_TIMEOUT:g}s of SIGTERM, killed"
        )
        return
    if "error" in shutdown:
        code = shutdown.get("code")
        key = shutdown["error"] if code is None else f"{shutdown['error']}({code})"
        rec.apply(worker, ("error", key, False, shutdown.get("message", "")))
        rec.done(worker)
        return
    if shutdown["connection_id"] != parent["connection_id"] or shutdown["answer"] != 42:
        rec.apply(
            worker,
            (
                "wrong",
                f"the main process's session answered {shutdown['answer']} as connection "
                f"{shutdown['connection_id']} (it was {parent['connection_id']})",
            ),
        )
        rec.done(worker)
        return
    rec.note("the worker's main process's own session intact at shutdown")
