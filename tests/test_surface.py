"""`import guarddb as MySQLdb`: the module surface code written for mysqlclient expects."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import MySQLdb
import MySQLdb.cursors
import pytest

import guarddb
import guarddb.cursors

SAME_OBJECTS = [
    "apilevel",
    "paramstyle",
    "version_info",
    "Binary",
    "Date",
    "Time",
    "Timestamp",
    "DateFromTicks",
    "TimeFromTicks",
    "TimestampFromTicks",
    "DBAPISet",
    "STRING",
    "BINARY",
    "NUMBER",
    "DATE",
    "TIME",
    "TIMESTAMP",
    "DATETIME",
    "ROWID",
    "FIELD_TYPE",
    "get_client_info",
    "string_literal",
    "debug",
    "constants",
    "converters",
    "times",
]


@pytest.mark.parametrize("name", SAME_OBJECTS)
def test_module_attributes_are_mysqlclients(name):
    assert getattr(guarddb, name) is getattr(MySQLdb, name)


def test_escape_functions_and_versions():
    assert guarddb.escape_string("it's") == MySQLdb._mysql.escape_string("it's")
    assert guarddb.string_literal("it's") == b"'it\\'s'"
    assert guarddb.version_info >= (2, 2, 0)
    assert isinstance(guarddb.__version__, str)
    assert guarddb.threadsafety == 1


def test_connect_aliases(connect_args):
    conn = guarddb.Connect(**connect_args)
    try:
        assert isinstance(conn, guarddb.Connection)
        assert isinstance(conn, MySQLdb.connections.Connection)
        assert guarddb.connect is guarddb.Connect
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["Cursor", "DictCursor", "SSCursor", "SSDictCursor"])
def test_cursor_classes_are_guarded_subclasses(name):
    cls = getattr(guarddb.cursors, name)
    assert issubclass(cls, getattr(MySQLdb.cursors, name))
    assert issubclass(cls, guarddb.cursors.GuardedCursorMixIn)


def test_mixins_are_offered():
    for name in (
        "BaseCursor",
        "CursorStoreResultMixIn",
        "CursorUseResultMixIn",
        "CursorTupleRowsMixIn",
        "CursorDictRowsMixIn",
    ):
        assert getattr(guarddb.cursors, name) is getattr(MySQLdb.cursors, name)


def test_dict_cursor_rows(connect):
    cursor = connect().cursor(guarddb.cursors.DictCursor)
    cursor.execute("SELECT 1 AS a, 'x' AS b")
    assert cursor.fetchall() == ({"a": 1, "b": "x"},)


class LoggingCursor(MySQLdb.cursors.Cursor):
    """A user's own cursor: overrides execute and fetchone, calls super()."""

    def execute(self, query, args=None):
        self.seen = query
        return super().execute(query, args)

    def fetchone(self):
        row = super().fetchone()
        return None if row is None else ("logged", *row)


def test_user_subclass_of_mysqldb_cursor_is_guarded_and_keeps_its_methods(connect):
    conn = connect(guard="strict")
    cursor = conn.cursor(LoggingCursor)
    assert isinstance(cursor, LoggingCursor)
    assert isinstance(cursor, guarddb.cursors.GuardedCursorMixIn)
    cursor.execute("SELECT 1")
    assert cursor.seen == "SELECT 1"
    assert cursor.fetchone() == ("logged", 1)
    cursor.execute("SELECT 2")
    from .helpers import in_thread

    with pytest.raises(guarddb.ThreadOwnershipError):
        in_thread(cursor.fetchone)
    with pytest.raises(guarddb.ThreadOwnershipError):
        in_thread(lambda: cursor.execute("SELECT 3"))


def test_cursorclass_keyword_takes_a_mysqldb_class(connect):
    conn = connect(cursorclass=MySQLdb.cursors.DictCursor)
    cursor = conn.cursor()
    assert isinstance(cursor, guarddb.cursors.GuardedCursorMixIn)
    cursor.execute("SELECT 1 AS a")
    assert cursor.fetchall() == ({"a": 1},)


def test_not_a_cursor_class_is_a_type_error(connect):
    with pytest.raises(TypeError, match="not a MySQLdb cursor class"):
        connect().cursor(dict)


_INSTALL = textwrap.dedent(
    """
    import importlib.util, json, sys
    import guarddb
    guarddb.install_as_MySQLdb()
    import MySQLdb
    import MySQLdb.cursors, MySQLdb.connections, MySQLdb.converters, MySQLdb.times
    from MySQLdb.constants import CLIENT, FIELD_TYPE, ER
    from MySQLdb import _exceptions
    import MySQLdb.constants.CR as CR
    conn = MySQLdb.connect(**json.loads(sys.argv[1]))
    cursor = conn.cursor(MySQLdb.cursors.SSCursor)
    print(json.dumps({
        "module": MySQLdb.__name__,
        "connection": type(conn).__module__,
        "sscursor": MySQLdb.cursors.SSCursor.__module__,
        "cursor": type(conn.cursor()).__module__,
        "converters": MySQLdb.converters.__name__,
        "times": MySQLdb.times.__name__,
        "client": CLIENT.__name__,
        "cr": CR.__name__,
        "exceptions": _exceptions.__name__,
        "guarded": isinstance(cursor, guarddb.cursors.GuardedCursorMixIn),
        "same_objects": [
            MySQLdb.OperationalError is guarddb.OperationalError,
            MySQLdb.connect is guarddb.connect,
            MySQLdb.GuardError is guarddb.GuardError,
            MySQLdb.version_info == guarddb.version_info,
        ],
        "in_dir": {"connect", "ForkedConnectionError"} <= set(dir(MySQLdb)),
        "spec": importlib.util.find_spec("MySQLdb").name,
    }))
    try:
        conn.cursor().execute("not_a_valid_statement")
    except guarddb.ProgrammingError as error:
        # How SQLAlchemy's own suite checks a driver (test_exception_wrapping_orig_accessors):
        # the exception's class comes from the module the dialect was given, by name.
        print(json.dumps(type(error).__module__.startswith(MySQLdb.__name__.split(".")[0])))
    import guarddb.mutex
    guarddb.mutex.install_as_MySQLdb()
    import MySQLdb as again
    print(json.dumps([again.__name__, again.threadsafety, again.connect is guarddb.mutex.connect]))
    """
)


def test_install_as_mysqldb(connect_args):
    done = subprocess.run(
        [sys.executable, "-c", _INSTALL, json.dumps(connect_args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    seen = json.loads(lines[0])
    assert json.loads(lines[1]) is True  # the driver's exceptions are MySQLdb's, by name
    assert json.loads(lines[2]) == ["MySQLdb", 2, True]  # guarddb.mutex's, the same way
    assert seen == {
        "same_objects": [True] * 4,
        "in_dir": True,
        "spec": "MySQLdb",
        "module": "MySQLdb",
        "connection": "guarddb.connections",
        "sscursor": "guarddb.cursors",
        "cursor": "guarddb.cursors",
        "converters": "MySQLdb.converters",
        "times": "MySQLdb.times",
        "client": "MySQLdb.constants.CLIENT",
        "cr": "MySQLdb.constants.CR",
        "exceptions": "MySQLdb._exceptions",
        "guarded": True,
    }


class QueryLoggingCursor(MySQLdb.cursors.Cursor):
    """Overrides a private statement internal: guarddb must keep it."""

    def _query(self, q):
        self.logged = q
        return super()._query(q)


def test_user_override_of_statement_internals_is_kept(connect):
    cursor = connect().cursor(QueryLoggingCursor)
    cursor.execute("SELECT 1")
    assert cursor.logged == b"SELECT 1" and cursor.fetchall() == ((1,),)
