"""guarddb's statement path against mysqlclient's own, statement by statement.

A buffered cursor whose statement steps are all mysqlclient's runs them inline in
``execute()`` (README "What it costs").  Each case here runs on a plain MySQLdb cursor
and on guarddb's, and everything a caller can see afterwards must be the same: the rows,
``description``, ``description_flags``, ``rowcount``, ``lastrowid``, ``rownumber``,
``warning_count`` (mysqlclient 2.3), ``_executed`` (Django reads it), the return value,
and the exception with its arguments.  A class that overrides one of the steps gets it
called, as mysqlclient calls it.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Callable, ClassVar

import MySQLdb
import MySQLdb.cursors
import pytest

import guarddb
import guarddb.cursors

#: What a caller can read off a cursor after a statement.
VISIBLE = (
    "description",
    "description_flags",
    "rowcount",
    "lastrowid",
    "rownumber",
    "warning_count",
    "_executed",
)

_tables = itertools.count()


def snapshot(cursor: Any, run: Callable[[Any], Any]) -> dict[str, Any]:
    """Run a statement, then read everything a caller can see of it."""
    seen: dict[str, Any] = {}
    try:
        seen["returned"] = run(cursor)
    except MySQLdb.MySQLError as error:
        seen["error"] = (type(error).__name__, error.args)
    except TypeError as error:
        seen["error"] = (type(error).__name__, str(error))
    except AssertionError:  # mysqlclient's own check (its message is pytest's, if any)
        seen["error"] = ("AssertionError",)
    for name in VISIBLE:
        seen[name] = getattr(cursor, name, "<absent>")
    if "error" not in seen:
        seen["rows"] = cursor.fetchall()
        seen["rownumber after fetch"] = cursor.rownumber
    return seen


def statements(table: str) -> list[tuple[str, Callable[[Any], Any]]]:
    """The cases: each a name and what it does to a cursor (on a fresh table)."""
    return [
        ("select", lambda c: c.execute("SELECT 1, 'a', NULL, 2.5")),
        ("select rows", lambda c: c.execute("SELECT seq, seq * 2 FROM seq_1_to_20")),
        ("empty", lambda c: c.execute("SELECT 1 FROM DUAL WHERE 0")),
        ("args tuple", lambda c: c.execute("SELECT %s, %s", (1, "x'y"))),
        ("args list", lambda c: c.execute("SELECT %s", [None])),
        ("args dict", lambda c: c.execute("SELECT %(a)s, %(b)s", {"a": 1, "b": b"z"})),
        ("bytes", lambda c: c.execute(b"SELECT 'bytes'")),
        ("bytearray", lambda c: c.execute(bytearray(b"SELECT 'bytearray'"))),
        ("bytes with args", lambda c: c.execute(b"SELECT %s", (3,))),
        ("unicode", lambda c: c.execute("SELECT 'żółw', %s", ("🐢",))),
        ("insert", lambda c: c.execute(f"INSERT INTO {table} (v) VALUES ('a'), ('b')")),
        ("insert args", lambda c: c.execute(f"INSERT INTO {table} (v) VALUES (%s)", ("c",))),
        ("update", lambda c: c.execute(f"UPDATE {table} SET v = 'z' WHERE id > 1")),
        ("warning", lambda c: c.execute("SELECT CAST('1x' AS SIGNED)")),
        ("warnings on insert", lambda c: c.execute(f"INSERT INTO {table} (n) VALUES ('9q')")),
        ("syntax error", lambda c: c.execute("SELEC 1")),
        ("unknown table", lambda c: c.execute("SELECT * FROM no_such_table_here")),
        ("duplicate", lambda c: c.execute(f"INSERT INTO {table} (id) VALUES (1)")),
        ("too few args", lambda c: c.execute("SELECT %s, %s", (1,))),
        ("args but no placeholder", lambda c: c.execute("SELECT 1", (1,))),
        ("not a string", lambda c: c.execute(12345)),
        ("show", lambda c: c.execute("SHOW VARIABLES LIKE 'version'")),
        (
            "executemany",
            lambda c: c.executemany(f"INSERT INTO {table} (v) VALUES (%s)", [("m",), ("n",)]),
        ),
        (
            "executemany loop",
            lambda c: c.executemany(
                f"UPDATE {table} SET n = %s WHERE v = %s", [(1, "m"), (2, "n")]
            ),
        ),
        ("second statement", lambda c: (c.execute("SELECT 1"), c.execute("SELECT 2"))[1]),
        (
            "rows left unread",
            lambda c: (
                c.execute("SELECT seq FROM seq_1_to_5"),
                c.fetchone(),
                c.execute("SELECT 'next'"),
            )[2],
        ),
    ]


def fresh_table(cursor: Any) -> str:
    table = f"statement_path_{next(_tables)}"
    cursor.execute(f"DROP TABLE IF EXISTS {table}")
    cursor.execute(
        f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(10), n INT)"
    )
    return table


CLASSES = [
    (MySQLdb.cursors.Cursor, guarddb.cursors.Cursor),
    (MySQLdb.cursors.DictCursor, guarddb.cursors.DictCursor),
]


@pytest.mark.parametrize(("plain_class", "guarded_class"), CLASSES, ids=["Cursor", "DictCursor"])
@pytest.mark.parametrize("mode", ["exclusive", "strict", "off", "mutex"])
def test_every_statement_leaves_what_mysqlclient_leaves(
    connect, plain_connect, plain_class, guarded_class, mode
):
    plain = plain_connect(autocommit=True)
    guarded = connect(autocommit=True, guard=mode)
    plain_cursor, guarded_cursor = plain.cursor(plain_class), guarded.cursor(guarded_class)
    plain_table, guarded_table = fresh_table(plain_cursor), fresh_table(guarded_cursor)
    differences = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for (name, on_plain), (_, on_guarded) in zip(
            statements(plain_table), statements(guarded_table)
        ):
            expected = snapshot(plain_cursor, on_plain)
            got = snapshot(guarded_cursor, on_guarded)
            for key in set(expected) | set(got):
                want, have = expected.get(key), got.get(key)
                if isinstance(want, (bytes, bytearray)):  # the table's name is in the statement
                    want = want.replace(plain_table.encode(), b"T")
                    have = have.replace(guarded_table.encode(), b"T") if have else have
                if want != have:
                    differences.append((name, key, want, have))
    for cursor, table in ((plain_cursor, plain_table), (guarded_cursor, guarded_table)):
        cursor.execute(f"DROP TABLE {table}")
    assert differences == [], "\n".join(map(repr, differences))


def test_multiple_result_sets_and_callproc_as_mysqlclient(connect, plain_connect):
    from MySQLdb.constants import CLIENT

    name = "statement_path_proc"
    seen = []
    for opener, cls in ((plain_connect, MySQLdb.cursors.Cursor), (connect, guarddb.cursors.Cursor)):
        conn = opener(client_flag=CLIENT.MULTI_STATEMENTS, autocommit=True)
        cursor = conn.cursor(cls)
        cursor.execute(f"DROP PROCEDURE IF EXISTS {name}")
        cursor.execute(f"CREATE PROCEDURE {name}(IN x INT) BEGIN SELECT x * 2; SELECT x + 1; END")
        sets = []
        cursor.execute("SELECT 1; SELECT 2, 3; DO 1; SELECT 'x'")
        sets.append((cursor.fetchall(), cursor.description, cursor.rowcount))
        while cursor.nextset():
            sets.append((cursor.fetchall(), cursor.description, cursor.rowcount))
        cursor.callproc(name, (21,))
        sets.append((cursor.fetchall(), cursor._executed))
        while cursor.nextset():
            sets.append((cursor.fetchall(), cursor.rowcount))
        cursor.execute("SELECT 'after'")  # nothing of the procedure's left pending
        sets.append(cursor.fetchall())
        cursor.execute(f"DROP PROCEDURE {name}")
        seen.append(sets)
    assert seen[0] == seen[1]
    assert seen[1][0][0] == ((1,),)


def recording(step: str) -> type:
    """A user's cursor class overriding one of mysqlclient's statement steps (to time it,
    say, or to post-process rows): it notes each call, then does what mysqlclient does."""

    def step_method(self: Any, *args: Any) -> Any:
        self.calls.append(step)
        return getattr(super(user_class, self), step)(*args)

    user_class = type("UserCursor", (MySQLdb.cursors.Cursor,), {step: step_method})
    return user_class


@pytest.mark.parametrize("step", ["_query", "_do_get_result", "_post_get_result"])
@pytest.mark.parametrize("mode", ["exclusive", "mutex"])
def test_a_subclass_overriding_a_step_gets_it_called(connect, step, mode):
    conn = connect(guard=mode)
    cursor = conn.cursor(recording(step))
    cursor.calls = []
    cursor.execute("SELECT %s", (7,))
    assert cursor.fetchall() == ((7,),)
    cursor.executemany("SELECT %s", [(1,), (2,)])
    assert cursor.calls == [step] * 3


def test_a_subclass_overriding_execute_or_a_step_of_its_own_keeps_it(connect):
    class Upper(MySQLdb.cursors.Cursor):
        def _post_get_result(self) -> None:
            super()._post_get_result()
            self._rows = tuple(tuple(str(v).upper() for v in row) for row in self._rows)

    class Logged(MySQLdb.cursors.Cursor):
        log: ClassVar[list[Any]] = []

        def execute(self, query: Any, args: Any = None) -> Any:
            self.log.append(query)
            return super().execute(query, args)

    conn = connect()
    upper = conn.cursor(Upper)
    upper.execute("SELECT 'a', 'b'")
    assert upper.fetchall() == (("A", "B"),)
    logged = conn.cursor(Logged)
    logged.execute("SELECT 1")
    assert logged.fetchall() == ((1,),)
    assert Logged.log == ["SELECT 1"]


def test_a_connection_with_a_query_of_its_own_gets_it_called(connect_args):
    class Counting(guarddb.connections.Connection):
        queries: ClassVar[list[Any]] = []

        def query(self, query: Any) -> Any:
            self.queries.append(query)
            return super().query(query)

    conn = Counting(**connect_args)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 5")
        assert cursor.fetchall() == ((5,),)
        assert Counting.queries == [b"SELECT 5"]
    finally:
        conn.close()
