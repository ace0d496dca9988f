"""PyMySQL's unbuffered results: another statement while rows are unread is PendingResultError.

Plain PyMySQL reads the unread rows out and drops them (warning "Previous
unbuffered result was left incomplete") when any other statement comes, from
any cursor or thread: the cursor that owned them then silently has nothing.
"""

from __future__ import annotations

import gc
import warnings

import pymysql
import pytest

import guarddb.pymysql
from guarddb.pymysql import PendingResultError
from guarddb.pymysql.cursors import SSCursor, SSDictCursor

from .helpers import in_thread


def select_one(conn):
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    return cursor.fetchall()


@pytest.mark.parametrize("mode", ["exclusive", "strict"])
def test_same_thread_second_statement_is_refused_by_name(pymysql_connect, mode):
    conn = pymysql_connect(guard=mode)
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_100")
    assert ss.fetchone() == (1,)
    with pytest.raises(PendingResultError) as info:
        select_one(conn)
    message = str(info.value)
    assert "SSCursor" in message and f"{id(ss):#x}" in message
    assert "test_pymysql_pending.py:" in message  # where the unread result was executed
    assert "PyMySQL would read them out and drop them" in message
    assert "Commands out of sync" not in message  # that is libmysqlclient's answer
    for call in (conn.commit, conn.rollback, conn.ping, lambda: conn.select_db("test")):
        with pytest.raises(PendingResultError):
            call()
    assert len(ss.fetchall()) == 99  # the result is intact
    assert select_one(conn) == ((1,),)  # read out: the connection is free


def test_plain_pymysql_silently_drops_the_unread_rows(plain_pymysql_connect):
    conn = plain_pymysql_connect()
    ss = conn.cursor(pymysql.cursors.SSCursor)
    ss.execute("SELECT * FROM seq_1_to_100")
    assert ss.fetchone() == (1,)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert select_one(conn) == ((1,),)
    assert ss.fetchone() is None  # 99 rows lost


def test_other_thread_is_refused_while_rows_are_unread(pymysql_connect):
    conn = pymysql_connect()
    ss = conn.cursor(SSDictCursor)
    ss.execute("SELECT seq FROM seq_1_to_10")
    with pytest.raises(PendingResultError):
        in_thread(lambda: select_one(conn))
    with pytest.raises(guarddb.pymysql.ConcurrentUseError):
        in_thread(ss.fetchone)  # the rows are this thread's
    with pytest.raises(guarddb.pymysql.ConcurrentUseError):
        in_thread(lambda: next(ss))  # iteration too
    assert ss.fetchone() == {"seq": 1}
    assert next(ss) == {"seq": 2}
    ss.close()
    assert in_thread(lambda: select_one(conn)) == ((1,),)


@pytest.mark.parametrize(
    "read_out",
    [
        lambda ss: ss.fetchall(),
        lambda ss: list(ss),
        lambda ss: list(ss.fetchall_unbuffered()),
        lambda ss: [ss.fetchmany(400) for _ in range(3)],
        lambda ss: ss.scroll(1000, "absolute") or ss.fetchone(),
        lambda ss: ss.close(),
    ],
    ids=["fetchall", "iteration", "fetchall_unbuffered", "fetchmany", "scroll", "close"],
)
def test_reading_out_or_closing_frees_the_connection(pymysql_connect, read_out):
    conn = pymysql_connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_1000")
    ss.fetchmany(3)
    read_out(ss)
    assert select_one(conn) == ((1,),)
    assert not conn._guard.pending


def test_dropping_the_cursor_frees_the_connection(pymysql_connect):
    conn = pymysql_connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_1000")
    ss.fetchone()
    del ss
    gc.collect()
    assert select_one(conn) == ((1,),)


def test_dropping_the_cursor_in_a_reference_cycle_frees_the_connection(pymysql_connect):
    conn = pymysql_connect()
    ss = conn.cursor(SSCursor)
    ss.cycle = ss
    ss.execute("SELECT * FROM seq_1_to_1000")
    ss.fetchone()
    del ss
    gc.collect()
    assert select_one(conn) == ((1,),)


def test_executing_again_on_the_same_cursor_discards_the_unread_rows(pymysql_connect):
    conn = pymysql_connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_1000")
    ss.fetchone()
    with pytest.warns(UserWarning, match="left incomplete"):  # as PyMySQL says it
        ss.execute("SELECT 42")
    assert conn._guard.pending is not None  # the new result is unread
    assert ss.fetchall() == [(42,)]
    assert select_one(conn) == ((1,),)


def test_each_result_of_a_multi_statement_holds_the_connection(pymysql_connect):
    conn = pymysql_connect(client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT 1; SELECT 2; SELECT 3")
    assert list(ss) == [(1,)]
    assert ss.nextset()
    with pytest.raises(PendingResultError):
        select_one(conn)
    assert list(ss) == [(2,)]
    assert ss.nextset()
    assert list(ss) == [(3,)]
    assert not ss.nextset()
    assert select_one(conn) == ((1,),)


@pytest.mark.parametrize("read", [lambda ss: ss.fetchall(), list], ids=["fetchall", "iteration"])
def test_an_error_in_the_rows_frees_the_connection(pymysql_connect, read):
    conn = pymysql_connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SET STATEMENT max_statement_time=0.01 FOR SELECT seq, SLEEP(0.05) FROM seq_1_to_9")
    with pytest.raises(pymysql.err.OperationalError) as info:
        read(ss)
    assert not isinstance(info.value, guarddb.pymysql.GuardError)
    assert select_one(conn) == ((1,),)


def test_closing_the_connection_with_rows_unread_is_allowed(pymysql_connect):
    conn = pymysql_connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_1000")
    conn.close()
    assert not conn.open and not conn._guard.pending
    with pytest.raises(pymysql.err.Error) as info:  # as PyMySQL: Cursor closed / (0, '')
        select_one(conn)
    assert not isinstance(info.value, guarddb.pymysql.GuardError)


def test_the_pending_error_is_a_programming_error(pymysql_connect):
    conn = pymysql_connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_10")
    with pytest.raises(pymysql.err.ProgrammingError):
        conn.cursor().execute("SELECT 1")
    assert issubclass(PendingResultError, guarddb.pymysql.GuardError)


def test_iteration_ends_as_pymysql_s_with_the_warning_count(pymysql_connect, plain_pymysql_connect):
    seen = []
    for conn, cursor_class in (
        (plain_pymysql_connect(), pymysql.cursors.SSCursor),
        (pymysql_connect(), SSCursor),
    ):
        ss = conn.cursor(cursor_class)
        ss.execute("SELECT seq, seq / 0 FROM seq_1_to_3")
        seen.append((list(ss), ss.rownumber, ss.warning_count, list(ss)))
        assert select_one(conn) == ((1,),)
    assert seen[0] == seen[1] == ([(1, None), (2, None), (3, None)], 3, 3, [])
