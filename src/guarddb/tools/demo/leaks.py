"""The scenario ``thread_pool_leak``: pool threads that end without closing their connections.

A thread pool whose threads each open a connection and end without closing it;
the server's sessions are watched (:mod:`guarddb.tools.demo.observe`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .application import APP_FILE, load_app
from .framework import Context
from .observe import POLL, connect_watcher, open_sessions, orphan_reports, plural, wait_closed

POOL_THREADS = 8
POOL_REQUESTS = 32
LEAK_WINDOW = 3.0  # seconds the server is watched after the pool's threads have ended


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


def thread_pool_leak(ctx: Context) -> None:
    """A thread pool's threads each open a connection and end without closing it.

    The connections stay referenced (as a framework's reference cycles keep
    them until a full garbage collection), so nothing closes them: plain
    mysqlclient leaves their sessions on the server, and nobody knows.  guarddb
    reports each one as an orphan with the line that opened it, and with
    ``close_orphans=True`` closes it.
    """
    rec = ctx.rec
    app = load_app(_THREAD_POOL_APP)
    watcher = connect_watcher(ctx)
    reports, unhook = orphan_reports(ctx)
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
        before = len(open_sessions(watcher))
        with ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="pool") as pool:
            for number in range(POOL_REQUESTS):
                pool.submit(request, number)
        # The pool has shut down: its threads have ended, their connections are still open.
        ended = time.monotonic()
        for worker in workers:
            rec.done(worker)
        leaked = set(sessions.values())
        until = min(ended + LEAK_WINDOW, ctx.deadline - 1.0)
        still, closed_at = wait_closed(watcher, leaked, until)
        if ctx.driver == "guarddb":
            # Orphans are judged a moment after their thread ends: wait for the reports too.
            while len(reports) < len(leaked) and time.monotonic() < until:
                time.sleep(POLL)  # polling a list the lifecycle thread appends to
        after = len(open_sessions(watcher))
        rec.sessions_left_open(len(still), reported=min(len(reports), len(still)))
        sessions_then = f"server sessions: {before} before, {after} after"
        if reports:
            sites = ", ".join(sorted({_short(r.connection_site) for r in reports}))
            rec.note(f"{plural(len(reports), 'orphan')} reported, each with its site ({sites})")
        if closed_at is not None:
            rec.note(
                f"the {plural(len(leaked), 'session')} closed {closed_at - ended:.1f}s after "
                f"the pool's threads ended; {sessions_then}"
            )
        else:
            some = "the" if len(still) == len(leaked) else f"{len(still)} of the"
            rec.note(
                f"{some} {plural(len(leaked), 'session')} of the ended pool "
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
