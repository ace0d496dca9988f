"""The scenario of tests/test_prometheus.py, in a fresh interpreter of its own.

``python tests/prometheus_scenario.py`` opens guarded connections on both drivers in
every state, makes violations, has guarddb close connections and calls wait, scraping
guarddb's collector with ``prometheus_client.generate_latest()`` before, during and after
(and once in a forked child); it prints one JSON line: the scrapes, and what it saw.  A
process of its own, so that no other test's connection or count is in what it scrapes.
The connect arguments come in ``GUARDDB_TEST_CONNECT_ARGS`` (JSON).

Nothing waits on the clock: threads meet at events, and only what nothing can signal is
polled with a deadline (another thread inside a call on the server, a waiter in the C
guard, guarddb's lifecycle thread closing a connection).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import MySQLdb
from helpers import Blocked, in_thread, wait_until  # tests/ is this script's sys.path[0]
from prometheus_client import CollectorRegistry, generate_latest

import guarddb
import guarddb.pymysql
from guarddb.contrib.prometheus import register

#: Seconds any one wait may take (the test's own limit is longer).
DEADLINE = 20.0


def select(conn: Any, sql: str = "SELECT 1") -> Any:
    cursor = conn.cursor()
    cursor.execute(sql)
    rows = cursor.fetchall()
    cursor.close()
    return rows


def refused(call: Any) -> str:
    """Run ``call``; the name of the GuardError it raised ("" if none)."""
    try:
        call()
    except guarddb.GuardError as exc:
        return type(exc).__name__
    return ""


def main() -> None:
    args = json.loads(os.environ["GUARDDB_TEST_CONNECT_ARGS"])
    started = time.monotonic()
    registry = CollectorRegistry()
    register(registry)
    out: dict[str, Any] = {"before": generate_latest(registry).decode()}

    plain = MySQLdb.connect(**args, autocommit=True)  # not guarded: not counted
    kept = []  # every guarded connection, so that none is collected before the end

    # Idle, one per driver.
    kept += [guarddb.connect(**args, autocommit=True)]
    kept += [guarddb.pymysql.connect(**args, autocommit=True)]
    # In a transaction: autocommit off (each driver's default), one SELECT opens one.
    for module in (guarddb, guarddb.pymysql):
        conn = module.connect(**args)
        select(conn)
        kept.append(conn)

    # A violation: strict mode, another thread uses the owner's connection.
    strict = guarddb.pymysql.connect(**args, guard="strict", autocommit=True)
    kept.append(strict)
    out["strict"] = in_thread(lambda: refused(lambda: select(strict)), name="Intruder")

    # Orphans: two threads each leave a connection open and end; one of them asked
    # guarddb to close it.  Both are reported (a violation each), then that one is closed.
    reported = threading.Event()
    orphans: list[guarddb.Violation] = []

    def on_orphan(violation: guarddb.Violation) -> None:
        if violation.kind == "orphan":
            orphans.append(violation)
            if len(orphans) == 2:
                reported.set()

    guarddb.on_violation(on_orphan)
    in_thread(lambda: kept.append(guarddb.connect(**args)), name="LeakyWorker")
    closed_orphan = in_thread(
        lambda: guarddb.pymysql.connect(**args, close_orphans=True), name="LeakyCloser"
    )
    assert reported.wait(DEADLINE), "the orphans were not reported"
    wait_until(lambda: not closed_orphan.open, timeout=DEADLINE)  # the lifecycle thread
    guarddb.remove_violation_hook(on_orphan)

    # Closed for being idle too long.
    reaped = guarddb.connect(**args, max_idle=0.2, autocommit=True)
    wait_until(lambda: not reaped.open, timeout=DEADLINE)  # the lifecycle thread

    # Mutex waits, one per driver: a thread inside SLEEP() on the server, another waiting
    # in the guard until the first is let go (KILL QUERY: the first makes no more calls).
    waited = []
    for module in (guarddb, guarddb.pymysql):
        conn = module.connect(**args, guard="mutex", autocommit=True)
        kept.append(conn)
        inside = Blocked(conn, plain, locking=False)
        waiter = threading.Thread(target=lambda c=conn: waited.append(select(c)), name="Waiter")
        waiter.start()
        wait_until(lambda c=conn: c._guard.slot.waiters == 1, timeout=DEADLINE)
        inside.release()
        waiter.join(DEADLINE)
        assert not waiter.is_alive()
    assert waited == [((1,),), ((1,),)]

    # In a call, one per driver (a thread inside SLEEP(), and one waiting in GET_LOCK()),
    # while the scrape runs; the owner's own call meanwhile is refused.
    blocked = []
    for module, locking in ((guarddb, False), (guarddb.pymysql, True)):
        conn = module.connect(**args, autocommit=True)
        kept.append(conn)
        blocked.append(Blocked(conn, plain, name="guarddb-prometheus-busy", locking=locking))
    out["concurrent"] = refused(lambda: select(kept[-2]))
    out["during"] = generate_latest(registry).decode()

    # A forked child: every connection is its parent's; using one is a violation there.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            seen = {"refused": refused(lambda: select(kept[0]))}
            seen["scrape"] = generate_latest(registry).decode()
            os.write(write_end, json.dumps(seen).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        out["child"] = json.loads(pipe.read())
    os.waitpid(pid, 0)

    for each in blocked:
        each.release()
    for conn in kept:
        conn.close()
    closed_orphan.close()
    reaped.close()
    out["after"] = generate_latest(registry).decode()
    out["elapsed"] = time.monotonic() - started
    plain.close()
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
