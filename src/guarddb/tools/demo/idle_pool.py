"""The scenario ``idle_pool``: a SQLAlchemy pool's connections left idle on the server.

A SQLAlchemy QueuePool used by a burst of threads, then left idle; the server's
sessions are watched (:mod:`guarddb.tools.demo.observe`), then one more
checkout is made.
"""

from __future__ import annotations

import contextlib
import threading
import time

from .application import load_app
from .framework import Context
from .observe import POLL, connect_watcher, open_sessions, orphan_reports, plural, wait_closed

BURST = 15
POOL_SIZE = 10
IDLE_WINDOW = 5.0  # seconds the server is watched after the burst (max_idle is 2)


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


def idle_pool(ctx: Context) -> None:
    """A SQLAlchemy QueuePool used by a burst of threads, then left idle; then a checkout.

    The burst needs 15 connections: the pool keeps 10 (pool_size), and those sit
    idle on the server for as long as nobody uses the pool.  guarddb with
    ``max_idle`` closes them; the next checkout's pre-ping sees a disconnect and
    the pool opens a fresh connection, with no error reaching the application.
    """
    rec = ctx.rec
    app = load_app(_IDLE_POOL_APP)
    watcher = connect_watcher(ctx)
    reports, unhook = orphan_reports(ctx)
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
        pooled = sessions & open_sessions(watcher)
        while len(pooled) > POOL_SIZE and time.monotonic() < deadline:
            time.sleep(POLL)  # polling the server for the overflow sessions to go
            pooled = sessions & open_sessions(watcher)
        until = min(burst_end + IDLE_WINDOW, ctx.deadline - 2.0)
        still, closed_at = wait_closed(watcher, pooled, until)
        rec.sessions_left_open(len(still))
        if closed_at is not None:
            rec.note(
                f"the pool's {plural(len(pooled), 'idle session')} closed "
                f"{closed_at - burst_end:.1f}s after the burst"
            )
        else:
            rec.note(
                f"the pool's {plural(len(still), 'idle session')} still open on the server "
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
                f"guarddb also reported {plural(len(reports), 'pooled connection')} as "
                "orphans (the threads that opened them ended)"
            )
    finally:
        unhook()
        with contextlib.suppress(Exception):
            engine.dispose()
        watcher.close()
