"""Transactions known precisely, against the server: what the client knows, the reaper,
fork reconnect, mutex_scope="transaction" and close_orphans, with transaction control
sent as API calls and as SQL text.

The classification itself (no server) is in tests/test_transactions_classify.py.
Every test takes the ``driver`` fixture: a second driver's layer joins by adding
itself to DRIVERS.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import MySQLdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from guarddb.core import lifecycle

from .helpers import ChildError, in_forked_child, wait_until
from .test_transactions_classify import decorated

# -- drivers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Driver:
    """A guarded driver: the module that stands in for it, and what it needs here."""

    name: str
    #: guarddb's face for the driver (``connect``, its errors, ``live_connections``).
    module: str
    #: Connect keywords that let a query hold several statements.
    multi_statements: Callable[[], dict[str, Any]] = dict


def _pymysql_multi_statements() -> dict[str, Any]:
    from pymysql.constants import CLIENT

    return {"client_flag": CLIENT.MULTI_STATEMENTS}


#: mysqlclient allows multi-statements by default; PyMySQL is asked to.
DRIVERS = [
    Driver("mysqlclient", "guarddb"),
    Driver("pymysql", "guarddb.pymysql", _pymysql_multi_statements),
]

MAX_IDLE = 0.3  # above the 0.1 s for which InnoDB caches information_schema.INNODB_TRX


@dataclass
class Db:
    """Opens guarded connections of one driver; they are closed after the test."""

    driver: Driver
    connect_args: dict[str, Any]
    opened: list[Any] = field(default_factory=list)

    @property
    def module(self) -> Any:
        return importlib.import_module(self.driver.module)

    def __call__(self, **overrides: Any) -> Any:
        conn = self.module.connect(**{**self.connect_args, **overrides})
        self.opened.append(conn)
        return conn

    def close_all(self) -> None:
        for conn in self.opened:
            with contextlib.suppress(Exception):  # closed already, by guarddb, or broken
                conn.close()


@pytest.fixture(params=DRIVERS, ids=lambda driver: driver.name)
def driver(request) -> Driver:
    return request.param


@pytest.fixture
def db(driver, connect_args):
    opener = Db(driver, connect_args)
    yield opener
    opener.close_all()


# -- the server's side --------------------------------------------------------------------


class Observer:
    """A plain root connection (autocommit) that looks at what the server holds."""

    def __init__(self, connect_args: dict[str, Any]) -> None:
        self.conn = MySQLdb.connect(**connect_args, autocommit=True)

    def rows(self, sql: str, args: Any = None) -> tuple:
        cursor = self.conn.cursor()
        cursor.execute(sql, args)
        rows = cursor.fetchall()
        cursor.close()
        return rows

    def sessions(self) -> set[int]:
        return {row[0] for row in self.rows("SELECT ID FROM information_schema.PROCESSLIST")}

    def committed(self, key: str) -> int:
        """Rows with this key that other sessions see: committed ones."""
        return int(self.rows("SELECT COUNT(*) FROM tx_rows WHERE k = %s", (key,))[0][0])

    def lock_holder(self, name: str) -> int | None:
        return self.rows("SELECT IS_USED_LOCK(%s)", (name,))[0][0]


@pytest.fixture(scope="module")
def observer(connect_args):
    seen = Observer(connect_args)
    for sql in (
        "CREATE TABLE IF NOT EXISTS tx_rows (k VARCHAR(64), n INT) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS tx_locked (id INT PRIMARY KEY, n INT) ENGINE=InnoDB",
        "REPLACE INTO tx_locked VALUES (1, 1), (2, 2), (3, 3)",
        "CREATE TABLE IF NOT EXISTS tx_tables (n INT) ENGINE=InnoDB",
        "DROP FUNCTION IF EXISTS tx_f_insert",
        "DROP FUNCTION IF EXISTS tx_f_lock",
        "DROP PROCEDURE IF EXISTS tx_p_read",
        # SELECT tx_f_insert(k) reads as a SELECT, and writes a row.
        "CREATE FUNCTION tx_f_insert(key_ VARCHAR(64)) RETURNS INT MODIFIES SQL DATA "
        "BEGIN INSERT INTO tx_rows VALUES (key_, 1); RETURN 1; END",
        # SELECT tx_f_lock() reads as a SELECT, and locks a row.
        "CREATE FUNCTION tx_f_lock() RETURNS INT READS SQL DATA "
        "BEGIN DECLARE v INT; SELECT n INTO v FROM tx_locked WHERE id = 1 FOR UPDATE; "
        "RETURN v; END",
        "CREATE PROCEDURE tx_p_read() READS SQL DATA SELECT 1",
    ):
        seen.rows(sql)
    yield seen
    seen.conn.close()


@pytest.fixture
def key() -> str:
    """A key of this test's own in tx_rows."""
    return uuid.uuid4().hex


def run(conn, sql: str, args: Any = None) -> tuple:
    """Execute ``sql`` on a new cursor, read every result, close the cursor; the first rows."""
    cursor = conn.cursor()
    cursor.execute(sql, args)
    rows = cursor.fetchall()
    while cursor.nextset():
        cursor.fetchall()
    cursor.close()
    return tuple(rows or ())


def insert(conn, key: str) -> None:
    run(conn, "INSERT INTO tx_rows VALUES (%s, 1)", (key,))


def state(conn) -> tuple[bool, bool]:
    return conn.in_transaction(), conn.uncommitted_writes()


def info_of(db: Db, conn) -> Any:
    session = conn.thread_id()
    (info,) = [i for i in db.module.live_connections() if i.server_thread_id == session]
    return info


# -- what the client knows ----------------------------------------------------------------


def test_a_read_opens_a_transaction_that_has_not_written(db, observer, key):
    conn = db()  # autocommit off: the drivers' default
    assert state(conn) == (False, False)
    run(conn, "SELECT * FROM tx_rows WHERE k = %s", (key,))
    assert state(conn) == (True, False)  # in_transaction() keeps its meaning
    info = info_of(db, conn)
    assert info.in_transaction and not info.uncommitted_writes
    insert(conn, key)
    assert state(conn) == (True, True)
    info = info_of(db, conn)
    assert info.in_transaction and info.uncommitted_writes
    run(conn, "SELECT 1")  # a read after a write: the write is still there
    assert state(conn) == (True, True)
    assert observer.committed(key) == 0
    conn.commit()
    assert state(conn) == (False, False)
    assert not info_of(db, conn).uncommitted_writes
    assert observer.committed(key) == 1
    assert "written" in type(conn).uncommitted_writes.__doc__


ENDS: list[tuple[str, Callable[[Any], Any], bool]] = [
    ("commit()", lambda conn: conn.commit(), True),
    ("rollback()", lambda conn: conn.rollback(), False),
    ("autocommit(True)", lambda conn: conn.autocommit(True), True),
    ("COMMIT", lambda conn: run(conn, "COMMIT"), True),
    ("commit work", lambda conn: run(conn, "/* done */ commit work;"), True),
    ("ROLLBACK", lambda conn: run(conn, "ROLLBACK"), False),
    ("rollback work", lambda conn: run(conn, "-- undo\n  rollback WORK"), False),
    ("SET autocommit=1", lambda conn: run(conn, "SET autocommit=1"), True),
    ("SET @@session.autocommit", lambda conn: run(conn, "SET @@session.autocommit = ON"), True),
    ("SET autocommit, and more", lambda conn: run(conn, "SET autocommit=1, @tx_x=1"), True),
    ("query('COMMIT')", lambda conn: conn.query("COMMIT"), True),
    ("query('ROLLBACK')", lambda conn: conn.query("ROLLBACK"), False),
]


@pytest.mark.parametrize(("end", "commits"), [e[1:] for e in ENDS], ids=[e[0] for e in ENDS])
def test_each_end_of_a_transaction_ends_it(db, observer, key, end, commits):
    conn = db()
    insert(conn, key)
    assert state(conn) == (True, True)
    end(conn)
    assert state(conn) == (False, False)
    assert observer.committed(key) == (1 if commits else 0)  # the server did what guarddb saw
    assert not info_of(db, conn).uncommitted_writes


@pytest.mark.parametrize("begin", ["BEGIN", "begin work", "START TRANSACTION", "api"])
def test_sql_begin_opens_a_transaction_with_autocommit_on(db, observer, key, begin):
    conn = db(autocommit=True)
    insert(conn, key)  # autocommitted
    assert state(conn) == (False, False)
    if begin == "api":
        conn.begin()
    else:
        run(conn, begin)
    assert state(conn) == (False, False)  # as begin(): open once a statement runs
    run(conn, "SELECT 1")
    assert state(conn) == (True, False)
    insert(conn, key)
    assert state(conn) == (True, True)
    assert observer.committed(key) == 1
    run(conn, "COMMIT")
    assert state(conn) == (False, False)
    assert observer.committed(key) == 2
    insert(conn, key)  # autocommit again
    assert state(conn) == (False, False) and observer.committed(key) == 3


def test_set_autocommit_in_sql_text_is_followed(db, observer, key):
    conn = db(autocommit=True)
    run(conn, "SET autocommit = 0")
    assert not conn.get_autocommit()
    insert(conn, key)
    assert state(conn) == (True, True) and observer.committed(key) == 0
    run(conn, "SET sql_mode = DEFAULT, autocommit = 1")  # asked of the driver afterwards
    assert state(conn) == (False, False) and observer.committed(key) == 1
    run(conn, "SET @tx_y = 2, autocommit = 0")
    insert(conn, key)
    assert state(conn) == (True, True) and observer.committed(key) == 1
    conn.rollback()


PAIRS = [
    ("begin", lambda conn: conn.begin(), "BEGIN"),
    ("commit", lambda conn: conn.commit(), "COMMIT"),
    ("rollback", lambda conn: conn.rollback(), "ROLLBACK"),
    ("autocommit on", lambda conn: conn.autocommit(True), "SET autocommit=1"),
    ("autocommit off", lambda conn: conn.autocommit(False), "SET autocommit=0"),
]
BEFORE = [
    ("nothing", True, []),
    ("read", False, ["SELECT 1"]),
    ("write", False, ["INSERT INTO tx_rows VALUES ('pairs', 1)"]),
    ("begun write", True, ["BEGIN", "INSERT INTO tx_rows VALUES ('pairs', 1)"]),
]


@pytest.mark.parametrize(("api", "sql"), [p[1:] for p in PAIRS], ids=[p[0] for p in PAIRS])
@pytest.mark.parametrize(
    ("autocommit", "before"), [b[1:] for b in BEFORE], ids=[b[0] for b in BEFORE]
)
def test_sql_text_control_does_what_the_api_call_does(db, observer, api, sql, autocommit, before):
    by_api, by_sql = db(autocommit=autocommit), db(autocommit=autocommit)
    for conn in (by_api, by_sql):
        for statement in before:
            run(conn, statement)
    api(by_api)
    run(by_sql, sql)

    def seen(conn):
        return (*state(conn), bool(conn.get_autocommit()))

    assert seen(by_sql) == seen(by_api)
    for statement in ("SELECT 1", "INSERT INTO tx_rows VALUES ('pairs', 1)", "ROLLBACK"):
        run(by_api, statement)
        run(by_sql, statement)
        assert seen(by_sql) == seen(by_api)


def test_callproc_executemany_and_bytes_are_classified(db, key):
    conn = db()
    cursor = conn.cursor()
    cursor.callproc("tx_p_read")  # a procedure may do anything: a write
    cursor.close()
    assert state(conn) == (True, True)
    conn.rollback()
    cursor = conn.cursor()
    cursor.executemany("SELECT %s", [(1,), (2,)])
    assert state(conn) == (True, False)
    cursor.executemany("INSERT INTO tx_rows VALUES (%s, %s)", [(key, 1), (key, 2)])
    assert state(conn) == (True, True)
    conn.rollback()
    run(conn, b"SELECT 'INSERT INTO t'")
    assert state(conn) == (True, False)
    run(conn, b"/* c */ INSERT INTO tx_rows VALUES ('bytes', 1)")
    assert state(conn) == (True, True)
    conn.rollback()


def test_executemany_batches_are_not_classified_again(db, observer, key, monkeypatch):
    # executemany() sends generated batches through execute(): parts of a statement
    # whose template was classified, never texts to scan again (each is new, and long).
    from guarddb.core import transactions

    scanned: list[Any] = []
    classify = transactions.classify

    def counting(sql: Any) -> Any:
        scanned.append(sql)
        return classify(sql)

    monkeypatch.setattr(transactions, "classify", counting)
    conn = db()
    cursor = conn.cursor()
    template = "INSERT INTO tx_rows VALUES (%s, %s)"
    transactions.KINDS.pop(template, None)  # new to the cache: scanned once, here
    cursor.executemany(template, [(key, n) for n in range(50)])
    assert state(conn) == (True, True)
    batch = cursor._executed
    batch = batch if isinstance(batch, str) else bytes(batch).decode()
    assert batch.count(key) == 50  # one generated statement
    assert scanned == [template]
    conn.rollback()


def test_a_multi_statement_writes_unless_every_part_reads(db, driver, observer, key):
    conn = db(**driver.multi_statements())
    run(conn, "SELECT 1; SHOW TABLES; DO 1")
    assert state(conn) == (True, False)
    run(conn, f"SELECT 1; INSERT INTO tx_rows VALUES ('{key}', 1)")
    assert state(conn) == (True, True)
    run(conn, "ROLLBACK; SELECT 1")  # control in order: rolled back, then a read
    assert state(conn) == (True, False)
    run(conn, f"START TRANSACTION; INSERT INTO tx_rows VALUES ('{key}', 1); COMMIT")
    assert state(conn) == (False, False) and observer.committed(key) == 1


# -- the server never holds a write that guarddb does not see -----------------------------

# The statements of a random session, as tokens (Hypothesis decorates them); API: the calls.
STEPS = [
    ["SELECT", "COUNT(*)", "FROM", "tx_rows", "WHERE", "k", "=", "'{key}'"],
    ["INSERT", "INTO", "tx_rows", "VALUES", "(", "'{key}'", ",", "1", ")"],
    ["BEGIN"],
    ["START", "TRANSACTION"],
    ["COMMIT"],
    ["ROLLBACK"],
    ["COMMIT", "AND", "CHAIN"],
    ["ROLLBACK", "WORK", "AND", "CHAIN"],
    ["COMMIT", "AND", "NO", "CHAIN"],
    ["SET", "autocommit", "=", "1"],
    ["SET", "autocommit", "=", "0"],
    ["SET", "@@session.autocommit", ":=", "ON"],
    ["SET", "autocommit", "=", "1", ",", "@tx_z", "=", "1"],
    ["SET", "@tx_z", "=", "1", ",", "autocommit", "=", "0"],
    ["SAVEPOINT", "s"],
    ["ROLLBACK", "TO", "SAVEPOINT", "s"],
    ["RELEASE", "SAVEPOINT", "s"],
    ["INSERT", "INTO", "tx_rows", "VALUES", "(", "'{key}'", ",", "1", ")", ";", "COMMIT"],
    ["BEGIN", ";", "INSERT", "INTO", "tx_rows", "VALUES", "(", "'{key}'", ",", "1", ")"],
    ["SELECT", "1", ";", "INSERT", "INTO", "tx_rows", "VALUES", "(", "'{key}'", ",", "1", ")"],
    ["INSERT", "INTO", "tx_rows", "VALUES", "(", "'{key}'", ",", "1", ")", ";", "ROLLBACK"],
    ["INSERT", "INTO", "tx_rows", "VALUES", "(", "'{key}'", ",", "1", ")", ";", "SET",
     "autocommit", "=", "1"],
]  # fmt: skip
INSERT = "INSERT INTO tx_rows VALUES ('{key}', 1)"
API = {
    "commit()": lambda conn: conn.commit(),
    "rollback()": lambda conn: conn.rollback(),
    "begin()": lambda conn: conn.begin(),
    "autocommit(True)": lambda conn: conn.autocommit(True),
    "autocommit(False)": lambda conn: conn.autocommit(False),
}


@st.composite
def sessions(draw) -> tuple[bool, list[Any]]:
    steps = []
    for _ in range(draw(st.integers(1, 10))):
        if draw(st.integers(0, 4)) == 0:
            steps.append(draw(st.sampled_from(sorted(API))))
        else:
            steps.append(("sql", draw(decorated(draw(st.sampled_from(STEPS))))))
    return draw(st.booleans()), steps


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(session=sessions())
# The sequences that once slipped past: a write the reaper would have rolled back.
@example(session=(True, [("sql", "BEGIN"), ("sql", INSERT), ("sql", "SET autocommit=1")]))
@example(session=(True, ["begin()", ("sql", INSERT), "autocommit(True)"]))
@example(session=(True, [("sql", "BEGIN"), ("sql", "COMMIT AND CHAIN"), ("sql", INSERT)]))
@example(session=(False, [("sql", "ROLLBACK AND CHAIN"), "autocommit(True)", ("sql", INSERT)]))
def test_guarddb_sees_every_write_the_server_holds_uncommitted(db, driver, observer, session):
    """After every step of a random session: rows the session sees but others do not
    (its uncommitted writes) mean uncommitted_writes(); the driver's autocommit is guarddb's."""
    autocommit, steps = session
    key = uuid.uuid4().hex
    conn = db.module.connect(**db.connect_args, **driver.multi_statements(), autocommit=autocommit)
    try:
        done = []
        for step in steps:
            done.append(step)
            try:
                if isinstance(step, str):
                    API[step](conn)
                else:
                    run(conn, step[1].replace("{key}", key))
            except db.module.DatabaseError:
                pass  # ROLLBACK TO a savepoint that is not there: the state must hold still
            assert conn._guard.autocommit == bool(conn.get_autocommit()), done
            mine = run(conn, "SELECT COUNT(*) FROM tx_rows WHERE k = %s", (key,))[0][0]
            if mine != observer.committed(key):
                assert state(conn) == (True, True), done
                assert conn._guard.would_lose() is not None, done
    finally:
        conn.close()


# -- the idle reaper ----------------------------------------------------------------------


def reaper_has_looked(db: Db, observer: Observer) -> None:
    """Return once the reaper has judged every connection idle since before this call.

    A connection opened now is due after everything idle already; once it is
    closed, then a second one opened after that, the pass that closed the first
    is over, and it judged the others too.
    """
    for _ in range(2):
        probe = db(max_idle=MAX_IDLE, autocommit=True)
        session = probe.thread_id()
        wait_until(lambda session=session: session not in observer.sessions(), timeout=10)


READ_ONLY = [
    ("select", False, ["SELECT * FROM tx_rows WHERE k = 'none'"]),
    ("show", False, ["SHOW TABLES"]),
    ("multi-read", False, ["SELECT 1; SELECT 2"]),
    ("sql-begin", True, ["START TRANSACTION", "SELECT * FROM tx_rows WHERE k = 'none'"]),
    ("after-commit", False, ["INSERT INTO tx_rows VALUES ('x', 1)", "COMMIT", "SELECT 1"]),
    ("after-rollback", False, ["INSERT INTO tx_rows VALUES ('x', 1)", "ROLLBACK", "SHOW TABLES"]),
    ("savepoint", False, ["SAVEPOINT s", "SELECT 1", "RELEASE SAVEPOINT s"]),
]


@pytest.mark.parametrize(
    ("autocommit", "statements"), [r[1:] for r in READ_ONLY], ids=[r[0] for r in READ_ONLY]
)
def test_the_reaper_closes_a_transaction_that_only_read(
    db, driver, observer, autocommit, statements
):
    conn = db(max_idle=MAX_IDLE, autocommit=autocommit, **driver.multi_statements())
    for statement in statements:
        run(conn, statement)
    assert state(conn) == (True, False)
    session = conn.thread_id()
    wait_until(lambda: session not in observer.sessions(), timeout=10)
    with pytest.raises(db.module.IdleClosedError) as closed:
        run(conn, "SELECT 1")
    assert closed.value.args[0] == 2006
    assert "its transaction had only read, and was rolled back" in closed.value.args[1]
    assert session not in {info.server_thread_id for info in db.module.live_connections()}


def test_a_read_only_transaction_reaped_reconnects_with_on_idle_reconnect(db, observer):
    conn = db(max_idle=MAX_IDLE, on_idle="reconnect")
    session = conn.thread_id()
    run(conn, "SELECT 1")
    wait_until(lambda: session not in observer.sessions(), timeout=10)
    assert run(conn, "SELECT CONNECTION_ID()")[0][0] != session
    assert state(conn) == (True, False) and not conn.get_autocommit()


WRITE = "INSERT INTO tx_rows VALUES ('{key}', 1)"
GET_LOCK = "SELECT GET_LOCK('{lock}', 0)"

# (name, autocommit, statements, uncommitted rows, a GET_LOCK() lock held)
KEPT: list[tuple[str, bool, list[str], int, bool]] = [
    ("insert", False, [WRITE], 1, False),
    ("read-after-write", False, [WRITE, "SELECT 1", "SHOW TABLES"], 1, False),
    ("for-update", False, ["SELECT * FROM tx_locked WHERE id = 2 FOR UPDATE"], 0, False),
    ("share-mode", False, ["SELECT * FROM tx_locked WHERE id = 3 LOCK IN SHARE MODE"], 0, False),
    ("sql-begin-write", True, ["BEGIN", WRITE], 1, False),
    ("get-lock-committed", False, [GET_LOCK, "COMMIT"], 0, True),
    ("get-lock-autocommit", True, [GET_LOCK], 0, True),
    ("set-get-lock", True, ["SET @tx_held = GET_LOCK('{lock}', 0)"], 0, True),
    ("get-lock-unlock-tables", True, [GET_LOCK, "UNLOCK TABLES"], 0, True),
    ("lock-tables", True, ["LOCK TABLES tx_tables READ"], 0, False),
    # autocommit on already: SET autocommit=1 leaves BEGIN's transaction open
    ("begin-write-set-autocommit-1", True, ["BEGIN", WRITE, "SET autocommit=1"], 1, False),
    ("commit-and-chain-write", True, ["BEGIN", "COMMIT AND CHAIN", WRITE], 1, False),
    ("rollback-and-chain-write", False, ["ROLLBACK AND CHAIN", WRITE], 1, False),
]


def test_the_reaper_keeps_what_a_rollback_would_lose(db, observer):
    """Uncommitted writes and locks stay, whichever way they were made; reads go."""
    kept = {}
    for name, autocommit, statements, rows, user_lock in KEPT:
        conn = db(max_idle=MAX_IDLE, autocommit=autocommit)
        key, lock = uuid.uuid4().hex, f"tx-{uuid.uuid4().hex[:16]}"
        for statement in statements:
            run(conn, statement.format(key=key, lock=lock))
        kept[name] = (conn, conn.thread_id(), key, rows, lock if user_lock else None)
    api = db(max_idle=MAX_IDLE, autocommit=True)
    api.begin()
    insert(api, "api")
    api.autocommit(True)  # on already: the transaction begin() opened stays open
    kept["begin()-write-autocommit(True)"] = (api, api.thread_id(), "api", 1, None)
    reaper_has_looked(db, observer)
    alive = observer.sessions()
    assert [name for name, (_, session, *_) in kept.items() if session not in alive] == []
    for name, (conn, session, key, rows, lock) in kept.items():
        if lock is not None:
            assert observer.lock_holder(lock) == session, name
        run(conn, "UNLOCK TABLES")
        assert run(conn, "SELECT COUNT(*) FROM tx_rows WHERE k = %s", (key,))[0][0] == rows, name
        conn.rollback()


def test_the_server_overrules_a_read_that_wrote(db, observer, key, caplog):
    """SELECT f() reads, by its text; the server says its transaction modified a row."""
    conn = db(max_idle=MAX_IDLE)
    with caplog.at_level(logging.INFO, logger="guarddb"):
        assert run(conn, "SELECT tx_f_insert(%s)", (key,)) == ((1,),)
        assert state(conn) == (True, False)  # guarddb's reading: only read
        wait_until(lambda: any("server says" in r.getMessage() for r in caplog.records), 10)
        reaper_has_looked(db, observer)
    warnings = [r for r in caplog.records if "server says" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "1 rows modified" in warnings[0].getMessage()
    assert conn.thread_id() in observer.sessions()
    assert state(conn) == (True, True)  # the server knows better: kept until commit
    conn.commit()
    assert observer.committed(key) == 1  # nothing was lost


def test_the_server_overrules_a_read_that_locked(db, observer, caplog):
    conn = db(max_idle=MAX_IDLE)
    with caplog.at_level(logging.WARNING, logger="guarddb"):
        run(conn, "SELECT tx_f_lock()")
        assert state(conn) == (True, False)
        wait_until(lambda: any("server says" in r.getMessage() for r in caplog.records), 10)
    (warning,) = [r for r in caplog.records if "server says" in r.getMessage()]
    assert "1 rows locked" in warning.getMessage()
    assert conn.thread_id() in observer.sessions()
    conn.rollback()


@pytest.fixture
def no_process_user(observer):
    """An account with every right on ``test`` but not PROCESS (no INNODB_TRX for it)."""
    observer.rows("DROP USER IF EXISTS 'tx_noprocess'@'localhost'")
    observer.rows("CREATE USER 'tx_noprocess'@'localhost' IDENTIFIED BY 'tx-secret'")
    observer.rows("GRANT ALL ON test.* TO 'tx_noprocess'@'localhost'")
    yield {"user": "tx_noprocess", "password": "tx-secret"}
    observer.rows("DROP USER IF EXISTS 'tx_noprocess'@'localhost'")


def test_without_process_privilege_the_classification_decides(
    db, observer, no_process_user, key, caplog, monkeypatch
):
    # What this documents: the check needs PROCESS; without it the reaper closes a
    # transaction guarddb read as read-only, says so once, and a write hidden in a
    # function called from a SELECT is rolled back with it (the README says so).
    monkeypatch.setattr(lifecycle, "_server_check_works", None)  # "once" starts now
    with caplog.at_level(logging.INFO, logger="guarddb"):
        reads = db(max_idle=MAX_IDLE, **no_process_user)
        hidden = db(max_idle=MAX_IDLE, **no_process_user)
        run(reads, "SELECT 1")
        run(hidden, "SELECT tx_f_insert(%s)", (key,))
        sessions = {reads.thread_id(), hidden.thread_id()}
        wait_until(lambda: not sessions & observer.sessions(), timeout=10)
    told = [r for r in caplog.records if "PROCESS privilege" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.INFO
    assert lifecycle._server_check_works is False
    assert observer.committed(key) == 0  # the hidden write went with the session


# -- fork -------------------------------------------------------------------------------

FORK_PAST = [
    ("sql-commit", False, [WRITE, "COMMIT"]),
    ("sql-rollback", False, [WRITE, "ROLLBACK"]),
    ("sql-autocommit-on", False, [WRITE, "SET autocommit=1"]),
    ("sql-begin-read", True, ["BEGIN", "SHOW TABLES"]),
    ("sql-begin-write-commit", True, ["BEGIN", WRITE, "COMMIT"]),
]
FORK_REFUSED = [
    ("sql-begin-write", True, ["START TRANSACTION", WRITE]),
    ("write-then-read", False, [WRITE, "SELECT 1"]),
    ("set-autocommit-1-on-already", True, ["BEGIN", WRITE, "SET autocommit=1"]),
    ("commit-and-chain", True, ["BEGIN", "COMMIT AND CHAIN", WRITE]),
    ("set-get-lock", True, ["SET @tx_l = GET_LOCK('{lock}', 0)"]),
    ("get-lock-unlock-tables", True, ["DO GET_LOCK('{lock}', 0)", "UNLOCK TABLES"]),
]


@pytest.mark.parametrize(
    ("autocommit", "statements"), [f[1:] for f in FORK_PAST], ids=[f[0] for f in FORK_PAST]
)
def test_fork_reconnects_past_what_sql_text_committed_or_only_read(
    db, observer, key, autocommit, statements
):
    conn = db(on_fork="reconnect", autocommit=autocommit)
    for statement in statements:
        run(conn, statement.format(key=key, lock=f"tx-fork-{key}"))
    assert not conn.uncommitted_writes()
    parent = conn.thread_id()
    child = in_forked_child(lambda: run(conn, "SELECT CONNECTION_ID()")[0][0])
    assert child != parent
    assert run(conn, "SELECT CONNECTION_ID()")[0][0] == parent


@pytest.mark.parametrize(
    ("autocommit", "statements"), [f[1:] for f in FORK_REFUSED], ids=[f[0] for f in FORK_REFUSED]
)
def test_fork_refuses_to_reconnect_past_a_write_or_a_lock(
    db, observer, key, autocommit, statements
):
    conn = db(on_fork="reconnect", autocommit=autocommit)
    for statement in statements:
        run(conn, statement.format(key=key, lock=f"tx-fork-{key}"))
    with pytest.raises(ChildError) as refused:
        in_forked_child(lambda: run(conn, "SELECT 1"))
    assert refused.value.name == "ForkedConnectionError"
    assert "cannot reconnect" in refused.value.child_args[1]
    # The parent's session kept it all.
    pending = run(conn, "SELECT COUNT(*) FROM tx_rows WHERE k = %s", (key,))[0][0]
    assert pending == (1 if WRITE in statements else 0)
    conn.rollback()
    run(conn, "DO RELEASE_ALL_LOCKS()")


# -- mutex_scope="transaction" ------------------------------------------------------------

MUTEX = [
    ("begin-commit", True, ["BEGIN"], "COMMIT"),
    ("start-transaction-rollback", True, ["START TRANSACTION"], "rollback"),
    ("autocommit-off-commit", False, [], "COMMIT"),
    ("autocommit-off-rollback", False, [], "ROLLBACK"),
    ("autocommit-off-set-autocommit", False, [], "SET autocommit = 1"),
    ("autocommit-off-query-commit", False, [], "query:COMMIT"),
]


@pytest.mark.parametrize(
    ("autocommit", "begin", "end"), [m[1:] for m in MUTEX], ids=[m[0] for m in MUTEX]
)
def test_mutex_transaction_scope_follows_sql_text(db, key, autocommit, begin, end):
    conn = db(guard="mutex", mutex_scope="transaction", autocommit=autocommit)
    for statement in begin:
        run(conn, statement)
    insert(conn, key)  # this thread's transaction: it holds the connection
    box: dict[str, Any] = {}

    def other() -> None:
        try:
            box["rows"] = run(conn, "SELECT 7")
            conn.commit()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=other, name="OtherTransaction")
    thread.start()
    wait_until(lambda: int(conn._guard.slot.waiters) == 1)
    run(conn, "SELECT COUNT(*) FROM tx_rows WHERE k = %s", (key,))  # still this transaction's
    assert thread.is_alive() and "rows" not in box
    if end.startswith("query:"):
        conn.query(end.split(":", 1)[1])
    else:
        run(conn, end)
    thread.join(10)
    assert not thread.is_alive(), "the other thread still waits after " + end
    assert box == {"rows": ((7,),)}
    assert conn._guard.txn_holder == 0


def test_mutex_transaction_scope_keeps_a_begin_open_past_set_autocommit_1(db, key):
    """With autocommit on already, SET autocommit=1 leaves BEGIN's transaction open: held."""
    conn = db(guard="mutex", mutex_scope="transaction", autocommit=True)
    run(conn, "BEGIN")
    insert(conn, key)
    run(conn, "SET autocommit=1")
    assert conn._guard.txn_holder == threading.get_ident()
    run(conn, "COMMIT")
    assert conn._guard.txn_holder == 0


# -- close_orphans ------------------------------------------------------------------------

ORPHANS = [
    (
        "wrote",
        False,
        True,
        "closing it rolls back its uncommitted writes",
        "its uncommitted writes were rolled back",
    ),
    (
        "only-read",
        False,
        False,
        "closing it rolls back a transaction that only read",
        "its transaction had only read, and was rolled back",
    ),
    ("autocommit", True, True, None, None),
]


@pytest.mark.parametrize(
    ("autocommit", "writes", "reported", "reason"),
    [o[1:] for o in ORPHANS],
    ids=[o[0] for o in ORPHANS],
)
def test_close_orphans_says_whether_uncommitted_writes_were_rolled_back(
    db, observer, key, autocommit, writes, reported, reason
):
    import guarddb

    seen: list[Any] = []

    def hook(violation: Any) -> None:
        if violation.kind == "orphan":
            seen.append(violation)

    box: dict[str, Any] = {}

    def work() -> None:
        conn = box["conn"] = db.module.connect(
            **db.connect_args, close_orphans=True, autocommit=autocommit
        )
        box["session"] = conn.thread_id()
        if writes:
            insert(conn, key)
        else:
            run(conn, "SELECT 1")

    guarddb.on_violation(hook)
    try:
        thread = threading.Thread(target=work, name="OrphanMaker")
        thread.start()
        thread.join(30)
        wait_until(lambda: box["session"] not in observer.sessions(), timeout=10)
        wait_until(lambda: seen)
    finally:
        guarddb.remove_violation_hook(hook)
    (report,) = [v for v in seen if "OrphanMaker" in v.message]
    with pytest.raises(db.module.IdleClosedError) as closed:
        run(box["conn"], "SELECT 1")
    message = closed.value.args[1]
    if reported is None:
        assert "rolls back" not in report.message and "rolled back" not in message
    else:
        assert reported in report.message
        assert reason in message
    assert observer.committed(key) == (1 if autocommit and writes else 0)
    box["conn"].close()
