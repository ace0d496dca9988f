"""Fork: the child gets ForkedConnectionError; nothing it does reaches the parent's session."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import weakref

import MySQLdb
import pytest

import guarddb
from guarddb import ForkedConnectionError

from .helpers import ChildError, in_forked_child

CONNECTION_ID = "SELECT CONNECTION_ID()"


def query(conn, sql=CONNECTION_ID):
    cursor = conn.cursor()
    cursor.execute(sql)
    return cursor.fetchall()


def assert_parent_session_intact(conn, session):
    assert query(conn) == session
    assert query(conn, "SELECT 41 + 1") == ((42,),)


def test_child_use_is_forked_connection_error(connect):
    conn = connect()
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
        lambda conn: conn.ping(),
        lambda conn: conn.autocommit(True),
        lambda conn: conn.cursor().execute("SELECT 1"),
    ],
    ids=["commit", "rollback", "ping", "autocommit", "execute"],
)
def test_every_server_call_in_the_child_is_refused(connect, call):
    conn = connect()
    with pytest.raises(ChildError, match="ForkedConnectionError"):
        in_forked_child(lambda: call(conn))


def test_buffered_rows_fetched_in_the_child_are_refused(connect):
    conn = connect()
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    with pytest.raises(ChildError, match="ForkedConnectionError"):
        in_forked_child(cursor.fetchall)
    assert cursor.fetchall() == ((1,),)


def test_the_inherited_socket_points_at_dev_null_in_the_child(connect):
    conn = connect()
    fd = conn.fileno()
    assert in_forked_child(lambda: os.readlink(f"/proc/self/fd/{fd}")) == "/dev/null"
    assert os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")


def test_child_close_raises_nothing_and_leaves_the_parent_alone(connect):
    conn = connect()
    session = query(conn)
    cursor = conn.cursor()
    cursor.execute("SELECT 1")

    def close_all():
        cursor.close()
        conn.close()
        return "closed"

    assert in_forked_child(close_all) == "closed"
    assert_parent_session_intact(conn, session)


def test_child_dropping_the_connection_leaves_the_parent_alone(connect_args):
    holder = [guarddb.connect(**connect_args)]
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


def test_grandchild_is_refused_too_and_nobody_disturbs_the_parent(connect):
    conn = connect()
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


_shared = {}


def _use_inherited(number):
    cursor = _shared["conn"].cursor()
    cursor.execute("SELECT %s", (number,))
    return cursor.fetchall()


def test_multiprocessing_fork_children_get_the_error_pickled_back(connect):
    conn = _shared["conn"] = connect()
    session = query(conn)
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            with pytest.raises(ForkedConnectionError) as info:
                pool.map(_use_inherited, range(8), chunksize=1)
            assert info.value.args[0] == 2006
    finally:
        _shared.clear()
    assert_parent_session_intact(conn, session)


# A child that simply exits runs the interpreter's shutdown, which frees the
# inherited connection (COM_QUIT on the shared socket with plain mysqlclient).
_EXIT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    DRIVER = sys.argv[1]
    if DRIVER == "guarddb":
        import guarddb as MySQLdb
    else:
        import MySQLdb
    args = json.loads(sys.argv[2])
    conn = MySQLdb.connect(**args)

    def session():
        cursor = conn.cursor()
        cursor.execute("SELECT CONNECTION_ID()")
        return cursor.fetchall()[0][0]

    before = session()
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # a normal exit: atexit, finalizers, garbage collection
    os.waitpid(pid, 0)
    try:
        after = session()
    except MySQLdb.Error as exc:
        print(json.dumps({"error": exc.args[0]}))
    else:
        print(json.dumps({"same_session": before == after}))
    """
)


def _exit_scenario(driver, connect_args):
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, driver, json.dumps(connect_args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_child_that_simply_exits_leaves_the_parent_alone(connect_args):
    assert _exit_scenario("guarddb", connect_args) == {"same_session": True}


def test_plain_mysqlclient_loses_the_parent_session_when_a_child_exits(connect_args):
    assert _exit_scenario("plain", connect_args)["error"] in (2006, 2013)


def test_off_mode_still_neuters_the_socket(connect):
    conn = connect(guard="off")
    session = query(conn)

    def use_and_close():
        try:
            query(conn)
        except MySQLdb.OperationalError as exc:
            assert not isinstance(exc, guarddb.GuardError)
        conn.close()
        return "done"

    assert in_forked_child(use_and_close) == "done"
    assert_parent_session_intact(conn, session)
