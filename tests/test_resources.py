"""Resources (issue 5): no memory growth over a million guarded calls, no leaked guard slots.

Memory is compared with tracemalloc between the end of a warm-up and the end
of the run, after a full collection, with a tolerance far below what a leak
of even a few bytes per call would add up to.  Guard slots are counted by the
C guard itself (``guarddb.core.guard.live_slots()``).  Nothing here is timed.
"""

from __future__ import annotations

import gc
import os
import threading
import tracemalloc
from typing import Any, Callable

import MySQLdb
import pytest

import guarddb
from guarddb import MODES
from guarddb._guard import ffi, lib
from guarddb.core.guard import live_slots

MILLION = 1_000_000
#: Traced memory a run may end with over its warm-up (interpreter caches settling).
TOLERANCE = 256 * 1024
ROWS = 10_000


def _traced_after_collect() -> int:
    gc.collect()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def assert_no_growth(warm_up: Callable[[], None], run: Callable[[], None], what: str) -> None:
    """Run ``warm_up`` then ``run`` under tracemalloc; traced memory must not grow in ``run``."""
    tracemalloc.start(3)
    try:
        warm_up()
        before = _traced_after_collect()
        snapshot = tracemalloc.take_snapshot()
        run()
        after = _traced_after_collect()
        if after - before > TOLERANCE:
            grown = tracemalloc.take_snapshot().compare_to(snapshot, "traceback")
            where = "\n".join(
                "\n".join([str(stat), *stat.traceback.format(limit=4)]) for stat in grown[:5]
            )
            pytest.fail(f"{what}: traced memory grew by {after - before:,} bytes:\n{where}")
    finally:
        tracemalloc.stop()


def test_the_memory_check_sees_a_small_leak():
    kept: list[bytes] = []

    def leak(calls: int) -> Callable[[], None]:
        return lambda: kept.extend(bytes(40) for _ in range(calls))  # ~80 bytes a call

    with pytest.raises(pytest.fail.Exception, match="grew by"):
        assert_no_growth(leak(100), leak(10_000), "a leak of 80 bytes per call")


def _with_rows(conn: Any) -> Any:
    """A cursor whose buffered result holds ROWS rows (a temporary table of this session)."""
    cursor = conn.cursor()
    cursor.execute("CREATE TEMPORARY TABLE guarddb_resource_rows (id INT NOT NULL)")
    cursor.executemany(
        "INSERT INTO guarddb_resource_rows (id) VALUES (%s)", [(i,) for i in range(ROWS)]
    )
    cursor.execute("SELECT id FROM guarddb_resource_rows")
    return cursor


def test_a_million_buffered_fetches_and_many_round_trips_keep_memory_flat(connect):
    conn = connect()
    rows = _with_rows(conn)
    trips = conn.cursor()

    def fetch_passes(passes: int) -> None:
        for _ in range(passes):
            rows.scroll(0, "absolute")
            while rows.fetchone() is not None:
                pass
            assert rows.rownumber == ROWS

    def round_trips(calls: int) -> None:
        for _ in range(calls):
            trips.execute("SELECT 1")
            assert trips.fetchone() == (1,)

    def warm_up() -> None:
        fetch_passes(2)
        round_trips(500)

    def run() -> None:
        fetch_passes(MILLION // ROWS)  # a million guarded fetchone() calls
        round_trips(50_000)  # and 100,000 more guarded calls, each reaching the server

    assert_no_growth(warm_up, run, "exclusive mode: 1,000,000 fetchone() + 50,000 round trips")


@pytest.mark.parametrize("mode", [m for m in MODES if m != "exclusive"])
def test_round_trips_and_fetches_keep_memory_flat_in_every_mode(connect, mode):
    conn = connect(guard=mode)
    rows = _with_rows(conn)
    trips = conn.cursor()

    def run_for(passes: int, calls: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(passes):
                rows.scroll(0, "absolute")
                for _row in rows:
                    pass
            for _ in range(calls):
                trips.execute("SELECT 1")
                trips.fetchall()

        return run

    assert_no_growth(run_for(1, 300), run_for(10, 3_000), f"{mode} mode")


def test_unbuffered_results_keep_memory_flat(connect):
    conn = connect()

    def run_for(reads: int, dropped: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(reads):  # read out: the connection is let go at the end
                cursor = conn.cursor(guarddb.cursors.SSCursor)
                cursor.execute("SELECT 1 UNION ALL SELECT 2")
                assert cursor.fetchall() == ((1,), (2,))
                cursor.close()
            for _ in range(dropped):  # dropped unread: let go by the weak reference's callback
                cursor = conn.cursor(guarddb.cursors.SSCursor)
                cursor.execute("SELECT 1 UNION ALL SELECT 2")
                del cursor
                gc.collect()

        return run

    assert_no_growth(run_for(200, 20), run_for(3_000, 200), "SSCursor")


def test_a_cursor_shared_by_short_lived_threads_in_mutex_mode_keeps_memory_flat(connect):
    """Each thread's result of a shared cursor is kept for it; a thread that ended needs none."""
    conn = connect(guard="mutex")
    cursor = conn.cursor()

    def one_thread(number: int) -> None:
        executed, done = threading.Event(), threading.Event()

        def work() -> None:
            cursor.execute("SELECT %s", (number,))
            executed.set()
            done.wait(30)

        thread = threading.Thread(target=work)
        thread.start()
        executed.wait(30)
        # While that thread lives, this one's statement puts its result aside for it ...
        cursor.execute("SELECT %s", (-number,))
        assert cursor.fetchall() == ((-number,),)
        done.set()  # ... and then it ends without ever reading it.
        thread.join(30)

    def run_for(threads: int) -> Callable[[], None]:
        def run() -> None:
            for number in range(threads):
                one_thread(number)

        return run

    assert_no_growth(run_for(50), run_for(2_000), "mutex mode, one cursor, 2,000 threads")


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_million_slot_cycles_leak_no_slot():
    baseline = live_slots()
    rss_before = _rss()
    new, free, null = lib.guard_slot_new, lib.guard_slot_free, ffi.NULL
    for _ in range(MILLION):
        slot = new(1)
        if slot == null:
            pytest.fail(f"guard_slot_new() gave NULL with {live_slots()} slots live")
        free(slot)
    assert live_slots() == baseline
    # Slots are reused: a million of them kept would cost this much memory.
    leaked_size = MILLION * ffi.sizeof("guard_slot")
    assert _rss() - rss_before < leaked_size // 8

    held = [new(1) for _ in range(5_000)]  # several chunks' worth at once
    assert live_slots() == baseline + len(held)
    for slot in held:
        free(slot)
    assert live_slots() == baseline


def test_thousands_of_connections_leak_no_slot(connect_args):
    gc.collect()
    baseline = live_slots()
    for mode in MODES:  # opened and closed
        for _ in range(500):
            conn = guarddb.connect(**connect_args, guard=mode)
            conn.cursor().execute("SELECT 1")
            conn.close()
    for _ in range(500):  # dropped without close()
        conn = guarddb.connect(**connect_args)
        conn.cursor().execute("SELECT 1")
        del conn
    for _ in range(200):  # dropped with an unbuffered result unread
        conn = guarddb.connect(**connect_args)
        cursor = conn.cursor(guarddb.cursors.SSCursor)
        cursor.execute("SELECT 1 UNION ALL SELECT 2")
        del conn, cursor
    for _ in range(200):  # refused by the server: no connection, no slot
        with pytest.raises(MySQLdb.OperationalError):
            guarddb.connect(**{**connect_args, "database": "guarddb_no_such_database"})
    gc.collect()
    assert live_slots() == baseline
