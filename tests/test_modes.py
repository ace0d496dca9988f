"""The modes: exclusive (default), strict, off — the table in DESIGN.md."""

from __future__ import annotations

import MySQLdb
import pytest

import guarddb
from guarddb import ConcurrentUseError, PendingResultError, ThreadOwnershipError

from .helpers import Blocked, in_thread, run_python


def rows(conn, sql="SELECT 1", args=None):
    cursor = conn.cursor()
    cursor.execute(sql, args)
    return cursor.fetchall()


def test_default_mode_is_exclusive(connect):
    assert connect().guard_mode == "exclusive"


# -- exclusive -----------------------------------------------------------------------------


def test_exclusive_allows_another_thread_when_calls_do_not_overlap(connect):
    conn = connect()
    assert rows(conn) == ((1,),)
    assert in_thread(lambda: rows(conn, "SELECT 2")) == ((2,),)
    assert rows(conn, "SELECT 3") == ((3,),)


def test_exclusive_refuses_an_overlapping_call(connect, plain_connect):
    conn = connect()
    blocked = Blocked(conn, plain_connect())
    try:
        with pytest.raises(ConcurrentUseError) as info:
            rows(conn)
        message = str(info.value)
        assert "BlockedCaller" in message and "MainThread" in message
        assert "conftest.py:" in message  # where the connection was opened (the fixture)
        assert "guard='mutex'" in message
    finally:
        blocked.release()
    assert rows(conn, "SELECT 4") == ((4,),)  # the session survived


def test_exclusive_refuses_fetching_rows_another_thread_executed(connect):
    conn = connect()
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    with pytest.raises(ConcurrentUseError, match="executed by thread 'MainThread'"):
        in_thread(cursor.fetchone)
    in_thread(lambda: cursor.execute("SELECT 2"))  # executing moves ownership
    with pytest.raises(ConcurrentUseError):
        cursor.fetchall()
    cursor.execute("SELECT 5")
    assert cursor.fetchall() == ((5,),)


def test_closing_from_the_owner_is_always_allowed(connect, plain_connect):
    conn = connect()
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    blocked = Blocked(conn, plain_connect())
    try:
        cursor.close()  # closed on the client side: nothing of it is on the server
        assert cursor.connection is None
    finally:
        blocked.release()


def test_conn_close_overlapping_another_threads_call_is_refused(connect, plain_connect):
    conn = connect()
    blocked = Blocked(conn, plain_connect())
    try:
        with pytest.raises(ConcurrentUseError):
            conn.close()
    finally:
        blocked.release()
    conn.close()


# -- strict --------------------------------------------------------------------------------


def test_strict_refuses_any_other_thread(connect):
    conn = connect(guard="strict")
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    with pytest.raises(ThreadOwnershipError) as info:
        in_thread(lambda: rows(conn), name="Intruder")
    assert "Intruder" in str(info.value) and "MainThread" in str(info.value)
    assert "adopt()" in str(info.value)
    with pytest.raises(ThreadOwnershipError):
        in_thread(cursor.fetchall)
    with pytest.raises(ThreadOwnershipError):
        in_thread(conn.commit)
    assert cursor.fetchall() == ((1,),)


def test_strict_lets_any_thread_close_and_keeps_the_owner(connect):
    # Pools close from other threads (dispose, recycle), and code closes a
    # cursor in the except block of a refused statement: no second error.
    conn = connect(guard="strict")
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    in_thread(cursor.close, name="Closer")
    assert cursor.connection is None
    assert rows(conn, "SELECT 2") == ((2,),)  # still the owner's
    with pytest.raises(ThreadOwnershipError):
        in_thread(lambda: rows(conn))
    in_thread(conn.close, name="Closer")
    assert not conn.open


def test_strict_adopt_moves_ownership(connect):
    conn = connect(guard="strict")

    def adopt_and_query():
        conn.adopt()
        return rows(conn, "SELECT 7")

    assert in_thread(adopt_and_query) == ((7,),)
    with pytest.raises(ThreadOwnershipError):
        rows(conn)
    conn.adopt()
    assert rows(conn) == ((1,),)


def test_adopt_is_refused_while_another_thread_is_inside(connect, plain_connect):
    conn = connect(guard="exclusive")
    blocked = Blocked(conn, plain_connect())
    try:
        with pytest.raises(ConcurrentUseError, match="adopt"):
            conn.adopt()
    finally:
        blocked.release()
    conn.adopt()


def test_adopt_is_refused_while_another_thread_holds_an_unread_result(connect):
    conn = connect(guard="strict")
    cursor = conn.cursor(guarddb.cursors.SSCursor)
    cursor.execute("SELECT * FROM seq_1_to_10")
    cursor.fetchone()
    with pytest.raises(PendingResultError, match="adopt"):
        in_thread(conn.adopt)
    cursor.close()
    in_thread(conn.adopt)


# -- off -----------------------------------------------------------------------------------


def test_off_checks_nothing(connect):
    conn = connect(guard="off")
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    assert in_thread(cursor.fetchall) == ((1,),)
    ss = conn.cursor(guarddb.cursors.SSCursor)
    ss.execute("SELECT * FROM seq_1_to_10")
    with pytest.raises(MySQLdb.ProgrammingError) as info:
        rows(conn)  # what mysqlclient does: libmysqlclient says "out of sync"
    assert not isinstance(info.value, guarddb.GuardError)
    assert info.value.args[0] == 2014


# -- choosing the mode ---------------------------------------------------------------------


def test_unknown_mode_is_a_value_error_listing_the_modes(connect_args):
    with pytest.raises(ValueError, match="'exclusive', 'strict', 'mutex', 'off'"):
        guarddb.connect(guard="lenient", **connect_args)
    with pytest.raises(ValueError, match="'exclusive'"):
        guarddb.set_default_mode("paranoid")


def test_set_default_mode(connect):
    try:
        guarddb.set_default_mode("strict")
        assert connect().guard_mode == "strict"
        assert connect(guard="off").guard_mode == "off"  # an explicit keyword wins
    finally:
        guarddb.set_default_mode("exclusive")
    assert connect().guard_mode == "exclusive"


def test_environment_sets_the_default_mode():
    done = run_python("import guarddb; print(guarddb.default_mode())", GUARDDB_MODE="strict")
    assert done.stdout.strip() == "strict", done.stderr


def test_unknown_mode_in_the_environment_is_a_value_error():
    done = run_python("import guarddb", GUARDDB_MODE="sloppy")
    assert done.returncode != 0
    assert "ValueError: GUARDDB_MODE='sloppy' is not a guarddb mode" in done.stderr
