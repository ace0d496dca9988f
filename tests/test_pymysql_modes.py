"""guarddb.pymysql's modes: exclusive (default), strict, off — DESIGN.md's table, on PyMySQL."""

from __future__ import annotations

import collections
import threading
import warnings

import pymysql
import pytest

import guarddb.pymysql
from guarddb.pymysql import (
    ConcurrentUseError,
    GuardError,
    PendingResultError,
    ThreadOwnershipError,
)

from .helpers import Blocked, in_thread, run_python, run_threads


def rows(conn, sql="SELECT 1", args=None):
    cursor = conn.cursor()
    cursor.execute(sql, args)
    return cursor.fetchall()


def test_default_mode_is_exclusive(pymysql_connect):
    conn = pymysql_connect()
    assert conn.guard_mode == "exclusive"
    assert isinstance(conn, pymysql.connections.Connection)
    assert type(conn).__module__ == "guarddb.pymysql.connections"


# -- exclusive -----------------------------------------------------------------------------


def test_exclusive_allows_another_thread_when_calls_do_not_overlap(pymysql_connect):
    conn = pymysql_connect()
    assert rows(conn) == ((1,),)
    assert in_thread(lambda: rows(conn, "SELECT 2")) == ((2,),)
    assert rows(conn, "SELECT 3") == ((3,),)


def test_exclusive_refuses_an_overlapping_call(pymysql_connect):
    conn = pymysql_connect()
    blocked = Blocked(conn, pymysql_connect())
    try:
        with pytest.raises(ConcurrentUseError) as info:
            rows(conn)
        message = str(info.value)
        assert "BlockedCaller" in message and "MainThread" in message
        assert "conftest.py:" in message  # where the connection was opened (the fixture)
        assert "guard='mutex'" in message
        for call in (conn.commit, conn.rollback, conn.begin, conn.ping, lambda: conn.kill(1)):
            with pytest.raises(ConcurrentUseError):
                call()
    finally:
        blocked.release()
    assert rows(conn, "SELECT 4") == ((4,),)  # the session survived


def test_exclusive_refuses_fetching_rows_another_thread_executed(pymysql_connect):
    conn = pymysql_connect()
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    for fetch in (cursor.fetchone, cursor.fetchall, lambda: cursor.fetchmany(1), cursor.__next__):
        with pytest.raises(ConcurrentUseError, match="executed by thread 'MainThread'"):
            in_thread(fetch)
    with pytest.raises(ConcurrentUseError):
        in_thread(lambda: cursor.scroll(0, "absolute"))
    in_thread(lambda: cursor.execute("SELECT 2"))  # executing moves ownership
    with pytest.raises(ConcurrentUseError):
        cursor.fetchall()
    cursor.execute("SELECT 5")
    assert cursor.fetchall() == ((5,),)


def test_a_closed_cursor_s_rows_still_belong_to_their_thread(pymysql_connect):
    # PyMySQL keeps a closed cursor's buffered rows readable: by their thread only.
    conn = pymysql_connect()
    cursor = conn.cursor()
    cursor.execute("SELECT 1 UNION SELECT 2")
    cursor.close()
    with pytest.raises(ConcurrentUseError):
        in_thread(cursor.fetchall)
    assert cursor.fetchall() == ((1,), (2,))


def test_sharing_one_cursor_between_threads_never_gives_wrong_rows(pymysql_connect):
    # Plain PyMySQL: InterfaceError(0, ''), "Packet sequence number wrong", other
    # threads' rows.  guarddb: every answer a thread gets is its own, or a GuardError.
    conn = pymysql_connect()
    cursor = conn.cursor()
    wrong, unexpected, refused = [], [], []
    barrier = threading.Barrier(8)

    def work(number):
        barrier.wait()
        for i in range(150):
            try:
                cursor.execute("SELECT %s, %s", (number, i))
                got = cursor.fetchall()
                if got != ((number, i),):
                    wrong.append((number, i, got))
            except GuardError:
                refused.append(number)
            except Exception as exc:
                unexpected.append(exc)

    run_threads(work, 8)
    assert wrong == [] and unexpected == []
    assert refused  # they did collide
    assert rows(conn, "SELECT 6") == ((6,),)  # the session survived


def test_closing_a_cursor_while_another_thread_is_inside_closes_it_locally(pymysql_connect):
    conn = pymysql_connect()
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    blocked = Blocked(conn, pymysql_connect())
    try:
        cursor.close()  # closed on the client side: nothing of it is on the server
        assert cursor.connection is None
    finally:
        blocked.release()
    assert rows(conn, "SELECT 2") == ((2,),)


def test_conn_close_overlapping_another_threads_call_is_refused(pymysql_connect):
    conn = pymysql_connect()
    blocked = Blocked(conn, pymysql_connect())
    try:
        with pytest.raises(ConcurrentUseError):
            conn.close()
    finally:
        blocked.release()
    conn.close()
    assert not conn.open


# -- strict --------------------------------------------------------------------------------


def test_strict_refuses_any_other_thread(pymysql_connect):
    conn = pymysql_connect(guard="strict")
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    with pytest.raises(ThreadOwnershipError) as info:
        in_thread(lambda: rows(conn), name="Intruder")
    assert "Intruder" in str(info.value) and "MainThread" in str(info.value)
    assert "adopt()" in str(info.value)
    for call in (cursor.fetchall, conn.commit, conn.ping, lambda: conn.select_db("test")):
        with pytest.raises(ThreadOwnershipError):
            in_thread(call)
    with pytest.raises(ThreadOwnershipError):
        in_thread(cursor.nextset)
    assert cursor.fetchall() == ((1,),)


def test_strict_lets_any_thread_close_and_keeps_the_owner(pymysql_connect):
    conn = pymysql_connect(guard="strict")
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    in_thread(cursor.close, name="Closer")
    assert cursor.connection is None
    assert rows(conn, "SELECT 2") == ((2,),)  # still the owner's
    with pytest.raises(ThreadOwnershipError):
        in_thread(lambda: rows(conn))
    in_thread(conn.close, name="Closer")
    assert not conn.open


def test_strict_adopt_moves_ownership(pymysql_connect):
    conn = pymysql_connect(guard="strict")

    def adopt_and_query():
        conn.adopt()
        return rows(conn, "SELECT 7")

    assert in_thread(adopt_and_query) == ((7,),)
    with pytest.raises(ThreadOwnershipError):
        rows(conn)
    conn.adopt()
    assert rows(conn) == ((1,),)


def test_strict_disown_leaves_the_connection_to_nobody(pymysql_connect):
    conn = pymysql_connect(guard="strict")
    conn.disown()
    with pytest.raises(ThreadOwnershipError):
        rows(conn)
    in_thread(conn.adopt)
    with pytest.raises(ThreadOwnershipError):
        rows(conn)
    conn.adopt()
    assert rows(conn) == ((1,),)


def test_adopt_is_refused_while_another_thread_is_inside(pymysql_connect):
    conn = pymysql_connect()
    blocked = Blocked(conn, pymysql_connect())
    try:
        with pytest.raises(ConcurrentUseError, match="adopt"):
            conn.adopt()
    finally:
        blocked.release()
    conn.adopt()


def test_adopt_is_refused_while_another_thread_holds_an_unread_result(pymysql_connect):
    conn = pymysql_connect(guard="strict")
    cursor = conn.cursor(guarddb.pymysql.cursors.SSCursor)
    cursor.execute("SELECT * FROM seq_1_to_10")
    cursor.fetchone()
    with pytest.raises(PendingResultError, match="adopt"):
        in_thread(conn.adopt)
    cursor.close()
    in_thread(conn.adopt)


# -- off -----------------------------------------------------------------------------------


def test_off_checks_nothing(pymysql_connect):
    conn = pymysql_connect(guard="off")
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    assert in_thread(cursor.fetchall) == ((1,),)
    ss = conn.cursor(guarddb.pymysql.cursors.SSCursor)
    ss.execute("SELECT * FROM seq_1_to_10")
    ss.fetchone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert rows(conn) == ((1,),)  # what PyMySQL does: drops the unread rows, warning
    assert "left incomplete" in str(caught[0].message)
    assert ss.fetchone() is None  # the rest is gone: the misuse guarddb refuses otherwise


# -- user cursor classes -------------------------------------------------------------------


class LoggingCursor(pymysql.cursors.Cursor):
    """A user's own cursor: overrides execute and fetchone, calls super()."""

    def execute(self, query, args=None):
        self.seen = query
        return super().execute(query, args)

    def fetchone(self):
        row = super().fetchone()
        return None if row is None else ("logged", *row)


class LoggingSSCursor(pymysql.cursors.SSDictCursor):
    def fetchone(self):
        row = super().fetchone()
        return None if row is None else {"logged": True, **row}


@pytest.mark.parametrize("mode", ["strict", "mutex"])
def test_a_user_cursor_class_is_guarded_and_keeps_its_methods(pymysql_connect, mode):
    conn = pymysql_connect(guard=mode)
    cursor = conn.cursor(LoggingCursor)
    assert isinstance(cursor, LoggingCursor)
    assert isinstance(cursor, guarddb.pymysql.cursors.GuardedCursorMixIn)
    cursor.execute("SELECT 1 UNION SELECT 2")
    assert cursor.seen == "SELECT 1 UNION SELECT 2"
    assert cursor.fetchone() == ("logged", 1)
    assert list(cursor) == [("logged", 2)]  # iteration goes through its own fetchone
    cursor.execute("SELECT 3")
    if mode == "strict":
        with pytest.raises(ThreadOwnershipError):
            in_thread(cursor.fetchone)
        with pytest.raises(ThreadOwnershipError):
            in_thread(lambda: cursor.execute("SELECT 4"))
    assert cursor.fetchone() == ("logged", 3)


def test_a_user_unbuffered_class_holds_the_connection_until_read_out(pymysql_connect):
    conn = pymysql_connect()
    cursor = conn.cursor(LoggingSSCursor)
    cursor.execute("SELECT seq FROM seq_1_to_3")
    assert cursor.fetchone() == {"logged": True, "seq": 1}
    with pytest.raises(PendingResultError):
        rows(conn)
    assert [row["seq"] for row in iter(cursor.fetchone, None)] == [2, 3]
    assert rows(conn) == ((1,),)


class OrderedDictCursor(pymysql.cursors.DictCursorMixin, pymysql.cursors.Cursor):
    """A user's class built from PyMySQL's mixin (its own _do_get_result and dict_type)."""

    dict_type = collections.OrderedDict


@pytest.mark.parametrize("mode", ["exclusive", "mutex"])
def test_a_user_class_with_its_own_statement_internals(pymysql_connect, mode):
    cursor = pymysql_connect(guard=mode).cursor(OrderedDictCursor)
    cursor.execute("SELECT 1 AS a, 2 AS b")
    row = cursor.fetchone()
    assert type(row) is collections.OrderedDict and list(row.items()) == [("a", 1), ("b", 2)]
    assert cursor.rowcount == 1 and cursor.description[1][0] == "b"


class MyDict(dict):
    pass


class GuardedDictSubclass(guarddb.pymysql.cursors.DictCursor):
    """A subclass of guarddb's own class (what ``pymysql.cursors.DictCursor`` is once
    installed): it inherits guarddb's statement internals, and must keep them."""

    dict_type = MyDict


class GuardedSSDictSubclass(guarddb.pymysql.cursors.SSDictCursor):
    dict_type = MyDict


@pytest.mark.parametrize("mode", ["exclusive", "strict", "mutex"])
@pytest.mark.parametrize("cursorclass", [GuardedDictSubclass, GuardedSSDictSubclass])
def test_a_subclass_of_a_guarded_dict_cursor_gives_its_dicts(pymysql_connect, mode, cursorclass):
    # PyMySQL's own suite, test_DictCursor.py's test_custom_dict, under install_as_pymysql().
    cursor = pymysql_connect(guard=mode).cursor(cursorclass)
    cursor.execute("SELECT seq AS n FROM seq_1_to_3")
    row = cursor.fetchone()
    assert type(row) is MyDict and row == {"n": 1}
    assert cursor.fetchall() in ([{"n": 2}, {"n": 3}], ({"n": 2}, {"n": 3}))
    cursor.execute("SELECT 4 AS n")
    assert list(cursor) == [{"n": 4}]
    assert cursor.description[0][0] == "n"


def _statement_results(conn, cursorclass):
    """What each statement leaves on the cursor, read by the thread that ran it."""
    cursor = conn.cursor(cursorclass)
    cursor.execute("CREATE TEMPORARY TABLE seen (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    seen = []
    for sql, args in (
        ("SELECT seq AS n, 'x' AS s FROM seq_1_to_3", None),
        ("INSERT INTO seen (v) VALUES (%s), (%s)", (7, 8)),
        ("UPDATE seen SET v = v + 1 WHERE v > %s", (0,)),
        ("SELECT seq / 0 AS q FROM seq_1_to_2", None),  # a warning per row
        ("SELECT 1 AS one", None),
    ):
        returned = cursor.execute(sql, args)
        before = (returned, cursor.rowcount, cursor.lastrowid, cursor.description)
        first = cursor.fetchone()
        rest = list(cursor.fetchall())
        after = (cursor.rownumber, cursor.warning_count, cursor.rowcount)
        seen.append((before, first, rest, after))
    cursor.close()
    return seen


@pytest.mark.parametrize("mode", ["exclusive", "strict", "mutex", "off"])
@pytest.mark.parametrize(
    "cursorclass",
    [pymysql.cursors.Cursor, pymysql.cursors.SSCursor, pymysql.cursors.DictCursor],
)
def test_a_statement_leaves_what_pymysql_s_leaves(
    pymysql_connect, plain_pymysql_connect, mode, cursorclass
):
    # execute() runs PyMySQL's _query() written out: over the cursor's attributes,
    # or in mutex mode over its per-thread slots; DictCursor calls its own steps.
    guarded = _statement_results(pymysql_connect(guard=mode), cursorclass)
    assert guarded == _statement_results(plain_pymysql_connect(), cursorclass)


def test_cursorclass_keyword_takes_a_pymysql_class(pymysql_connect):
    conn = pymysql_connect(cursorclass=pymysql.cursors.DictCursor)
    cursor = conn.cursor()
    assert type(cursor) is guarddb.pymysql.cursors.DictCursor
    cursor.execute("SELECT 1 AS a")
    assert cursor.fetchall() == [{"a": 1}]
    with conn.cursor(pymysql.cursors.SSCursor) as ss:
        assert type(ss) is guarddb.pymysql.cursors.SSCursor


def test_not_a_cursor_class_is_a_type_error(pymysql_connect, connect_args):
    with pytest.raises(TypeError, match="not a PyMySQL cursor class"):
        pymysql_connect().cursor(dict)
    with pytest.raises(TypeError, match="not a PyMySQL cursor class"):
        guarddb.pymysql.connect(cursorclass=dict, **connect_args)  # before it connects


class QueryLoggingCursor(pymysql.cursors.Cursor):
    """Overrides a private statement internal: guarddb must keep it."""

    def _query(self, q):
        self.logged = q
        return super()._query(q)


def test_user_override_of_statement_internals_is_kept(pymysql_connect):
    cursor = pymysql_connect().cursor(QueryLoggingCursor)
    cursor.execute("SELECT %s", (1,))
    assert cursor.logged == "SELECT 1" and cursor.fetchall() == ((1,),)


def test_a_plain_connection_with_a_guarded_cursor_class_is_unchecked(plain_pymysql_connect):
    conn = plain_pymysql_connect()
    cursor = guarddb.pymysql.cursors.Cursor(conn)
    cursor.execute("SELECT 1")
    assert in_thread(cursor.fetchall) == ((1,),)


# -- choosing the mode ---------------------------------------------------------------------


def test_unknown_mode_is_a_value_error_listing_the_modes(connect_args):
    with pytest.raises(ValueError, match="'exclusive', 'strict', 'mutex', 'off'"):
        guarddb.pymysql.connect(guard="lenient", **connect_args)


def test_set_default_mode_is_shared_with_the_mysqldb_face(pymysql_connect):
    try:
        guarddb.pymysql.set_default_mode("strict")
        assert pymysql_connect().guard_mode == "strict"
        assert pymysql_connect(guard="off").guard_mode == "off"  # an explicit keyword wins
    finally:
        guarddb.pymysql.set_default_mode("exclusive")
    assert pymysql_connect().guard_mode == "exclusive"


def test_guard_settings_and_the_environment(pymysql_connect):
    conn = pymysql_connect(guard="mutex", mutex_timeout=2, max_idle=60, close_orphans=True)
    assert conn.guard_settings == {
        "guard": "mutex",
        "on_fork": "raise",
        "mutex_timeout": 2.0,
        "mutex_scope": "call",
        "max_idle": 60.0,
        "on_idle": "raise",
        "close_orphans": True,
        "cooperative": False,
    }
    done = run_python("import guarddb.pymysql as p; print(p.default_mode())", GUARDDB_MODE="strict")
    assert done.stdout.strip() == "strict", done.stderr
