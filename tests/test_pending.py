"""Unbuffered results: another statement while rows are unread is PendingResultError, never 2014."""

from __future__ import annotations

import gc

import MySQLdb
import pytest

import guarddb
from guarddb import PendingResultError
from guarddb.cursors import SSCursor, SSDictCursor

from .helpers import in_thread


def select_one(conn):
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    return cursor.fetchall()


@pytest.mark.parametrize("mode", ["exclusive", "strict"])
def test_same_thread_second_statement_is_refused_by_name(connect, mode):
    conn = connect(guard=mode)
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_100")
    assert ss.fetchone() == (1,)
    with pytest.raises(PendingResultError) as info:
        select_one(conn)
    message = str(info.value)
    assert "SSCursor" in message and f"{id(ss):#x}" in message
    assert "test_pending.py:" in message  # where the unread result was executed
    with pytest.raises(PendingResultError):
        conn.commit()
    assert len(ss.fetchall()) == 99  # the result is intact
    assert select_one(conn) == ((1,),)  # read out: the connection is free


def test_plain_mysqlclient_says_commands_out_of_sync(plain_connect):
    conn = plain_connect()
    ss = conn.cursor(MySQLdb.cursors.SSCursor)
    ss.execute("SELECT * FROM seq_1_to_100")
    with pytest.raises(MySQLdb.ProgrammingError) as info:
        select_one(conn)
    assert info.value.args[0] == 2014


def test_other_thread_is_refused_while_rows_are_unread(connect):
    conn = connect()
    ss = conn.cursor(SSDictCursor)
    ss.execute("SELECT seq FROM seq_1_to_10")
    with pytest.raises(PendingResultError):
        in_thread(lambda: select_one(conn))
    assert ss.fetchone() == {"seq": 1}
    ss.close()
    assert in_thread(lambda: select_one(conn)) == ((1,),)


def test_closing_the_cursor_frees_the_connection(connect):
    conn = connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_1000")
    ss.fetchmany(3)
    ss.close()
    assert select_one(conn) == ((1,),)


def test_dropping_the_cursor_frees_the_connection_as_mysqlclient_does(connect):
    conn = connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_1000")
    ss.fetchone()
    del ss
    gc.collect()
    assert select_one(conn) == ((1,),)


def test_executing_again_on_the_same_cursor_discards_the_unread_rows(connect):
    conn = connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_1000")
    ss.fetchone()
    ss.execute("SELECT 42")
    assert ss.fetchall() == ((42,),)
    assert select_one(conn) == ((1,),)


def test_iteration_reads_out_and_frees(connect):
    conn = connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_500")
    assert [row[0] for row in ss] == list(range(1, 501))
    assert select_one(conn) == ((1,),)


def test_closing_the_connection_with_rows_unread_is_allowed(connect):
    conn = connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_1000")
    conn.close()
    with pytest.raises(MySQLdb.OperationalError) as info:  # as mysqlclient: (2006, '')
        select_one(conn)
    assert info.value.args == (2006, "")
    assert not isinstance(info.value, guarddb.GuardError)


def test_the_pending_error_is_a_programming_error(connect):
    conn = connect()
    ss = conn.cursor(SSCursor)
    ss.execute("SELECT * FROM seq_1_to_10")
    with pytest.raises(MySQLdb.ProgrammingError):
        conn.cursor().execute("SELECT 1")
    assert issubclass(PendingResultError, guarddb.GuardError)
