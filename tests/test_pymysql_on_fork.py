"""guarddb.pymysql with on_fork="reconnect": a forked child's first use opens a fresh session."""

from __future__ import annotations

import pytest

import guarddb.pymysql
from guarddb.pymysql import ForkedConnectionError

from .helpers import Blocked, ChildError, in_forked_child, run_python

MODES = ["exclusive", "strict", "mutex"]


def one(conn, sql, args=None):
    cursor = conn.cursor()
    cursor.execute(sql, args)
    row = cursor.fetchone()
    cursor.close()
    return row


def server_connections(conn) -> int:
    """How many connections the server has accepted so far (a connect in a child shows here)."""
    return int(one(conn, "SHOW GLOBAL STATUS LIKE 'Connections'")[1])


@pytest.mark.parametrize("mode", MODES)
def test_child_gets_its_own_session_and_the_parent_keeps_its_own(pymysql_connect, mode):
    conn = pymysql_connect(guard=mode, on_fork="reconnect", autocommit=True)
    cursor = conn.cursor()
    cursor.execute("SELECT CONNECTION_ID()")
    (parent_session,) = cursor.fetchone()

    def child():
        cursor.execute("SELECT CONNECTION_ID(), 6 * 7")  # the inherited cursor, unchanged code
        first = cursor.fetchone()
        conn.commit()
        return [*first, one(conn, "SELECT CONNECTION_ID()")[0]]

    child_session, answer, same_session = in_forked_child(child)
    assert answer == 42
    assert child_session != parent_session
    assert same_session == child_session  # one new session, kept for later calls
    assert one(conn, "SELECT CONNECTION_ID()") == (parent_session,)


def test_every_kind_of_first_use_reconnects(pymysql_connect):
    conn = pymysql_connect(on_fork="reconnect")
    counter = pymysql_connect(autocommit=True)
    for first_use in (
        lambda: conn.ping(),
        lambda: conn.commit(),
        lambda: conn.autocommit(False),
        lambda: conn.query("DO 1"),
        lambda: conn.connect(),  # reconnects once, not twice
        lambda: conn.select_db("test"),
    ):
        before = server_connections(counter)
        child = in_forked_child(lambda use=first_use: (use(), one(conn, "SELECT 1")[0])[1])
        assert child == 1
        assert server_connections(counter) == before + 1  # the child's one session


def test_the_session_is_restored_as_it_was_at_fork(pymysql_connect):
    conn = pymysql_connect(
        on_fork="reconnect",
        init_command="SET @opened_with = 'init_command'",
        autocommit=False,
        sql_mode="ANSI_QUOTES",
    )
    conn.set_character_set("latin1", "latin1_bin")
    conn.autocommit(True)
    one(conn, "CREATE DATABASE IF NOT EXISTS guarddb_other")
    conn.select_db("guarddb_other")
    conn.encoders[bool] = lambda value, encoders=None: "'kept'"  # Python-side: kept too

    def child():
        row = one(
            conn,
            "SELECT @opened_with, @@autocommit, @@character_set_client, @@collation_connection, "
            "@@sql_mode, DATABASE(), %s",
            (True,),
        )
        return [*row, conn.character_set_name(), conn.get_autocommit()]

    assert in_forked_child(child) == [
        "init_command",
        1,
        "latin1",
        "latin1_bin",
        "ANSI_QUOTES",
        "guarddb_other",
        "kept",
        "latin1",
        True,
    ]


def test_autocommit_off_is_restored_and_a_clean_fork_reconnects(pymysql_connect):
    conn = pymysql_connect(on_fork="reconnect")  # PyMySQL's default: autocommit off
    one(conn, "SELECT 1")
    conn.commit()  # nothing open at fork
    assert in_forked_child(lambda: one(conn, "SELECT @@autocommit")[0]) == 0


def unread_rows(conn):
    conn.autocommit(True)
    conn.kept_cursor = conn.cursor(guarddb.pymysql.cursors.SSCursor)  # kept alive over the fork
    conn.kept_cursor.execute("SELECT 1 UNION SELECT 2")


@pytest.mark.parametrize(
    ("open_something", "what"),
    [
        (lambda conn: one(conn, "SELECT 1 FOR UPDATE"), "a transaction was open and had written"),
        (
            lambda conn: (conn.autocommit(True), conn.begin(), one(conn, "SELECT @a := 1 INTO @b")),
            "a transaction was open and had written",
        ),
        (lambda conn: conn.query("SET @x = 1"), "a transaction was open"),
        (lambda conn: conn.query("SELECT GET_LOCK('guarddb-fork', 0)"), "holds locks"),
        (lambda conn: unread_rows(conn), "still unread"),
    ],
    ids=["locking-read", "begin-then-write", "query", "get-lock", "unread-sscursor"],
)
def test_refused_when_work_would_be_lost(pymysql_connect, open_something, what):
    conn = pymysql_connect(on_fork="reconnect", autocommit=False)
    before = server_connections(conn)
    open_something(conn)

    def child():
        errors = []
        for _ in range(2):  # refused every time, not just once
            try:
                one(conn, "SELECT 1")
            except ForkedConnectionError as exc:
                errors.append([exc.args[0], exc.args[1]])
        return errors

    errors = in_forked_child(child)
    assert len(errors) == 2
    assert errors[0][0] == 2006
    assert what in errors[0][1] and "cannot reconnect" in errors[0][1]
    # The refusal opened no session.
    assert server_connections(pymysql_connect()) == before + 1  # only the check's own


def test_commit_rollback_and_autocommit_on_end_the_transaction(pymysql_connect):
    conn = pymysql_connect(on_fork="reconnect")
    for end in (conn.commit, conn.rollback, lambda: conn.autocommit(True)):
        conn.autocommit(False)
        one(conn, "SELECT 1")
        assert conn.in_transaction()
        end()
        assert not conn.in_transaction()
        assert in_forked_child(lambda: one(conn, "SELECT 2")[0]) == 2


def test_close_in_the_child_opens_no_session(pymysql_connect):
    conn = pymysql_connect(on_fork="reconnect")
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    before = server_connections(pymysql_connect())

    def child():
        cursor.close()
        conn.close()
        return True

    assert in_forked_child(child)
    assert server_connections(pymysql_connect()) == before + 1  # the second check's own
    assert one(conn, "SELECT 3") == (3,)


def test_rows_of_a_statement_run_before_the_fork_are_not_handed_to_the_child(pymysql_connect):
    conn = pymysql_connect(on_fork="reconnect")
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    with pytest.raises(ChildError, match="ForkedConnectionError"):
        in_forked_child(cursor.fetchall)
    assert cursor.fetchall() == ((1,),)


def test_a_connection_closed_before_the_fork_is_not_reopened(pymysql_connect):
    conn = pymysql_connect(on_fork="reconnect")
    conn.close()
    with pytest.raises(ChildError, match="ForkedConnectionError"):
        in_forked_child(lambda: one(conn, "SELECT 1"))


def test_grandchild_reconnects_from_the_child_s_session(pymysql_connect):
    conn = pymysql_connect(on_fork="reconnect", autocommit=True)
    parent_session = one(conn, "SELECT CONNECTION_ID()")[0]

    def child():
        mine = one(conn, "SELECT CONNECTION_ID()")[0]
        grandchild = in_forked_child(lambda: one(conn, "SELECT CONNECTION_ID()")[0])
        return [mine, grandchild, one(conn, "SELECT CONNECTION_ID()")[0]]

    mine, grandchild, mine_after = in_forked_child(child)
    assert len({parent_session, mine, grandchild}) == 3
    assert mine_after == mine
    assert one(conn, "SELECT CONNECTION_ID()")[0] == parent_session


def test_reconnects_when_a_parent_thread_was_inside_a_call_at_fork(pymysql_connect):
    conn = pymysql_connect(on_fork="reconnect", autocommit=True)
    blocked = Blocked(conn, pymysql_connect(), locking=False)  # a lock taken refuses a reconnect
    try:
        answer = in_forked_child(lambda: one(conn, "SELECT 5")[0])
    finally:
        blocked.release()
    assert answer == 5
    assert one(conn, "SELECT 6") == (6,)


def test_process_default_and_environment(connect_args):
    guarddb.pymysql.set_defaults(on_fork="reconnect")
    try:
        conn = guarddb.pymysql.connect(**connect_args)
        assert in_forked_child(lambda: one(conn, "SELECT 7")[0]) == 7
        explicit = guarddb.pymysql.connect(**connect_args, on_fork="raise")
        with pytest.raises(ChildError, match="ForkedConnectionError"):
            in_forked_child(lambda: one(explicit, "SELECT 7"))
    finally:
        guarddb.pymysql.set_defaults(on_fork="raise")
    for opened in (conn, explicit):
        opened.close()

    code = f"""
import os, guarddb.pymysql
conn = guarddb.pymysql.connect(**{connect_args!r})
pid = os.fork()
if pid == 0:
    cursor = conn.cursor(); cursor.execute("SELECT 8"); os._exit(cursor.fetchone()[0])
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
    assert run_python(code, GUARDDB_ON_FORK="reconnect").stdout.strip() == "8"
