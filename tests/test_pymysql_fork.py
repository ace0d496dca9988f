"""Fork with guarddb.pymysql: the child gets ForkedConnectionError; nothing it does reaches
the parent's session (PyMySQL's socket is pointed at /dev/null in the child)."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import warnings
import weakref

import pymysql
import pytest

import guarddb.pymysql
from guarddb.pymysql import ForkedConnectionError, GuardError

from .helpers import Blocked, ChildError, child_pythonpath, in_forked_child, wait_until

CONNECTION_ID = "SELECT CONNECTION_ID()"


def query(conn, sql=CONNECTION_ID):
    cursor = conn.cursor()
    cursor.execute(sql)
    return cursor.fetchall()


def assert_parent_session_intact(conn, session):
    assert query(conn) == session
    assert query(conn, "SELECT 41 + 1") == ((42,),)


def test_child_use_is_forked_connection_error(pymysql_connect):
    conn = pymysql_connect()
    session = query(conn)
    with pytest.raises(ChildError) as info:
        in_forked_child(lambda: query(conn))
    assert info.value.name == "ForkedConnectionError"
    assert info.value.child_args[0] == "2006"
    assert "inherited across fork()" in info.value.child_args[1]
    assert_parent_session_intact(conn, session)


@pytest.mark.parametrize(
    "call",
    [
        lambda conn: conn.commit(),
        lambda conn: conn.rollback(),
        lambda conn: conn.begin(),
        lambda conn: conn.ping(),
        lambda conn: conn.autocommit(True),
        lambda conn: conn.select_db("test"),
        lambda conn: conn.set_character_set("latin1"),
        lambda conn: conn.show_warnings(),
        lambda conn: conn.kill(1),
        lambda conn: conn.query("SELECT 1"),
        lambda conn: conn.connect(),
        lambda conn: conn.cursor().execute("SELECT 1"),
        lambda conn: conn.cursor().executemany("SELECT %s", [(1,)]),
        lambda conn: conn.cursor().callproc("no_such_procedure"),
    ],
    ids=[
        "commit",
        "rollback",
        "begin",
        "ping",
        "autocommit",
        "select_db",
        "set_character_set",
        "show_warnings",
        "kill",
        "query",
        "connect",
        "execute",
        "executemany",
        "callproc",
    ],
)
def test_every_server_call_in_the_child_is_refused(pymysql_connect, call):
    conn = pymysql_connect()
    session = query(conn)
    with pytest.raises(ChildError, match="ForkedConnectionError"):
        in_forked_child(lambda: call(conn))
    assert_parent_session_intact(conn, session)


def test_a_pools_ping_in_the_child_is_not_a_violation(pymysql_connect):
    conn = pymysql_connect()

    def ping_in_child():
        seen = []
        guarddb.pymysql.on_violation(seen.append)
        try:
            conn.ping()
        except ForkedConnectionError as exc:
            return [exc.args[0], len(seen)]

    assert in_forked_child(ping_in_child) == [2006, 0]


def test_rows_fetched_in_the_child_are_refused(pymysql_connect):
    conn = pymysql_connect()
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    with pytest.raises(ChildError, match="ForkedConnectionError"):
        in_forked_child(cursor.fetchall)
    assert cursor.fetchall() == ((1,),)


def test_unbuffered_rows_are_neither_read_nor_drained_in_the_child(pymysql_connect):
    conn = pymysql_connect()
    ss = conn.cursor(guarddb.pymysql.cursors.SSCursor)
    ss.execute("SELECT seq FROM seq_1_to_100")
    assert ss.fetchone() == (1,)
    with pytest.raises(ChildError, match="ForkedConnectionError"):
        in_forked_child(ss.fetchone)

    def close_everything():
        ss.close()
        conn.close()
        return "closed"

    assert in_forked_child(close_everything) == "closed"
    assert [row[0] for row in ss] == list(range(2, 101))  # the parent's rows, all there


def test_the_inherited_socket_points_at_dev_null_in_the_child(pymysql_connect):
    conn = pymysql_connect()
    fd = conn._sock.fileno()
    assert in_forked_child(lambda: os.readlink(f"/proc/self/fd/{fd}")) == "/dev/null"
    assert os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")


def test_a_socket_made_by_ping_reconnect_is_watched_too(pymysql_connect):
    conn = pymysql_connect(autocommit=True)
    old_session = query(conn)[0][0]
    killer = pymysql_connect(autocommit=True)
    killer.kill(old_session)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # PyMySQL 1.2 deprecates it
        conn.ping(reconnect=True)  # the old session is gone: a new socket, a new session
    session = query(conn)
    assert session[0][0] != old_session
    fd = conn._sock.fileno()

    def child():
        dev = os.readlink(f"/proc/self/fd/{fd}")
        conn.close()  # with an unwatched socket: COM_QUIT on the parent's new session
        return dev

    assert in_forked_child(child) == "/dev/null"
    assert_parent_session_intact(conn, session)


def test_a_deferred_connect_is_watched(connect_args):
    conn = guarddb.pymysql.connect(defer_connect=True, **connect_args)
    assert not conn.open
    conn.connect()
    session = query(conn)
    fd = conn._sock.fileno()

    def child():
        dev = os.readlink(f"/proc/self/fd/{fd}")
        conn.close()
        return dev

    assert in_forked_child(child) == "/dev/null"
    assert_parent_session_intact(conn, session)
    conn.close()


def test_child_close_raises_nothing_and_leaves_the_parent_alone(pymysql_connect):
    conn = pymysql_connect()
    session = query(conn)
    cursor = conn.cursor()
    cursor.execute("SELECT 1")

    def close_all():
        cursor.close()
        conn.close()
        try:
            conn.close()
        except pymysql.err.Error as exc:  # as PyMySQL says of a second close
            return ["closed", str(exc)]

    assert in_forked_child(close_all) == ["closed", "Already closed"]
    assert_parent_session_intact(conn, session)


def test_child_dropping_the_connection_leaves_the_parent_alone(connect_args):
    holder = [guarddb.pymysql.connect(**connect_args)]
    session = query(holder[0])

    def drop():
        freed = []
        weakref.finalize(holder[0], freed.append, True)
        holder.clear()
        gc.collect()
        return freed

    assert in_forked_child(drop) == [True]  # the child really freed its copy
    assert_parent_session_intact(holder[0], session)
    holder[0].close()


def test_grandchild_is_refused_too_and_nobody_disturbs_the_parent(pymysql_connect):
    conn = pymysql_connect()
    session = query(conn)

    def child():
        try:
            in_forked_child(lambda: query(conn))
        except ChildError as error:
            grandchild = error.name
        conn.close()
        return grandchild

    assert in_forked_child(child) == "ForkedConnectionError"
    assert_parent_session_intact(conn, session)


def test_off_mode_still_neuters_the_socket(pymysql_connect):
    conn = pymysql_connect(guard="off")
    session = query(conn)

    def use_and_close():
        try:
            query(conn)
        except pymysql.err.Error as exc:
            assert not isinstance(exc, GuardError)
        conn.close()
        return "done"

    assert in_forked_child(use_and_close) == "done"
    assert_parent_session_intact(conn, session)


_shared = {}


def _use_inherited(number):
    cursor = _shared["conn"].cursor()
    cursor.execute("SELECT %s", (number,))
    return cursor.fetchall()


def test_multiprocessing_fork_children_get_the_error_pickled_back(pymysql_connect):
    conn = _shared["conn"] = pymysql_connect()
    session = query(conn)
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            with pytest.raises(ForkedConnectionError) as info:
                pool.map(_use_inherited, range(8), chunksize=1)
            assert info.value.args[0] == 2006
            assert isinstance(info.value, pymysql.err.OperationalError)
    finally:
        _shared.clear()
    assert_parent_session_intact(conn, session)


# A child that closes the connection, or simply exits (the interpreter's
# shutdown frees the inherited connection): with plain PyMySQL, COM_QUIT or the
# close of the shared socket ends the parent's session.
_CHILD_SCRIPT = textwrap.dedent(
    """
    import gc, json, os, sys
    if sys.argv[1] == "guarddb":
        import guarddb.pymysql as pymysql
    else:
        import pymysql
    conn = pymysql.connect(**json.loads(sys.argv[3]))

    def session():
        cursor = conn.cursor()
        cursor.execute("SELECT CONNECTION_ID()")
        return cursor.fetchall()[0][0]

    before = session()
    if sys.argv[2] == "drop-unread":
        unread = conn.cursor(pymysql.cursors.SSCursor)
        unread.execute("SELECT seq FROM seq_1_to_1000")
        unread.fetchone()
    pid = os.fork()
    if pid == 0:
        if sys.argv[2] == "close":
            conn.close()
        elif sys.argv[2] == "drop-unread":  # PyMySQL's SSCursor reads the rest when freed
            del unread
            gc.collect()
        sys.exit(0)  # a normal exit: atexit, finalizers, garbage collection
    os.waitpid(pid, 0)
    if sys.argv[2] == "drop-unread":
        assert [row[0] for row in unread.fetchall()] == list(range(2, 1001))
    try:
        after = session()
    except pymysql.err.Error as exc:
        print(json.dumps({"error": exc.args[0]}))
    else:
        print(json.dumps({"same_session": before == after}))
    """
)


def _child_scenario(driver, what, connect_args):
    done = subprocess.run(
        [sys.executable, "-c", _CHILD_SCRIPT, driver, what, json.dumps(connect_args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": child_pythonpath()},
    )
    assert done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("what", ["close", "exit", "drop-unread"])
def test_a_child_that_closes_or_exits_leaves_the_parent_alone(connect_args, what):
    assert _child_scenario("guarddb", what, connect_args) == {"same_session": True}


def test_plain_pymysql_loses_the_parent_session_when_a_child_closes(connect_args):
    assert _child_scenario("plain", "close", connect_args)["error"] in (2006, 2013)


def _reading(thread):
    """True once ``thread`` is inside PyMySQL's socket read, under its buffered reader.

    The buffered reader (C) holds its lock while it calls the socket's
    readinto() (Python): that frame, called from PyMySQL's _read_bytes().
    """
    frame = sys._current_frames().get(thread.ident)
    return (
        frame is not None
        and frame.f_code.co_name == "readinto"
        and frame.f_back is not None
        and frame.f_back.f_code.co_name == "_read_bytes"
    )


@pytest.mark.parametrize("what", ["close", "reconnect"])
def test_a_parent_thread_reading_at_fork_does_not_hang_the_child(
    connect_args, pymysql_connect, what
):
    # The thread holds PyMySQL's buffered reader's lock, in the child for good:
    # closing that reader there (as PyMySQL's close does) would wait forever.
    # (Dropping the connection there cannot free it: CPython leaks what the
    # frames of the threads that do not exist in the child referred to.)
    on_fork = "reconnect" if what == "reconnect" else "raise"
    holder = [guarddb.pymysql.connect(**connect_args, on_fork=on_fork, autocommit=True)]
    session = query(holder[0])
    blocked = Blocked(holder[0], pymysql_connect(), locking=False)  # no lock: reconnect allowed
    try:
        wait_until(lambda: _reading(blocked.thread))

        def child():
            if what == "close":
                holder[0].close()
                return "closed"
            return query(holder[0], "SELECT 6 * 7")[0][0]

        expected = {"close": "closed", "reconnect": 42}[what]
        assert in_forked_child(child, timeout=20) == expected
    finally:
        blocked.release()
    assert_parent_session_intact(holder[0], session)
    holder[0].close()
