"""The bodies of the demo's framework and lifecycle scenarios (see :mod:`guarddb._scenarios`).

Each runs in the scenario's child process, with a :class:`guarddb._scenarios.Context`:

- :func:`celery_prefork`: a real Celery worker (``--pool=prefork --concurrency=2``,
  the app :mod:`guarddb._demo_celery`) on a real broker, whose module opens a
  connection at import; 8 tasks each insert a row and make many round trips;
- :func:`thread_pool_leak`: a thread pool whose threads each open a connection and
  end without closing it; the server's sessions are watched;
- :func:`idle_pool`: a SQLAlchemy QueuePool used by a burst of threads, then left
  idle; the server's sessions are watched, then one more checkout is made.

The server is watched through a plain mysqlclient connection of the child's own
(never the connections under test).  The application code of the lifecycle
scenarios is compiled under the file name :data:`APP_FILE`: guarddb names the
first frame outside its own package as the place a connection was opened, and
this package is guarddb's, so the demo's "application" gets a file of its own
for the sites guarddb reports to point at, as they would in a real program.
"""

from __future__ import annotations

import contextlib
import json
import linecache
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ._scenarios import Context, _Recorder

#: The file name the lifecycle scenarios' application code is compiled under.
APP_FILE = "demo_app.py"

#: The environment variable that gives the Celery worker its configuration (JSON).
CELERY_ENV = "GUARDDB_DEMO_CELERY"
#: The name the Celery tasks are sent by.
CELERY_TASK_NAME = "guarddb_demo.record"
CELERY_TASKS = 8
CELERY_ROUNDS = 200  # round trips per task: enough for two children on one socket to collide
CELERY_TIME_LIMIT = 4  # the worker's task_time_limit: a task stuck on a stolen reply is killed
CELERY_READY_TIMEOUT = 30.0
CELERY_STOP_TIMEOUT = 10.0  # a warm shutdown on RabbitMQ (rpc:// results) takes 5-6 s

POOL_THREADS = 8
POOL_REQUESTS = 32
LEAK_WINDOW = 3.0  # seconds the server is watched after the pool's threads have ended

BURST = 15
POOL_SIZE = 10
IDLE_WINDOW = 5.0  # seconds the server is watched after the burst (max_idle is 2)

#: Sessions closed by a client may linger a moment on the server: the watch polls this often.
_POLL = 0.05


# -- the watcher ---------------------------------------------------------------------------


def _watcher(ctx: Context) -> Any:
    """A plain mysqlclient connection that looks at the server (not under test)."""
    import MySQLdb

    return MySQLdb.connect(**ctx.connect_args, autocommit=True)


def _sql(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall() or ())
    finally:
        cursor.close()


def _sessions(watcher: Any) -> set[int]:
    """The ids of the sessions open on the server now (the watcher's own included)."""
    return {int(row[0]) for row in _sql(watcher, "SELECT ID FROM information_schema.PROCESSLIST")}


def _watch(watcher: Any, ids: set[int], until: float) -> tuple[set[int], float | None]:
    """Poll until none of ``ids`` is open on the server, or ``until`` passes.

    Returns the ids still open and when the last one closed (None if some stayed).
    """
    while True:
        still = ids & _sessions(watcher)
        if not still:
            return still, time.monotonic()
        if time.monotonic() >= until:
            return still, None
        time.sleep(_POLL)  # polling the server: it tells no one when a session ends


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# -- the application code of the lifecycle scenarios -----------------------------------------


def _app(source: str) -> dict[str, Any]:
    """Run ``source`` as the module :data:`APP_FILE`; returns its namespace."""
    # Known to linecache, so that tracebacks through it show its lines.
    linecache.cache[APP_FILE] = (len(source), None, source.splitlines(True), APP_FILE)
    namespace: dict[str, Any] = {"__name__": "demo_app", "__file__": APP_FILE}
    exec(compile(source, APP_FILE, "exec"), namespace)
    return namespace


_THREAD_POOL_APP = '''\
import threading

local = threading.local()


def handle(request, db, connect_args, opened):
    """A request handler run by a thread pool: one connection per thread, never closed."""
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = db.connect(**connect_args)
        opened.append(conn)  # kept alive, as a framework's reference cycles keep it
    cursor = conn.cursor()
    cursor.execute("SELECT %s, CONNECTION_ID()", (request,))
    return cursor.fetchall()
'''

_IDLE_POOL_APP = '''\
import sqlalchemy
from sqlalchemy import text


def make_engine(db, connect_args, pool_size):
    """The application's engine: a QueuePool that pings a connection before handing it out."""
    engine = sqlalchemy.create_engine(
        "mysql+mysqldb://",
        module=db,
        creator=lambda: db.connect(**connect_args),
        pool_size=pool_size,
        max_overflow=10,
        pool_pre_ping=True,
    )
    if db.__name__ == "guarddb":  # guarddb's pool events: a checked-in connection is the pool's
        from guarddb.contrib.sqlalchemy import guard_engine

        engine = guard_engine(engine)
    return engine


def handle(engine, request, all_in):
    """One request: a connection from the pool, held until the burst is at its height."""
    with engine.connect() as conn:
        all_in.wait(10)
        return conn.execute(text("SELECT :n, CONNECTION_ID()"), {"n": request}).fetchall()
'''


def _orphan_reports(ctx: Context) -> tuple[list[Any], Callable[[], None]]:
    """guarddb's orphan reports in this run (a hook), and how to remove the hook."""
    reports: list[Any] = []
    if ctx.driver != "guarddb":
        return reports, lambda: None

    def hook(violation: Any) -> None:
        if violation.kind == "orphan":
            reports.append(violation)

    ctx.db.on_violation(hook)
    return reports, lambda: ctx.db.remove_violation_hook(hook)


# -- thread_pool_leak ----------------------------------------------------------------------


def thread_pool_leak(ctx: Context) -> None:
    """A thread pool's threads each open a connection and end without closing it.

    The connections stay referenced (as a framework's reference cycles keep
    them until a full garbage collection), so nothing closes them: plain
    mysqlclient leaves their sessions on the server, and nobody knows.  guarddb
    reports each one as an orphan with the line that opened it, and with
    ``close_orphans=True`` closes it.
    """
    rec = ctx.rec
    app = _app(_THREAD_POOL_APP)
    watcher = _watcher(ctx)
    reports, unhook = _orphan_reports(ctx)
    opened: list[Any] = []
    sessions: dict[str, int] = {}
    first = threading.Barrier(POOL_THREADS)  # one request in every thread: all 8 connect
    connect_args = {**ctx.connect_args, **ctx.options}

    workers: set[str] = set()

    def request(number: int) -> None:
        worker = threading.current_thread().name
        rec.add(worker)
        workers.add(worker)
        if number < POOL_THREADS:
            with contextlib.suppress(threading.BrokenBarrierError):
                first.wait(10)
        try:
            rows = app["handle"](number, ctx.db, connect_args, opened)
        except Exception as exc:
            rec.error(worker, exc)
            return
        rec.check(worker, tuple(row[0] for row in rows), (number,))
        if rows:
            sessions[worker] = int(rows[0][1])

    try:
        before = len(_sessions(watcher))
        with ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="pool") as pool:
            for number in range(POOL_REQUESTS):
                pool.submit(request, number)
        # The pool has shut down: its threads have ended, their connections are still open.
        ended = time.monotonic()
        for worker in workers:
            rec.done(worker)
        leaked = set(sessions.values())
        until = min(ended + LEAK_WINDOW, ctx.deadline - 1.0)
        still, closed_at = _watch(watcher, leaked, until)
        if ctx.driver == "guarddb":
            # Orphans are judged a moment after their thread ends: wait for the reports too.
            while len(reports) < len(leaked) and time.monotonic() < until:
                time.sleep(_POLL)  # polling a list the lifecycle thread appends to
        after = len(_sessions(watcher))
        rec.sessions_left_open(len(still), reported=min(len(reports), len(still)))
        sessions_then = f"server sessions: {before} before, {after} after"
        if reports:
            sites = ", ".join(sorted({_short(r.connection_site) for r in reports}))
            rec.note(f"{_plural(len(reports), 'orphan')} reported, each with its site ({sites})")
        if closed_at is not None:
            rec.note(
                f"the {_plural(len(leaked), 'session')} closed {closed_at - ended:.1f}s after "
                f"the pool's threads ended; {sessions_then}"
            )
        else:
            some = "the" if len(still) == len(leaked) else f"{len(still)} of the"
            rec.note(
                f"{some} {_plural(len(leaked), 'session')} of the ended pool "
                f"threads still open {time.monotonic() - ended:.0f}s later"
                + ("" if reports else ", and nobody was told")
                + f"; {sessions_then}"
            )
    finally:
        unhook()
        for conn in opened:
            with contextlib.suppress(Exception):
                conn.close()
        watcher.close()


def _short(site: str) -> str:
    """``demo_app.py:10`` for a site in the demo's application, else the site as it is."""
    return os.path.basename(site) if site.startswith(APP_FILE) else site


# -- idle_pool -----------------------------------------------------------------------------


def idle_pool(ctx: Context) -> None:
    """A SQLAlchemy QueuePool used by a burst of threads, then left idle; then a checkout.

    The burst needs 15 connections: the pool keeps 10 (pool_size), and those sit
    idle on the server for as long as nobody uses the pool.  guarddb with
    ``max_idle`` closes them; the next checkout's pre-ping sees a disconnect and
    the pool opens a fresh connection, with no error reaching the application.
    """
    rec = ctx.rec
    app = _app(_IDLE_POOL_APP)
    watcher = _watcher(ctx)
    reports, unhook = _orphan_reports(ctx)
    engine = app["make_engine"](ctx.db, {**ctx.connect_args, **ctx.options}, POOL_SIZE)
    all_in = threading.Barrier(BURST)
    sessions: set[int] = set()

    def request(number: int) -> None:
        worker = f"burst thread {number}"
        try:
            rows = app["handle"](engine, number, all_in)
        except Exception as exc:
            rec.error(worker, exc)
        else:
            rec.check(worker, tuple(row[0] for row in rows), (number,))
            sessions.update(int(row[1]) for row in rows)
        rec.done(worker)

    try:
        threads = [
            threading.Thread(target=request, args=(n,), name=f"burst-{n}", daemon=True)
            for n in range(BURST)
        ]
        for thread in threads:
            rec.add(f"burst thread {threads.index(thread)}")
            thread.start()
        for thread in threads:
            thread.join(max(ctx.remaining() - IDLE_WINDOW - 2.0, 1.0))
        burst_end = time.monotonic()
        # The pool closed the overflow connections at check-in; wait for the server to see it.
        deadline = burst_end + 2.0
        pooled = sessions & _sessions(watcher)
        while len(pooled) > POOL_SIZE and time.monotonic() < deadline:
            time.sleep(_POLL)  # polling the server for the overflow sessions to go
            pooled = sessions & _sessions(watcher)
        until = min(burst_end + IDLE_WINDOW, ctx.deadline - 2.0)
        still, closed_at = _watch(watcher, pooled, until)
        rec.sessions_left_open(len(still))
        if closed_at is not None:
            rec.note(
                f"the pool's {_plural(len(pooled), 'idle session')} closed "
                f"{closed_at - burst_end:.1f}s after the burst"
            )
        else:
            rec.note(
                f"the pool's {_plural(len(still), 'idle session')} still open on the server "
                f"{time.monotonic() - burst_end:.0f}s after the burst"
            )
        worker = "later checkout"
        try:
            rows = app["handle"](engine, 99, threading.Barrier(1))
        except Exception as exc:
            rec.error(worker, exc)
        else:
            rec.check(worker, tuple(row[0] for row in rows), (99,))
            session = int(rows[0][1]) if rows else None
            if session in pooled:
                rec.note("the next checkout reused one of them")
            else:
                rec.note(
                    "the next checkout (pool_pre_ping) got a fresh session, with no error "
                    "reaching the application"
                )
        rec.done(worker)
        if reports:
            rec.note(
                f"guarddb also reported {_plural(len(reports), 'pooled connection')} as "
                "orphans (the threads that opened them ended)"
            )
    finally:
        unhook()
        with contextlib.suppress(Exception):
            engine.dispose()
        watcher.close()


# -- celery_prefork ------------------------------------------------------------------------


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

    from ._broker import result_backend_for

    rec = ctx.rec
    if not ctx.broker_url:
        raise ValueError("celery_prefork needs a broker: run it through _scenarios.run()")
    backend = result_backend_for(ctx.broker_url)
    run_id = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    table = f"guarddb_demo_celery_{run_id}"
    queue = f"guarddb_demo_{run_id}"
    tags = [f"task-{n}" for n in range(CELERY_TASKS)]
    for tag in tags:
        rec.add(tag)
    state_dir = tempfile.mkdtemp(prefix="guarddb-demo-celery-")
    watcher = _watcher(ctx)
    try:
        _sql(
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
            for tag, pid, cid in _sql(watcher, f"SELECT tag, pid, connection_id FROM {table}")
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
            _sql(watcher, f"DROP TABLE IF EXISTS {table}")
        watcher.close()
        shutil.rmtree(state_dir, ignore_errors=True)


def _start_worker(queue: str, state_dir: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``celery -A guarddb._demo_celery worker`` (prefork, 2 children), its output to a log.

    It stays in this process's group, so that whatever is left of it at the
    end of the run goes with the scenario's child; its output goes to a file,
    never to the child's pipes (which the demo reads to their end).
    """
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "guarddb._demo_celery",
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
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    worker: subprocess.Popen[bytes], state_dir: str, ctx: Context, rec: _Recorder
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
        time.sleep(_POLL)  # polling for the file the worker_ready signal writes
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
    rec: _Recorder,
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
        rec.note(f"{_plural(failed_rows, 'row')} of failed tasks landed anyway")
    _judge_parent_session(rec, parent, shutdown)


def _judge_parent_session(
    rec: _Recorder, parent: dict[str, Any] | None, shutdown: dict[str, Any] | None
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
