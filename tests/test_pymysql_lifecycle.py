"""guarddb.pymysql's lifecycle: live_connections(), orphans left by ended threads, the reaper."""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings

import pymysql
import pytest

import guarddb.pymysql
from guarddb.pymysql import IdleClosedError, live_connections

from .helpers import Blocked, in_thread, wait_until


def one(conn, sql, args=None):
    cursor = conn.cursor()
    cursor.execute(sql, args)
    row = cursor.fetchone()
    cursor.close()
    return row


@pytest.fixture
def watcher(plain_pymysql_connect):
    """A plain connection that looks at the server's sessions."""
    conn = plain_pymysql_connect(autocommit=True)

    def sessions() -> set[int]:
        cursor = conn.cursor()
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST")
        return {row[0] for row in cursor.fetchall()}

    return sessions


def info_of(conn, session: int | None = None) -> guarddb.pymysql.ConnectionInfo:
    session = conn.thread_id() if session is None else session
    (info,) = [i for i in live_connections() if i.server_thread_id == session]
    return info


@pytest.fixture
def orphans():
    """Orphan reports made while the test runs."""
    seen: list[guarddb.pymysql.Violation] = []

    def hook(violation: guarddb.pymysql.Violation) -> None:
        if violation.kind == "orphan":
            seen.append(violation)

    guarddb.pymysql.on_violation(hook)
    yield seen
    guarddb.pymysql.remove_violation_hook(hook)


# -- the registry ------------------------------------------------------------------------


def test_live_connections_describes_each_open_connection(pymysql_connect, connect_args):
    before = time.monotonic()
    conn = pymysql_connect(guard="strict")
    info = info_of(conn)
    assert info.server_thread_id == one(conn, "SELECT CONNECTION_ID()")[0]
    assert info.host == connect_args["unix_socket"] and info.db == "test"
    assert info.mode == "strict" and info.pid == conn._guard.pid
    assert info.owner_name == threading.current_thread().name
    assert info.owner_ident == threading.get_ident() and not info.orphan
    assert info.site == conn._guard.site and "conftest.py" in info.site
    assert 0 <= info.age <= time.monotonic() - before
    conn.commit()
    assert not info_of(conn).in_transaction and not info_of(conn).pending_result

    one(conn, "SELECT 1")  # autocommit off (PyMySQL's default): a transaction is open
    assert info_of(conn).in_transaction
    conn.commit()
    assert not info_of(conn).in_transaction
    ss = conn.cursor(guarddb.pymysql.cursors.SSCursor)
    ss.execute("SELECT 1 UNION SELECT 2")
    assert info_of(conn).pending_result
    ss.fetchall()
    assert not info_of(conn).pending_result
    conn.select_db("mysql")
    assert info_of(conn).db == "mysql"


def test_idle_counts_from_the_end_of_the_last_call(pymysql_connect):
    conn = pymysql_connect(autocommit=True)
    one(conn, "SELECT 1")
    start = time.monotonic()
    wait_until(lambda: info_of(conn).idle >= 0.3)  # the coarse clock ticks every few ms
    assert info_of(conn).idle <= time.monotonic() - start + 0.05
    one(conn, "SELECT 1")
    assert info_of(conn).idle < 0.3


def test_closed_and_collected_connections_leave_the_registry(connect_args):
    ids = lambda: {i.server_thread_id for i in live_connections()}  # noqa: E731
    conn = guarddb.pymysql.connect(**connect_args)
    thread_id = conn.thread_id()
    assert thread_id in ids()
    conn.close()
    assert thread_id not in ids()
    dropped = guarddb.pymysql.connect(**connect_args)
    thread_id, guard = dropped.thread_id(), dropped._guard
    del dropped
    gc.collect()
    assert thread_id not in ids()
    assert guard.slot is None  # its guard slot was given back


def test_a_deferred_connection_is_listed_once_connected(connect_args):
    conn = guarddb.pymysql.connect(defer_connect=True, **connect_args)
    listed = lambda: [i for i in live_connections() if i.site == conn._guard.site]  # noqa: E731
    assert not conn.open and listed() == []
    conn.connect()
    (info,) = listed()
    assert info.server_thread_id == conn.thread_id() and info.db == "test"
    conn.close()
    assert listed() == []


# -- orphans -----------------------------------------------------------------------------


def leak_from_thread(connect_args, name="Leaker", work=None, **options):
    """Open a connection in a thread that ends without closing it; return the connection."""
    box = {}

    def leak() -> None:
        box["conn"] = guarddb.pymysql.connect(**connect_args, **options)  # the opening site
        box["id"] = box["conn"].thread_id()
        if work is not None:
            work(box["conn"])

    in_thread(leak, name=name)
    return box["conn"], box["id"], f"test_pymysql_lifecycle.py:{leak.__code__.co_firstlineno + 1}"


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
    info = info_of(conn)
    assert info.orphan and info.owner_name == "LeakyWorker"
    assert session in watcher()  # reported, not closed: that needs close_orphans
    conn.close()


def test_close_orphans_closes_the_session_soon_after_the_thread_ends(connect_args, watcher):
    conn, session, _site = leak_from_thread(connect_args, close_orphans=True)
    wait_until(lambda: session not in watcher(), timeout=5)
    with pytest.raises(IdleClosedError, match="owner thread ended") as info:
        one(conn, "SELECT 1")
    assert isinstance(info.value, pymysql.err.OperationalError) and info.value.args[0] == 2006
    conn.close()  # closing it is quiet ...
    with pytest.raises(pymysql.err.Error, match="Already closed"):
        conn.close()  # ... once: then PyMySQL's own word


def test_close_orphans_rolls_back_and_reads_out_what_the_thread_left(
    connect_args, pymysql_connect, watcher
):
    setup = pymysql_connect(autocommit=True)
    one(setup, "CREATE TABLE IF NOT EXISTS orphan_rows (n INT) ENGINE=InnoDB")
    one(setup, "DELETE FROM orphan_rows")

    def work(conn):
        one(conn, "INSERT INTO orphan_rows VALUES (1)")  # autocommit off: left open
        conn.kept = conn.cursor(guarddb.pymysql.cursors.SSCursor)
        conn.kept.execute("SELECT * FROM seq_1_to_10000")  # rows left unread

    conn, session, _site = leak_from_thread(connect_args, work=work, close_orphans=True)
    wait_until(lambda: session not in watcher(), timeout=5)
    assert one(setup, "SELECT COUNT(*) FROM orphan_rows") == (0,)
    assert not conn._guard.pending


def test_an_adopted_connection_belongs_to_its_adopter(connect_args, orphans):
    box = {}
    in_thread(
        lambda: box.setdefault("c", guarddb.pymysql.connect(**connect_args, close_orphans=True))
    )
    conn = box["c"]
    conn.adopt()  # before its opener's end is judged
    info = info_of(conn)
    assert info.owner_ident == threading.get_ident() and info.owner_alive
    time.sleep(0.5)  # the lifecycle thread's judging grace is 0.2 s
    assert conn.open and one(conn, "SELECT 1") == (1,)
    conn.close()


def test_a_disowned_connection_is_nobody_s_and_never_an_orphan(connect_args, orphans, watcher):
    box = {}

    def use_and_give_back() -> None:
        conn = box["conn"] = guarddb.pymysql.connect(
            **connect_args, guard="strict", close_orphans=True
        )
        box["session"] = conn.thread_id()
        conn.disown()  # what a pool does at checkin

    in_thread(use_and_give_back, name="PoolUser")
    conn = box["conn"]
    info = info_of(conn, box["session"])
    assert (info.owner_name, info.owner_ident, info.orphan) == ("", 0, False)
    time.sleep(0.5)
    assert orphans == [] and box["session"] in watcher()
    conn.adopt()
    assert one(conn, "SELECT 1") == (1,)
    conn.close()


# -- the idle reaper ---------------------------------------------------------------------


def test_an_idle_connection_is_closed_and_its_next_call_says_why(pymysql_connect, watcher):
    conn = pymysql_connect(max_idle=0.3, autocommit=True)
    session = one(conn, "SELECT CONNECTION_ID()")[0]
    wait_until(lambda: session not in watcher(), timeout=5)
    assert not conn.open
    with pytest.raises(IdleClosedError) as info:
        conn.cursor().execute("SELECT 1")
    error = info.value
    assert isinstance(error, pymysql.err.OperationalError) and error.args[0] == 2006
    assert "closed by guarddb" in error.args[1] and "max_idle=0.3" in error.args[1]
    with pytest.raises(IdleClosedError):
        conn.ping(False)  # what pool_pre_ping calls: a disconnect, so the pool replaces it
    conn.close()  # quiet
    with pytest.raises(pymysql.err.Error) as after_close:
        conn.ping(False)  # (PyMySQL 1.1's ping() reconnects by default)
    assert not isinstance(after_close.value, guarddb.pymysql.GuardError)  # PyMySQL's own now


@pytest.mark.parametrize("how", ["ping", "connect"])
def test_ping_reconnect_and_connect_reopen_a_connection_guarddb_closed(
    pymysql_connect, watcher, how
):
    # As PyMySQL does for a connection the server closed: the user asks for a session.
    conn = pymysql_connect(max_idle=0.3, autocommit=True)
    session = conn.thread_id()
    wait_until(lambda: session not in watcher(), timeout=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ping(reconnect=True), PyMySQL 1.2
        conn.ping(reconnect=True) if how == "ping" else conn.connect()
    assert conn.thread_id() != session and one(conn, "SELECT 2") == (2,)
    assert info_of(conn).server_thread_id == conn.thread_id()


def test_on_idle_reconnect_opens_a_fresh_session_as_the_old_one_was(pymysql_connect, watcher):
    conn = pymysql_connect(
        max_idle=0.3, on_idle="reconnect", autocommit=True, sql_mode="ANSI_QUOTES"
    )
    conn.set_character_set("latin1")
    one(conn, "CREATE DATABASE IF NOT EXISTS guarddb_other")
    conn.select_db("guarddb_other")
    session = one(conn, "SELECT CONNECTION_ID()")[0]
    wait_until(lambda: session not in watcher(), timeout=5)
    fresh, charset, mode, database = one(
        conn, "SELECT CONNECTION_ID(), @@character_set_client, @@sql_mode, DATABASE()"
    )
    assert fresh != session and charset == "latin1" and mode == "ANSI_QUOTES"
    assert database == "guarddb_other"


def test_never_closed_in_a_transaction_with_unread_rows_or_in_a_call(pymysql_connect, watcher):
    in_txn = pymysql_connect(max_idle=0.2)  # autocommit off
    one(in_txn, "SELECT 1 FOR UPDATE")  # a locking read: a write, as far as guarddb knows
    unread = pymysql_connect(max_idle=0.2, autocommit=True)
    ss = unread.cursor(guarddb.pymysql.cursors.SSCursor)
    ss.execute("SELECT 1 UNION SELECT 2")
    # Idle long enough to be reaped only once a thread is inside it: under load, more
    # than 0.2 s may pass before Blocked gets in.
    in_call = pymysql_connect(max_idle=60, autocommit=True)
    kept = {in_txn.thread_id(), unread.thread_id(), in_call.thread_id()}
    blocked = Blocked(in_call, pymysql_connect())
    in_call._guard.max_idle = 0.2  # the reaper reads it on each round
    idle = pymysql_connect(max_idle=0.2, autocommit=True)
    idle_session = idle.thread_id()
    try:
        wait_until(lambda: idle_session not in watcher(), timeout=5)
        time.sleep(0.5)  # several more rounds of the reaper
        assert kept <= watcher()
    finally:
        blocked.release()
    assert ss.fetchall() == [(1,), (2,)]
    in_txn.commit()


def test_strict_ownership_survives_reaping(pymysql_connect, watcher):
    conn = pymysql_connect(guard="strict", max_idle=0.2, on_idle="reconnect", autocommit=True)
    session = conn.thread_id()
    wait_until(lambda: session not in watcher(), timeout=5)
    with pytest.raises(guarddb.pymysql.ThreadOwnershipError):
        in_thread(lambda: one(conn, "SELECT 1"))  # not its connection to reconnect
    assert one(conn, "SELECT 2") == (2,)
