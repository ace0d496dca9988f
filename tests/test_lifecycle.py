"""Lifecycle: live_connections(), orphans left by ended threads, the idle reaper."""

from __future__ import annotations

import contextlib
import gc
import logging
import random
import threading
import time

import MySQLdb
import pytest

import guarddb
from guarddb import IdleClosedError, live_connections

from .helpers import Blocked, in_forked_child, in_thread, run_python, run_threads, wait_until


def one(conn, sql, args=None):
    cursor = conn.cursor()
    cursor.execute(sql, args)
    row = cursor.fetchone()
    cursor.close()
    return row


@pytest.fixture
def watcher(plain_connect):
    """A plain connection that looks at the server's sessions."""
    conn = plain_connect(autocommit=True)

    def sessions() -> set[int]:
        cursor = conn.cursor()
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST")
        return {row[0] for row in cursor.fetchall()}

    return sessions


def info_of(conn, session: int | None = None) -> guarddb.ConnectionInfo:
    """``conn``'s entry (give its ``session`` id while another thread is inside a call)."""
    session = conn.thread_id() if session is None else session
    (info,) = [i for i in live_connections() if i.server_thread_id == session]
    return info


@pytest.fixture
def orphans():
    """Orphan reports made while the test runs."""
    seen: list[guarddb.Violation] = []

    def hook(violation: guarddb.Violation) -> None:
        if violation.kind == "orphan":
            seen.append(violation)

    guarddb.on_violation(hook)
    yield seen
    guarddb.remove_violation_hook(hook)


# -- the registry ------------------------------------------------------------------------


def test_live_connections_describes_each_open_connection(connect, connect_args):
    before = time.monotonic()
    conn = connect(guard="strict")  # opened on the next line's caller: the connect fixture
    info = info_of(conn)
    assert info.server_thread_id == one(conn, "SELECT CONNECTION_ID()")[0]
    assert info.host == connect_args["unix_socket"] and info.db == "test"
    assert info.mode == "strict" and info.pid == conn._guard.pid
    assert info.owner_name == threading.current_thread().name
    assert info.owner_ident == threading.get_ident() and info.owner_alive and not info.orphan
    assert info.site == conn._guard.site and "conftest.py" in info.site
    assert 0 <= info.age <= time.monotonic() - before
    assert not info.in_transaction and not info.pending_result

    one(conn, "SELECT 1")  # autocommit off (MySQLdb's default): a transaction is open
    assert info_of(conn).in_transaction
    conn.commit()
    assert not info_of(conn).in_transaction
    ss = conn.cursor(guarddb.cursors.SSCursor)
    ss.execute("SELECT 1 UNION SELECT 2")
    assert info_of(conn).pending_result
    ss.fetchall()
    assert not info_of(conn).pending_result
    conn.select_db("mysql")
    assert info_of(conn).db == "mysql"


def test_idle_counts_from_the_end_of_the_last_call(connect):
    conn = connect(autocommit=True)
    one(conn, "SELECT 1")
    start = time.monotonic()
    wait_until(lambda: info_of(conn).idle >= 0.3)  # the coarse clock ticks every few ms
    assert info_of(conn).idle <= time.monotonic() - start + 0.05
    one(conn, "SELECT 1")
    assert info_of(conn).idle < 0.3


def test_closed_and_collected_connections_leave_the_registry(connect_args):
    conn = guarddb.connect(**connect_args)
    thread_id = conn.thread_id()
    ids = lambda: {i.server_thread_id for i in live_connections()}  # noqa: E731
    assert thread_id in ids()
    conn.close()
    assert thread_id not in ids()
    dropped = guarddb.connect(**connect_args)
    thread_id = dropped.thread_id()
    del dropped
    gc.collect()
    assert thread_id not in ids()


def test_the_registry_keeps_nothing_alive(connect_args):
    import weakref

    conn = guarddb.connect(**connect_args)
    ref = weakref.ref(conn)
    live_connections()
    del conn
    gc.collect()
    assert ref() is None


def test_taking_a_snapshot_never_disturbs_a_call(connect):
    # mysqlclient 2.3 refuses a call that overlaps another on its own lock: a
    # snapshot that called into the connection would make these calls fail.
    conn = connect(autocommit=True)
    stop = threading.Event()
    snapshots = []

    def snapshot_loop() -> None:
        while not stop.is_set():
            snapshots.append(len(live_connections()))

    thread = threading.Thread(target=snapshot_loop)
    thread.start()
    try:
        for n in range(2000):
            assert one(conn, "SELECT %s", (n,)) == (n,)
    finally:
        stop.set()
        thread.join()
    assert len(snapshots) > 10

    session = conn.thread_id()
    blocked = Blocked(conn, connect())  # a call in progress: the snapshot does not wait
    try:
        assert info_of(conn, session).idle == 0.0
    finally:
        blocked.release()


# -- orphans -----------------------------------------------------------------------------


def leak_from_thread(connect_args, name="Leaker", **options):
    """Open a connection in a thread that ends without closing it; return the connection."""
    box = {}

    def leak() -> None:
        box["conn"] = guarddb.connect(**connect_args, **options)  # the opening site
        box["id"] = box["conn"].thread_id()

    in_thread(leak, name=name)
    return box["conn"], box["id"], f"test_lifecycle.py:{leak.__code__.co_firstlineno + 1}"


def test_an_orphan_is_reported_once_with_its_site_and_dead_thread(
    connect_args, orphans, caplog, watcher
):
    with caplog.at_level(logging.WARNING, logger="guarddb"):
        conn, session, site = leak_from_thread(connect_args, name="LeakyWorker")
        wait_until(lambda: orphans)
        time.sleep(0.3)  # give a second report every chance to happen
    (report,) = orphans
    assert report.connection_site.endswith(site)
    assert "'LeakyWorker'" in report.message and "has ended" in report.message
    assert "close_orphans=True" in report.message
    assert any(site in r.getMessage() and "orphan" in r.getMessage() for r in caplog.records)
    info = info_of(conn)
    assert info.orphan and info.owner_name == "LeakyWorker"
    assert session in watcher()  # reported, not closed: that needs close_orphans
    conn.close()


def test_close_orphans_closes_the_session_soon_after_the_thread_ends(connect_args, watcher):
    conn, session, _site = leak_from_thread(connect_args, close_orphans=True)
    wait_until(lambda: session not in watcher(), timeout=5)
    with pytest.raises(IdleClosedError, match="owner thread ended"):
        one(conn, "SELECT 1")
    conn.close()  # closing it again is quiet


def test_close_orphans_rolls_back_an_open_transaction(connect_args, connect, watcher):
    setup = connect(autocommit=True)
    one(setup, "CREATE TABLE IF NOT EXISTS orphan_rows (n INT) ENGINE=InnoDB")
    one(setup, "DELETE FROM orphan_rows")
    box = {}

    def work() -> None:
        conn = box["conn"] = guarddb.connect(**connect_args, close_orphans=True)
        box["session"] = conn.thread_id()
        one(conn, "INSERT INTO orphan_rows VALUES (1)")  # autocommit off: left open

    in_thread(work)
    wait_until(lambda: box["session"] not in watcher(), timeout=5)
    assert one(setup, "SELECT COUNT(*) FROM orphan_rows") == (0,)


def test_an_adopted_connection_belongs_to_its_adopter(connect_args, orphans):
    box = {}
    in_thread(lambda: box.setdefault("conn", guarddb.connect(**connect_args, close_orphans=True)))
    conn = box["conn"]
    conn.adopt()  # before its opener's end is judged
    info = info_of(conn)
    assert info.owner_ident == threading.get_ident() and info.owner_alive
    time.sleep(0.5)  # the lifecycle thread's judging grace is 0.2 s
    assert conn.open and one(conn, "SELECT 1") == (1,)
    conn.close()


def test_a_connection_handed_to_a_live_thread_is_not_closed_under_it(connect_args, watcher):
    # exclusive mode allows a hand-over without adopt(): the last user keeps it.
    box = {}
    in_thread(lambda: box.setdefault("conn", guarddb.connect(**connect_args, close_orphans=True)))
    conn = box["conn"]
    one(conn, "SELECT 1")
    conn.commit()
    time.sleep(0.5)
    assert conn.open and conn.thread_id() in watcher()
    conn.close()


@contextlib.contextmanager
def successor_of_an_ended_owner(connect_args, body=None, **options):
    """A connection leaked by a thread that ended, and a new thread given the ended one's id.

    A thread's id is given again to threads started after it ended (glibc reuses its
    stack): threads are started until one gets it (skipped where none does in 10 tries).
    Yields ``(conn, session, release, successor)``; the successor waits for ``release``,
    then runs ``body(conn)`` if given.
    """
    release = threading.Event()
    successors = []

    def run(conn, owner: int) -> None:
        release.wait(30)
        if body is not None and threading.get_ident() == owner:  # not a failed try's
            body(conn)

    try:
        for _attempt in range(10):
            conn, session, _site = leak_from_thread(connect_args, **options)
            owner = info_of(conn).owner_ident
            successor = threading.Thread(target=run, args=(conn, owner), name="Successor")
            successor.start()  # before the ended owner is judged (0.2 s after its end)
            successors.append(successor)
            if successor.ident == owner:
                break
            conn.close()
        else:
            pytest.skip("no new thread got an ended thread's id here")
        yield conn, session, release, successor
    finally:
        release.set()
        for successor in successors:
            successor.join()


def test_close_orphans_closes_it_while_a_new_thread_has_the_ended_owner_s_id(connect_args, watcher):
    """A live thread with the ended owner's id has not taken its connection over.

    Thread pools that start new threads in rounds (a ThreadPoolExecutor per batch) hit it:
    the connections of one round's ended threads were never closed once the next round ran.
    """
    with successor_of_an_ended_owner(connect_args, close_orphans=True) as (conn, session, *_):
        # Nobody has used the connection since its owner ended: an orphan, closed.
        wait_until(lambda: session not in watcher(), timeout=5)
        with pytest.raises(IdleClosedError, match="owner thread ended"):
            one(conn, "SELECT 1")
        conn.close()


def test_strict_a_new_thread_with_the_ended_owner_s_id_is_not_its_owner(connect_args):
    """Strict mode: a new thread with the ended owner's id must still adopt() the
    connection before using it, like any other thread."""
    seen: dict[str, object] = {}

    def successor_body(conn: guarddb.Connection) -> None:
        try:
            one(conn, "SELECT 1")
        except guarddb.ThreadOwnershipError as error:
            seen["refused"] = str(error)
        conn.adopt()  # the hand-over strict mode asks for
        seen["after_adopt"] = one(conn, "SELECT 1")

    with successor_of_an_ended_owner(connect_args, successor_body, guard="strict") as (
        conn,
        _session,
        release,
        successor,
    ):
        release.set()
        successor.join(30)
        assert "refused" in seen, "a new thread with the ended owner's id used it unadopted"
        assert "which belonged to thread 'Leaker'" in seen["refused"]
        assert "which ended: no thread owns it now" in seen["refused"]
        assert seen["after_adopt"] == (1,)
        conn.close()


def test_close_orphans_as_a_process_default_and_from_the_environment(connect_args):
    code = f"""
import threading, guarddb, time
box = []
t = threading.Thread(target=lambda: box.append(guarddb.connect(**{connect_args!r})))
t.start(); t.join()
deadline = time.monotonic() + 5
while box[0].open and time.monotonic() < deadline:
    time.sleep(0.01)
print("closed" if not box[0].open else "open")
"""
    assert run_python(code, GUARDDB_CLOSE_ORPHANS="1").stdout.strip() == "closed"
    assert run_python(code, GUARDDB_CLOSE_ORPHANS="0").stdout.strip() == "open"
    guarddb.set_defaults(close_orphans=True)
    try:
        conn, _session, _site = leak_from_thread(connect_args)
        wait_until(lambda: not conn.open, timeout=5)
    finally:
        guarddb.set_defaults(close_orphans=False)
    with pytest.raises(ValueError, match="close_orphans"):
        guarddb.set_defaults(close_orphans="sometimes")


# -- the idle reaper ---------------------------------------------------------------------


def test_an_idle_connection_is_closed_and_its_next_call_says_why(connect, watcher):
    conn = connect(max_idle=0.3, autocommit=True)
    session = one(conn, "SELECT CONNECTION_ID()")[0]
    wait_until(lambda: session not in watcher(), timeout=5)
    with pytest.raises(IdleClosedError) as info:
        conn.cursor().execute("SELECT 1")
    error = info.value
    assert isinstance(error, MySQLdb.OperationalError) and isinstance(error, guarddb.GuardError)
    assert error.args[0] == 2006
    assert "closed by guarddb" in error.args[1] and "max_idle=0.3" in error.args[1]
    with pytest.raises(IdleClosedError):
        conn.ping()  # what pool_pre_ping calls: a disconnect, so the pool replaces it
    conn.close()  # quiet
    with pytest.raises(MySQLdb.Error) as after_close:
        conn.ping()
    assert not isinstance(after_close.value, guarddb.GuardError)  # mysqlclient's own now


def test_on_idle_reconnect_opens_a_fresh_session_as_the_old_one_was(connect, watcher):
    conn = connect(max_idle=0.3, on_idle="reconnect", autocommit=True, sql_mode="ANSI_QUOTES")
    conn.set_character_set("latin1")
    session = one(conn, "SELECT CONNECTION_ID()")[0]
    wait_until(lambda: session not in watcher(), timeout=5)
    fresh, charset, mode = one(conn, "SELECT CONNECTION_ID(), @@character_set_client, @@sql_mode")
    assert fresh != session and charset == "latin1" and mode == "ANSI_QUOTES"


def test_never_closed_in_a_transaction_with_unread_rows_or_in_a_call(connect, watcher):
    in_txn = connect(max_idle=0.2)  # autocommit off
    one(in_txn, "SELECT 1 FOR UPDATE")  # a locking read: a write, as far as guarddb knows
    unread = connect(max_idle=0.2, autocommit=True)
    ss = unread.cursor(guarddb.cursors.SSCursor)
    ss.execute("SELECT 1 UNION SELECT 2")
    # Idle long enough to be reaped only once a thread is inside it: under load, more
    # than 0.2 s may pass before Blocked gets in.
    in_call = connect(max_idle=60, autocommit=True)
    kept = {in_txn.thread_id(), unread.thread_id(), in_call.thread_id()}
    blocked = Blocked(in_call, connect())
    in_call._guard.max_idle = 0.2  # the reaper reads it on each round
    idle = connect(max_idle=0.2, autocommit=True)
    idle_session = idle.thread_id()
    try:
        wait_until(lambda: idle_session not in watcher(), timeout=5)
        time.sleep(0.5)  # several more rounds of the reaper
        assert kept <= watcher()
    finally:
        blocked.release()
    assert ss.fetchall() == ((1,), (2,))
    in_txn.commit()


def test_strict_ownership_survives_reaping(connect, watcher):
    conn = connect(guard="strict", max_idle=0.2, on_idle="reconnect", autocommit=True)
    session = conn.thread_id()
    wait_until(lambda: session not in watcher(), timeout=5)
    with pytest.raises(guarddb.ThreadOwnershipError):
        in_thread(lambda: one(conn, "SELECT 1"))  # not its connection to reconnect
    assert one(conn, "SELECT 2") == (2,)


def test_max_idle_from_the_environment_and_bad_values(connect_args):
    code = f"""
import guarddb, time
conn = guarddb.connect(**{connect_args!r}, autocommit=True)
deadline = time.monotonic() + 5
while conn.open and time.monotonic() < deadline:
    time.sleep(0.01)
try:
    conn.ping()
except guarddb.IdleClosedError:
    print("reaped")
"""
    assert run_python(code, GUARDDB_MAX_IDLE="0.2").stdout.strip() == "reaped"
    with pytest.raises(ValueError, match="max_idle"):
        guarddb.connect(**connect_args, max_idle=-1)
    with pytest.raises(ValueError, match="on_idle"):
        guarddb.connect(**connect_args, max_idle=1, on_idle="later")


def test_the_lifecycle_thread_starts_in_a_forked_child_only_when_needed(connect, connect_args):
    connect(max_idle=5)  # the parent's lifecycle thread runs now

    def child():
        names = lambda: [t.name for t in threading.enumerate()]  # noqa: E731
        before = names()
        conn = guarddb.connect(**connect_args, max_idle=0.2, autocommit=True)
        wait_until(lambda: not conn.open, timeout=5)
        return [before, names()]

    before, after = in_forked_child(child)
    assert "guarddb-lifecycle" not in before
    assert "guarddb-lifecycle" in after


def test_reaper_stress_only_idle_connections_close_and_only_with_idle_closed_error(
    connect_args, connect
):
    """Threads with their own connections, a reaper at a tiny max_idle: nothing else breaks."""
    setup = connect(autocommit=True)
    one(setup, "CREATE TABLE IF NOT EXISTS reaper_stress (thread INT, n INT) ENGINE=InnoDB")
    one(setup, "DELETE FROM reaper_stress")
    max_idle = 0.03
    committed = [0] * 6
    unexpected: list[BaseException] = []
    reaped = [0]

    def worker(index: int) -> None:
        rng = random.Random(index)
        conn = guarddb.connect(**connect_args, max_idle=max_idle)
        try:
            for n in range(60):
                try:
                    one(conn, "INSERT INTO reaper_stress VALUES (%s, %s)", (index, n))
                except IdleClosedError:
                    reaped[0] += 1  # only ever the first call after an idle gap
                    conn.close()
                    conn = guarddb.connect(**connect_args, max_idle=max_idle)
                    continue
                # Inside a transaction from here: any error at all is a failure.
                if rng.random() < 0.5:
                    time.sleep(rng.uniform(0, 2 * max_idle))  # idle inside the transaction
                one(conn, "SELECT COUNT(*) FROM reaper_stress WHERE thread = %s", (index,))
                conn.commit()
                committed[index] += 1
                if rng.random() < 0.5:
                    time.sleep(rng.uniform(0, 3 * max_idle))  # idle between transactions
        except BaseException as exc:
            unexpected.append(exc)
        finally:
            conn.close()

    run_threads(worker, 6)
    assert unexpected == []
    assert reaped[0] > 0  # the reaper did work during the run
    rows = one(setup, "SELECT COUNT(*) FROM reaper_stress")[0]
    assert rows == sum(committed)  # no transaction was closed under its owner


def test_seed_an_idle_sqlalchemy_pool_is_closed_and_replaced_silently(connect_args, watcher):
    """A QueuePool (pool_size 10) used by a burst of 15 threads, then left idle."""
    sqlalchemy = pytest.importorskip("sqlalchemy", reason="SQLAlchemy (guarddb's test extra)")
    url = f"mysql+mysqldb://root@localhost/test?unix_socket={connect_args['unix_socket']}"

    def engine(**options):
        return sqlalchemy.create_engine(
            url, module=guarddb, pool_size=10, max_overflow=5, **options
        )

    pinging = engine(pool_pre_ping=True, connect_args={"max_idle": 2})
    reconnecting = engine(connect_args={"max_idle": 2, "on_idle": "reconnect"})
    sessions: dict[int, int] = {}
    together = threading.Barrier(30)

    def burst(n: int) -> None:
        pool = pinging if n % 2 else reconnecting
        with pool.connect() as conn:
            sessions[n] = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
            together.wait(30)  # 15 at once on each engine

    try:
        run_threads(burst, 30)
        # The overflow was closed on return (the server may list a closed one a moment
        # longer): ten sleeping sessions per pool stay.
        wait_until(lambda: len(set(sessions.values()) & watcher()) == 20)
        pooled = set(sessions.values()) & watcher()
        wait_until(lambda: not (pooled & watcher()), timeout=2 + 5)
        for pool in (pinging, reconnecting):  # no error reaches the application
            with pool.connect() as conn:
                fresh = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
                assert conn.exec_driver_sql("SELECT 6 * 7").scalar() == 42
            assert fresh not in sessions.values()
    finally:
        pinging.dispose()
        reconnecting.dispose()


def test_a_disowned_connection_is_nobody_s_and_never_an_orphan(connect_args, orphans, watcher):
    box = {}

    def use_and_give_back() -> None:
        conn = box["conn"] = guarddb.connect(**connect_args, guard="strict", close_orphans=True)
        box["session"] = conn.thread_id()
        conn.disown()  # what a pool does at checkin

    in_thread(use_and_give_back, name="PoolUser")
    conn = box["conn"]
    info = info_of(conn, box["session"])
    assert (info.owner_name, info.owner_ident, info.orphan) == ("", 0, False)
    with pytest.raises(guarddb.ThreadOwnershipError):
        one(conn, "SELECT 1")  # strict: nobody may use it until a thread adopts it
    time.sleep(0.5)  # the lifecycle thread's judging grace is 0.2 s
    assert orphans == [] and box["session"] in watcher()
    conn.adopt()
    assert one(conn, "SELECT 1") == (1,)
    conn.close()


def test_guard_engine_pooled_connections_are_not_orphans(connect_args, orphans, watcher):
    sqlalchemy = pytest.importorskip("sqlalchemy", reason="SQLAlchemy (guarddb's test extra)")
    from guarddb.contrib.sqlalchemy import guard_engine

    url = f"mysql+mysqldb://root@localhost/test?unix_socket={connect_args['unix_socket']}"
    engine = guard_engine(
        sqlalchemy.create_engine(
            url, module=guarddb, pool_size=3, connect_args={"close_orphans": True}
        )
    )
    sessions = set()
    together = threading.Barrier(3)

    def burst(_n: int) -> None:
        with engine.connect() as conn:
            sessions.add(conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar())
            together.wait(30)

    try:
        run_threads(burst, 3)  # the threads that opened the pool's connections end
        time.sleep(0.5)  # the lifecycle thread's judging grace is 0.2 s
        assert orphans == []
        assert sessions <= watcher()  # the pool's, kept for the next checkout
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar() in sessions
    finally:
        engine.dispose()


def test_an_adopter_thread_that_ends_leaves_a_reported_orphan(connect_args):
    # In a fresh process: the lifecycle thread must start for an adopter too, not
    # only for a thread that opens a connection.
    code = f"""
import threading, time, guarddb
seen = []
guarddb.on_violation(lambda v: seen.append(v.message) if v.kind == "orphan" else None)
conn = guarddb.connect(**{connect_args!r})
adopter = threading.Thread(target=conn.adopt, name="Adopter")
adopter.start(); adopter.join()
deadline = time.monotonic() + 5
while not seen and time.monotonic() < deadline:
    time.sleep(0.01)
print("'Adopter'" in seen[0] if seen else "no report")
"""
    done = run_python(code)
    assert done.stdout.strip() == "True", done.stderr


@pytest.mark.parametrize("on_idle", ["raise", "reconnect"])
def test_closing_while_the_reaper_closes_it_waits_and_neither_raises_nor_reconnects(
    connect, plain_connect, watcher, on_idle
):
    """The reaper's own steps, played by a thread that stands in for it, with a close racing."""
    from MySQLdb import _mysql

    from guarddb._guard import lib
    from guarddb.core import guard as guard_module

    conn = connect(on_idle=on_idle, guard="strict", autocommit=True)
    session, slot = conn.thread_id(), conn._guard.slot
    status = plain_connect(autocommit=True).cursor()
    status.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
    connections_before = int(status.fetchone()[1])
    claimed, finish = threading.Event(), threading.Event()

    def reaper() -> None:
        assert lib.guard_claim(slot, 0, threading.get_ident()) == lib.GUARD_OK
        claimed.set()
        finish.wait(30)
        conn._guard.closed_reason = "idle for a test"
        conn._guard.forget_socket()
        _mysql.connection.close(conn)
        lib.guard_mark_closed(slot)
        lib.guard_release(slot, threading.get_ident())

    stand_in = threading.Thread(target=reaper)
    stand_in.start()
    claimed.wait(30)
    before = guard_module.service_ident
    guard_module.service_ident = stand_in.ident
    try:
        errors: list[BaseException] = []

        def close() -> None:
            try:
                conn.close()
            except BaseException as exc:
                errors.append(exc)

        closer = threading.Thread(target=close)  # not the owner, as a pool's dispose() is not
        closer.start()
        wait_until(lambda: slot.waiters == 1)  # the close waits for the reaper
        finish.set()
        closer.join(30)
        stand_in.join(30)
    finally:
        finish.set()
        guard_module.service_ident = before
    assert not closer.is_alive() and not stand_in.is_alive() and errors == []
    assert session not in watcher() and not conn.open
    status.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
    assert int(status.fetchone()[1]) == connections_before  # closed, never reopened
    assert conn._guard.owner() == threading.get_ident()  # strict mode's owner kept
