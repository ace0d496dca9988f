"""Bad input gives exactly the exception mysqlclient gives."""

from __future__ import annotations

from typing import Any, Callable

import MySQLdb
import pytest

import guarddb
from guarddb.tools.server import PrivateServer


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("returned", fn())
    except Exception as exc:  # the point is to compare whatever is raised
        return (type(exc), exc.args)


def same_as_plain(make: Callable[[Any], Callable[[], Any]]) -> Any:
    """Run ``make(module)()`` with mysqlclient and with guarddb; both outcomes must match."""
    plain = outcome(make(MySQLdb))
    guarded = outcome(make(guarddb))
    assert guarded == plain
    return guarded


@pytest.mark.parametrize(
    "overrides",
    [
        {"unix_socket": "/nonexistent/mysqld.sock"},
        {"user": "nobody", "password": "wrong"},
        {"database": "no_such_database"},
        {"charset": "no-such-charset"},
        {"no_such_keyword": 1},
        {"connect_timeout": "soon"},
    ],
    ids=["socket", "password", "database", "charset", "keyword", "timeout-type"],
)
def test_bad_connect_arguments(connect_args, overrides):
    result = same_as_plain(lambda m: lambda: m.connect(**{**connect_args, **overrides}))
    assert result[0] != "returned"


def test_bad_connect_leaks_no_guard_slot(connect_args):
    import gc

    from guarddb.core.guard import live_slots

    gc.collect()
    before = live_slots()
    for _ in range(50):
        with pytest.raises(MySQLdb.OperationalError):
            guarddb.connect(**{**connect_args, "unix_socket": "/nonexistent/sock"})
    gc.collect()
    assert live_slots() == before


def _closed_connection(module, connect_args):
    conn = module.connect(**connect_args)
    conn.close()
    return conn


@pytest.mark.parametrize(
    "call",
    [
        lambda conn: conn.cursor().execute("SELECT 1"),
        lambda conn: conn.commit(),
        lambda conn: conn.rollback(),
        lambda conn: conn.ping(),
        lambda conn: conn.close(),
        lambda conn: conn.autocommit(True),
        lambda conn: conn.query("SELECT 1"),
        lambda conn: conn.select_db("test"),
        lambda conn: conn.show_warnings(),
    ],
    ids=[
        "execute",
        "commit",
        "rollback",
        "ping",
        "close",
        "autocommit",
        "query",
        "select_db",
        "show_warnings",
    ],
)
def test_closed_connection(connect_args, call):
    same_as_plain(lambda m: lambda: call(_closed_connection(m, connect_args)))


def _closed_cursor(module, connect_args):
    cursor = module.connect(**connect_args).cursor()
    cursor.execute("SELECT 1")
    cursor.close()
    return cursor


@pytest.mark.parametrize(
    "call",
    [
        lambda cursor: cursor.execute("SELECT 1"),
        lambda cursor: cursor.executemany("SELECT %s", [(1,)]),
        lambda cursor: cursor.fetchone(),
        lambda cursor: cursor.fetchall(),
        lambda cursor: cursor.fetchmany(2),
        lambda cursor: cursor.nextset(),
        lambda cursor: cursor.close(),
        lambda cursor: cursor.callproc("p"),
    ],
    ids=[
        "execute",
        "executemany",
        "fetchone",
        "fetchall",
        "fetchmany",
        "nextset",
        "close",
        "callproc",
    ],
)
def test_closed_cursor(connect_args, call):
    same_as_plain(lambda m: lambda: call(_closed_cursor(m, connect_args)))


@pytest.mark.parametrize(
    "call",
    [
        lambda cursor: cursor.fetchone(),
        lambda cursor: cursor.fetchall(),
        lambda cursor: cursor.scroll(1),
        lambda cursor: cursor.execute("SELECT %s, %s", (1,)),
        lambda cursor: cursor.execute("SELEKT 1"),
        lambda cursor: cursor.execute("SELECT * FROM no_such_table"),
    ],
    ids=[
        "fetch-before-execute",
        "fetchall-before-execute",
        "scroll",
        "too-few-args",
        "syntax",
        "no-table",
    ],
)
def test_misuse_of_a_cursor(connect_args, call):
    same_as_plain(lambda m: lambda: call(m.connect(**connect_args).cursor()))


def test_server_that_is_down():
    with PrivateServer() as server:
        plain = MySQLdb.connect(**server.connect_args)
        guarded = guarddb.connect(**server.connect_args)
        server.kill()
        plain_outcome = outcome(lambda: plain.cursor().execute("SELECT 1"))
        guarded_outcome = outcome(lambda: guarded.cursor().execute("SELECT 1"))
        assert guarded_outcome == plain_outcome
        assert plain_outcome[0] is MySQLdb.OperationalError
        assert outcome(guarded.ping) == outcome(plain.ping)
        assert same_as_plain(lambda m: lambda: m.connect(**server.connect_args))[0] is (
            MySQLdb.OperationalError
        )
        server.start()
        guarded.close()
        plain.close()
        fresh = guarddb.connect(**server.connect_args)
        cursor = fresh.cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchall() == ((1,),)
        fresh.close()
