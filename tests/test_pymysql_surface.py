"""`import guarddb.pymysql as pymysql`: PyMySQL's module surface; the two installers; no MySQLdb."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap

import pymysql
import pymysql.connections
import pymysql.cursors
import pytest

import guarddb.pymysql
import guarddb.pymysql.connections
import guarddb.pymysql.cursors

from .helpers import child_pythonpath
from .test_layout import MODULES, imports_of

SAME_OBJECTS = [
    "apilevel",
    "paramstyle",
    "version_info",
    "__version__",
    "VERSION",
    "VERSION_STRING",
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
    "NULL",
    "get_client_info",
    "thread_safe",
    "constants",
    "converters",
    "err",
    "times",
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "MySQLError",
]


@pytest.mark.parametrize("name", SAME_OBJECTS)
def test_module_attributes_are_pymysqls(name):
    assert getattr(guarddb.pymysql, name) is getattr(pymysql, name)


def test_connect_and_the_guarddb_names():
    assert guarddb.pymysql.connect is guarddb.pymysql.Connect is guarddb.pymysql.Connection
    assert issubclass(guarddb.pymysql.Connection, pymysql.connections.Connection)
    assert guarddb.pymysql.threadsafety == 1
    assert guarddb.pymysql.version_info >= (1, 4, 3)  # what Django asks of "mysqlclient"
    for name in (
        "GuardError",
        "live_connections",
        "on_violation",
        "remove_violation_hook",
        "set_defaults",
        "set_default_mode",
        "default_mode",
        "MODES",
        "Violation",
        "ConnectionInfo",
        "install_as_pymysql",
        "install_as_MySQLdb",
    ):
        assert getattr(guarddb.pymysql, name) is not None, name
    assert guarddb.pymysql.GuardError is guarddb.core.errors.GuardError
    # Anything else PyMySQL has is found too (present or future).
    assert guarddb.pymysql.Connection.OperationalError is pymysql.err.OperationalError
    namespace: dict = {}
    exec("from guarddb.pymysql import *", namespace)
    assert {"connect", "cursors", "ForkedConnectionError"} <= set(namespace)


@pytest.mark.parametrize("name", ["Cursor", "DictCursor", "SSCursor", "SSDictCursor"])
def test_cursor_classes_are_guarded_subclasses(name):
    cls = getattr(guarddb.pymysql.cursors, name)
    assert issubclass(cls, getattr(pymysql.cursors, name))
    assert issubclass(cls, guarddb.pymysql.cursors.GuardedCursorMixIn)
    assert cls.__module__ == "guarddb.pymysql.cursors"
    assert guarddb.pymysql.cursors.guarded_class(getattr(pymysql.cursors, name)) is cls


def test_pymysql_module_names_are_found_and_set_through_the_faces():
    assert guarddb.pymysql.cursors.DictCursorMixin is pymysql.cursors.DictCursorMixin
    assert guarddb.pymysql.cursors.RE_INSERT_VALUES is pymysql.cursors.RE_INSERT_VALUES
    assert guarddb.pymysql.connections.Connection is guarddb.pymysql.Connection
    assert guarddb.pymysql.connections.MySQLResult is pymysql.connections.MySQLResult
    # PyMySQL's packet dump switch, set on the face, is PyMySQL's own.
    assert guarddb.pymysql.connections.DEBUG is False
    guarddb.pymysql.connections.DEBUG = True
    try:
        assert pymysql.connections.DEBUG is True
    finally:
        del guarddb.pymysql.connections.DEBUG  # as mock.patch restores a module global
        pymysql.connections.DEBUG = False
    assert "DEBUG" not in vars(guarddb.pymysql.connections)
    assert "MySQLResult" in dir(guarddb.pymysql.connections)


def test_pymysql_submodules_under_guarddb_s_name():
    import guarddb.pymysql.constants.CLIENT as client
    from guarddb.pymysql.err import OperationalError

    assert client is pymysql.constants.CLIENT
    assert OperationalError is pymysql.err.OperationalError


def test_ping_keeps_pymysqls_signature():
    # SQLAlchemy's pymysql dialect reads it to decide what to pass to ping().
    ours = inspect.signature(guarddb.pymysql.Connection.ping).parameters["reconnect"]
    theirs = inspect.signature(pymysql.connections.Connection.ping).parameters["reconnect"]
    assert ours.default == theirs.default


def test_dict_and_unbuffered_cursors(pymysql_connect):
    conn = pymysql_connect()
    with conn.cursor(guarddb.pymysql.cursors.DictCursor) as cursor:
        cursor.execute("SELECT 1 AS a, 'x' AS b")
        assert cursor.fetchall() == [{"a": 1, "b": "x"}]
    with conn.cursor(guarddb.pymysql.cursors.SSDictCursor) as cursor:
        cursor.execute("SELECT seq AS n FROM seq_1_to_3")
        assert cursor.fetchmany(2) == [{"n": 1}, {"n": 2}]
        assert cursor.fetchall() == [{"n": 3}]
    with conn as same:
        assert same is conn
    assert not conn.open


def test_what_pymysql_says_stays_the_same(pymysql_connect, plain_pymysql_connect):
    """Misuse PyMySQL itself reports is reported the same (its own classes and messages)."""

    def outcomes(conn):
        seen = []
        cursor = conn.cursor()
        for step in (
            lambda: cursor.fetchone(),  # never executed
            lambda: cursor.execute("SELEKT 1"),
            lambda: cursor.execute("SELECT %s", (1, 2)),
            lambda: cursor.scroll(1, "sideways"),
            lambda: cursor.execute("SELECT 1") and cursor.scroll(5),
            lambda: cursor.close() or cursor.execute("SELECT 1"),
            lambda: conn.close() or conn.ping(),
            lambda: conn.close(),
        ):
            try:
                seen.append(("ok", step()))
            except Exception as exc:
                seen.append((type(exc).__name__, str(exc)[:40]))
        return seen

    assert outcomes(pymysql_connect()) == outcomes(plain_pymysql_connect())


# -- the installers, in fresh interpreters -------------------------------------------------


def run(code: str, connect_args, **env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), json.dumps(connect_args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": child_pythonpath(), **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


_INSTALL_AS_PYMYSQL = """
    import importlib, json, sys, threading
    import pymysql as plain  # imported before: PyMySQL's own, as it was
    import guarddb.pymysql
    guarddb.pymysql.install_as_pymysql()
    import pymysql, pymysql.connections, pymysql.cursors, pymysql.err, pymysql.converters
    from pymysql.constants import CLIENT
    from pymysql import cursors

    conn = pymysql.connect(**json.loads(sys.argv[1]))
    ss = conn.cursor(pymysql.cursors.SSCursor)
    ss.execute("SELECT 1 UNION SELECT 2")
    try:
        conn.cursor().execute("SELECT 3")
        pending = None
    except pymysql.err.ProgrammingError as exc:
        pending = type(exc).__name__
    ss.fetchall()

    class Mine(pymysql.cursors.DictCursor):  # a user's class, written against pymysql
        pass

    mine = conn.cursor(Mine)
    mine.execute("SELECT 1 AS a")
    foreign = []

    def other():
        try:
            mine.fetchall()
        except Exception as exc:
            foreign.append(type(exc).__name__)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()

    # A submodule not in sys.modules is found in PyMySQL's package directory.
    del sys.modules["pymysql.optionfile"]
    optionfile = importlib.import_module("pymysql.optionfile")
    # What SQLAlchemy's dialects do with the module they were given.
    flags = __import__(pymysql.__name__ + ".constants.CLIENT").constants.CLIENT
    print(json.dumps({
        "name": pymysql.__name__,
        "same_face": pymysql.connect is guarddb.pymysql.connect,
        "before": plain.connect is plain.connections.Connection,
        "connection": type(conn).__module__,
        "cursors": pymysql.cursors.__name__,
        "connections": pymysql.connections.__name__,
        "sscursor": type(ss).__module__,
        "pending": pending,
        "mine": [type(mine).__name__, foreign, mine.fetchall()],
        "err": pymysql.err.__name__,
        "converters": pymysql.converters.__name__,
        "client": CLIENT.__name__,
        "flags": flags.FOUND_ROWS,
        "optionfile": optionfile.__file__ == plain.optionfile.__file__,
        "operational": pymysql.OperationalError is pymysql.err.OperationalError,
        "path": pymysql.__path__ == plain.__path__,
    }))
"""


def test_install_as_pymysql(connect_args):
    seen = run(_INSTALL_AS_PYMYSQL, connect_args)
    assert seen == {
        "name": "pymysql",
        "same_face": True,
        "before": True,
        "connection": "guarddb.pymysql.connections",
        "cursors": "guarddb.pymysql.cursors",
        "connections": "guarddb.pymysql.connections",
        "sscursor": "guarddb.pymysql.cursors",
        "pending": "PendingResultError",
        "mine": ["Mine", ["ConcurrentUseError"], [{"a": 1}]],
        "err": "pymysql.err",
        "converters": "pymysql.converters",
        "client": "pymysql.constants.CLIENT",
        "flags": 2,
        "optionfile": True,
        "operational": True,
        "path": True,
    }


_INSTALL_AS_MYSQLDB = """
    import json, os, sys
    args = json.loads(sys.argv[1])
    if os.environ.get("IMPORT_MYSQLCLIENT_FIRST"):
        import MySQLdb, MySQLdb.converters  # mysqlclient's, left in sys.modules
    import guarddb.pymysql
    guarddb.pymysql.install_as_MySQLdb()
    import MySQLdb
    import MySQLdb.cursors, MySQLdb.connections, MySQLdb.converters
    from MySQLdb.constants import CLIENT, FIELD_TYPE

    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": args["database"],
            "USER": args["user"],
            "HOST": args.get("unix_socket") or args.get("host", ""),
            "PORT": str(args.get("port", "")),
            "PASSWORD": args.get("password", ""),
        }},
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 6 * 7")
        answer = cursor.fetchone()[0]
    raw = connection.connection
    print(json.dumps({
        "module": MySQLdb.__name__,
        "connection": type(raw).__module__,
        "guarded": raw.guard_mode,
        "cursors": MySQLdb.cursors.__name__,
        "converters": MySQLdb.converters.__name__,
        "client": CLIENT.__name__,
        "field_type": FIELD_TYPE.__name__,
        "answer": answer,
        "version": MySQLdb.version_info >= (1, 4, 3),
    }))
"""


@pytest.mark.parametrize("mysqlclient_first", [False, True], ids=["alone", "after-mysqlclient"])
def test_install_as_mysqldb_is_djangos_route(connect_args, mysqlclient_first):
    pytest.importorskip("django", reason="Django (guarddb's test extra)")
    env = {"IMPORT_MYSQLCLIENT_FIRST": "1"} if mysqlclient_first else {}
    seen = run(_INSTALL_AS_MYSQLDB, connect_args, **env)
    assert seen == {
        "module": "pymysql",
        "connection": "guarddb.pymysql.connections",
        "guarded": "exclusive",
        "cursors": "guarddb.pymysql.cursors",
        "converters": "pymysql.converters",
        "client": "pymysql.constants.CLIENT",
        "field_type": "pymysql.constants.FIELD_TYPE",
        "answer": 42,
        "version": True,
    }


# -- without mysqlclient -------------------------------------------------------------------

_WITHOUT_MYSQLDB = """
    import json, os, sys

    class NoMySQLdb:  # as if mysqlclient were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "MySQLdb" or name.startswith("MySQLdb."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NoMySQLdb())
    import guarddb
    import guarddb.pymysql as pymysql
    import guarddb.tools.pytest_plugin  # pytest loads it wherever guarddb is installed

    conn = pymysql.connect(**json.loads(sys.argv[1]))
    cursor = conn.cursor()
    cursor.execute("SELECT 6 * 7")
    answer = cursor.fetchone()[0]
    cursor.execute("SELECT 1")
    pid = os.fork()
    if pid == 0:
        try:
            cursor.fetchall()
        except pymysql.ForkedConnectionError:
            os._exit(7)
        os._exit(0)
    child = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    try:
        guarddb.connect
    except ImportError as exc:
        missing = str(exc)
    namespace = {}
    exec("from guarddb import *", namespace)
    print(json.dumps({
        "answer": answer,
        "child": child,
        "missing": missing,
        "neutral": guarddb.live_connections()[0].server_thread_id == conn.thread_id(),
        "guard_error": issubclass(pymysql.ForkedConnectionError, guarddb.GuardError),
        "hasattr": hasattr(guarddb, "nothing_of_the_sort"),
        "star": sorted(name for name in namespace if name in ("connect", "set_defaults")),
        "mysqldb": sorted(m for m in sys.modules if m.split(".")[0] == "MySQLdb"),
    }))
"""


def test_guarddb_pymysql_needs_no_mysqlclient(connect_args):
    seen = run(_WITHOUT_MYSQLDB, connect_args)
    missing = seen.pop("missing")
    assert "pip install 'guarddb[mysqlclient]'" in missing and "guarddb.connect" in missing
    assert seen == {
        "answer": 42,
        "child": 7,
        "neutral": True,
        "guard_error": True,
        "hasattr": False,
        "star": ["set_defaults"],
        "mysqldb": [],
    }


def test_pymysql_s_layer_and_face_import_no_mysqldb():
    for name in MODULES:
        if name.startswith(("guarddb.pymysql", "guarddb.drivers.pymysql")):
            wrong = {
                module
                for module in imports_of(name)
                if module.split(".")[0] == "MySQLdb"
                or module.startswith("guarddb.drivers.mysqldb")
                or module in ("guarddb", "guarddb.connections", "guarddb.cursors", "guarddb.errors")
            }
            assert not wrong, f"{name} imports {wrong}"


_SQLALCHEMY = """
    import json, sys, threading

    class NoMySQLdb:  # SQLAlchemy's CLIENT flags must come from PyMySQL's package
        def find_spec(self, name, path=None, target=None):
            if name == "MySQLdb" or name.startswith("MySQLdb."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NoMySQLdb())
    import guarddb.pymysql
    guarddb.pymysql.install_as_pymysql()
    import sqlalchemy
    from guarddb.contrib.sqlalchemy import guard_engine

    args = json.loads(sys.argv[1])
    url = sqlalchemy.engine.URL.create(
        "mysql+pymysql", username=args["user"], password=args.get("password"),
        host=args.get("host"), port=args.get("port"), database=args["database"],
        query={"unix_socket": args["unix_socket"]} if "unix_socket" in args else {},
    )
    engine = guard_engine(sqlalchemy.create_engine(
        url, pool_size=2, pool_pre_ping=True, connect_args={"guard": "strict"}
    ))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TEMPORARY TABLE IF NOT EXISTS t (id INT, v INT)")
    wrong = []

    def work(n):
        for i in range(30):
            with engine.connect() as conn:  # checkout: adopted by this thread (strict)
                if conn.exec_driver_sql("SELECT %s", (n * 100 + i,)).scalar() != n * 100 + i:
                    wrong.append((n, i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS same_value (id INT, v INT)")
        conn.exec_driver_sql("DELETE FROM same_value")
        conn.exec_driver_sql("INSERT INTO same_value VALUES (1, 1)")
        # FOUND_ROWS (SQLAlchemy's client flag): a row matched, though unchanged, counts.
        matched = conn.exec_driver_sql("UPDATE same_value SET v = 1 WHERE id = 1").rowcount
    print(json.dumps({
        "wrong": wrong,
        "connection": type(raw).__module__,
        "mode": raw.guard_mode,
        "matched": matched,
    }))
"""


def test_sqlalchemy_mysql_pymysql_with_install_as_pymysql_and_guard_engine(connect_args):
    pytest.importorskip("sqlalchemy", reason="SQLAlchemy (guarddb's test extra)")
    assert run(_SQLALCHEMY, connect_args) == {
        "wrong": [],
        "connection": "guarddb.pymysql.connections",
        "mode": "strict",
        "matched": 1,
    }
