"""SQLAlchemy 2.x on guarddb: pooled connections across threads and forks.

Every test runs on both drivers (the ``driver`` fixture): SQLAlchemy's own
``mysql+mysqldb`` dialect with ``module=guarddb`` or (in a subprocess)
``guarddb.install_as_MySQLdb()``, and its ``mysql+pymysql`` dialect with
``module=guarddb.pymysql`` or ``guarddb.pymysql.install_as_pymysql()``;
``guarddb.contrib.sqlalchemy`` adds the pool events.  What a forked child does
runs in an os.fork() child (or a multiprocessing pool) with a time limit.
"""

from __future__ import annotations

import importlib
import inspect
import json
import multiprocessing
import textwrap
import threading
import types
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

import guarddb
from guarddb.contrib import sqlalchemy as guarddb_sa

from .helpers import Blocked, in_forked_child, in_thread, run_python, run_threads

# Tests that provoke guard violations on purpose ask for ``violations``: with guarddb's
# pytest plugin loaded they are then the test's to assert on, not failures.

CONNECTION_ID = "SELECT CONNECTION_ID()"
#: 50 rows (n, 1..50) for a token n: rows of one statement handed to another thread show.
FIFTY_ROWS = (
    "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 50) "
    "SELECT %s, i FROM s"
)


@dataclass(frozen=True)
class Driver:
    """A driver SQLAlchemy's MySQL dialects run on, and guarddb's module standing in for it."""

    #: The URL's driver: ``mysql+<name>://``.
    name: str
    #: guarddb's face for the driver: what ``module=`` is given.
    face_name: str
    #: The driver's own module, which the dialect imports by name.
    plain_name: str
    #: The face's function that installs it under the driver's name.
    install: str
    #: The conftest fixture that opens the face's connections.
    connect_fixture: str

    @property
    def face(self) -> types.ModuleType:
        return importlib.import_module(self.face_name)

    @property
    def plain(self) -> types.ModuleType:
        return importlib.import_module(self.plain_name)

    @property
    def installed(self) -> bool:
        """Whether ``import <plain_name>`` gives guarddb in this process (the pytest plugin)."""
        return self.plain.connect is self.face.connect


DRIVERS = [
    Driver("mysqldb", "guarddb", "MySQLdb", "install_as_MySQLdb", "connect"),
    Driver("pymysql", "guarddb.pymysql", "pymysql", "install_as_pymysql", "pymysql_connect"),
]


@pytest.fixture(params=DRIVERS, ids=[driver.name for driver in DRIVERS])
def driver(request) -> Driver:
    return request.param


@pytest.fixture
def driver_connect(request, driver):
    """Open guarded connections of the driver's face, closed after the test."""
    return request.getfixturevalue(driver.connect_fixture)


@pytest.fixture
def url(connect_args, driver) -> URL:
    args = dict(connect_args)
    if "unix_socket" in args:
        host, port, query = "localhost", None, {"unix_socket": args["unix_socket"]}
    else:
        host, port, query = args["host"], args["port"], {}
    return URL.create(
        f"mysql+{driver.name}",
        username=args.get("user"),
        password=args.get("password"),
        host=host,
        port=port,
        database=args.get("database"),
        query=query,
    )


def kinds(violations) -> set[str]:
    return {violation.kind for violation in violations}


@pytest.fixture
def engines(url, driver):
    """Make engines (guarddb's module and exclusive mode unless told), disposed after the test."""
    made = []
    face = driver.face

    def make(*, guarded: bool = False, **kwargs: Any) -> sa.Engine:
        kwargs.setdefault("module", face)
        if kwargs["module"] is face:  # whatever GUARDDB_MODE or set_defaults() say
            kwargs["connect_args"] = {"guard": "exclusive", **kwargs.get("connect_args", {})}
        engine = sa.create_engine(url, **kwargs)
        if guarded:
            guarddb_sa.guard_engine(engine)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


def session_id(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(CONNECTION_ID).scalar_one()


def hammer(engine: Any, threads: int = 8, checkouts: int = 20) -> dict[str, Any]:
    """``threads`` threads each check out ``checkouts`` times and query: what went wrong.

    Also runs in a fresh interpreter (its source is sent there): keep it self-contained.
    """
    import threading
    from collections import defaultdict

    sql = (
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 50) "
        "SELECT %s, i FROM s"
    )
    errors: list[str] = []
    wrong = [0]
    users: dict[int, set[int]] = defaultdict(set)
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait(30)
        for i in range(checkouts):
            token = n * 1000 + i
            try:
                with engine.connect() as conn:
                    session = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
                    rows = conn.exec_driver_sql(sql, (token,)).all()
                    conn.commit()  # ends the transaction SQLAlchemy began
                    conn.exec_driver_sql("SELECT %s", (token,)).one()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            users[session].add(n)
            if [tuple(row) for row in rows] != [(token, j) for j in range(1, 51)]:
                wrong[0] += 1

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    return {
        "hung": sum(worker.is_alive() for worker in workers),
        "errors": errors,
        "wrong": wrong[0],
        "sessions": len(users),
        "handed_over": sum(len(threads_) > 1 for threads_ in users.values()),
    }


def assert_hammer_clean(report: dict[str, Any], pool_size: int) -> None:
    assert report["hung"] == 0
    assert report["errors"] == []
    assert report["wrong"] == 0
    # The pool really moved its connections between threads.
    assert report["sessions"] <= pool_size
    assert report["handed_over"] >= 1


# -- the dialect on guarddb --------------------------------------------------------------


def test_the_dialect_runs_on_guarddb_unchanged(engines, driver):
    engine = engines(pool_size=1, max_overflow=0)
    assert engine.dialect.dbapi is driver.face
    with engine.connect() as conn:
        assert isinstance(conn.connection.dbapi_connection, driver.face.Connection)
        conn.exec_driver_sql("CREATE TEMPORARY TABLE found_rows (id INT PRIMARY KEY, v INT)")
        conn.exec_driver_sql("INSERT INTO found_rows VALUES (1, 5)")
        # CLIENT.FOUND_ROWS, which the dialect finds as guarddb.constants.CLIENT (or
        # guarddb.pymysql.constants.CLIENT): an UPDATE that changes nothing still
        # counts the row it matched.
        assert conn.exec_driver_sql("UPDATE found_rows SET v = 5 WHERE id = 1").rowcount == 1


def test_streamed_results_use_a_guarded_unbuffered_cursor(engines, driver, violations):
    engine = engines(pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        before = conn.exec_driver_sql(CONNECTION_ID).scalar_one()
        result = conn.execution_options(stream_results=True).exec_driver_sql(FIFTY_ROWS, (7,))
        # The dialect asks for the driver's own SSCursor class: guarddb guards it.
        assert isinstance(result.cursor, driver.face.cursors.GuardedCursorMixIn)
        assert isinstance(result.cursor, driver.plain.cursors.SSCursor)
        first = result.fetchmany(10)
        # Plain mysqlclient: (2014) Commands out of sync, and the connection is thrown
        # away; plain PyMySQL reads the unread rows out and drops them, with a warning.
        with pytest.raises(sa.exc.ProgrammingError) as info:
            conn.exec_driver_sql("SELECT 1")
        assert isinstance(info.value.orig, driver.face.PendingResultError)
        assert not info.value.connection_invalidated
        assert [violation.kind for violation in violations] == ["PendingResultError"]
        rest = result.fetchall()  # the unread rows are intact
        assert [tuple(r) for r in first + rest] == [(7, i) for i in range(1, 51)]
        assert conn.exec_driver_sql(CONNECTION_ID).scalar_one() == before


# -- threads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "guarded"),
    [("exclusive", False), ("exclusive", True), ("strict", True), ("mutex", True)],
)
def test_queuepool_across_threads(engines, violations, mode, guarded):
    engine = engines(
        guarded=guarded, pool_size=3, max_overflow=0, pool_timeout=60, connect_args={"guard": mode}
    )
    assert_hammer_clean(hammer(engine, threads=8, checkouts=20), pool_size=3)
    # Nothing refused, not even quietly (a close the pool logs).  Without guard_engine
    # the pool's connections are never disowned at check-in: once the threads that
    # opened them end, guarddb may report them as orphans (when it looks, a moment
    # later: only under load does that fall inside the test).
    refused = [v for v in violations if guarded or v.kind != "orphan"]
    assert refused == []


#: For PyMySQL's route: mysqlclient is not needed, so it is not there.
NO_MYSQLDB = """
import sys

class NoMySQLdb:
    def find_spec(self, name, path=None, target=None):
        if name == "MySQLdb" or name.startswith("MySQLdb."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoMySQLdb())
"""


@pytest.mark.parametrize("guard", ["exclusive", "strict"])
def test_install_route_in_a_fresh_interpreter(url, driver, guard):
    code = textwrap.dedent(
        f"""
        from __future__ import annotations
        import json
        {{no_mysqldb}}
        import {driver.face_name} as face
        face.{driver.install}()
        import {driver.plain_name}
        import sqlalchemy as sa
        from guarddb.contrib.sqlalchemy import guard_engine

        {{hammer}}

        engine = sa.create_engine(
            {url.render_as_string(hide_password=False)!r},
            pool_size=3, max_overflow=0, pool_timeout=60, connect_args={{"guard": {guard!r}}},
        )
        if {guard!r} == "strict":
            guard_engine(engine)
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            streamed = conn.execution_options(stream_results=True).exec_driver_sql("SELECT 1")
            report = {{
                "dbapi_is_face": engine.dialect.dbapi.connect is face.connect,
                "connection": type(raw).__module__ + "." + type(raw).__name__,
                "mode": raw.guard_mode,
                "sscursor_guarded": isinstance(streamed.cursor, face.cursors.GuardedCursorMixIn),
                "mysqldb_imported": "MySQLdb" in sys.modules,
            }}
            streamed.close()
        report.update(hammer(engine))
        engine.dispose()
        print(json.dumps(report))
        """
    )
    code = code.replace("{hammer}", inspect.getsource(hammer))
    no_mysqldb = driver.name == "pymysql"
    code = code.replace("{no_mysqldb}", NO_MYSQLDB if no_mysqldb else "import sys")
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report.pop("dbapi_is_face") is True
    assert report.pop("connection") == f"{driver.face_name}.connections.Connection"
    assert report.pop("mysqldb_imported") is not no_mysqldb
    assert report.pop("mode") == guard
    assert report.pop("sscursor_guarded") is True
    assert_hammer_clean(report, pool_size=3)


@pytest.mark.parametrize("pre_ping", [False, True], ids=["no-pre-ping", "pre-ping"])
def test_strict_mode_needs_guard_engine_to_hand_pooled_connections_over(
    engines, driver, violations, pre_ping
):
    options = {"pool_size": 1, "max_overflow": 0, "pool_pre_ping": pre_ping}
    plain = engines(connect_args={"guard": "strict"}, **options)
    session_id(plain)  # opened by this thread, now idle in the pool
    with pytest.raises(sa.exc.ProgrammingError) as info:
        in_thread(lambda: session_id(plain))
    assert isinstance(info.value.orig, driver.face.ThreadOwnershipError)
    assert not info.value.connection_invalidated
    assert "which belongs to thread 'MainThread'" in str(info.value)
    assert kinds(violations) == {"ThreadOwnershipError"}
    before = len(violations)

    guarded = engines(guarded=True, connect_args={"guard": "strict"}, **options)
    session = session_id(guarded)
    assert in_thread(lambda: session_id(guarded)) == session  # the same session moved over
    assert session_id(guarded) == session  # and back
    guarded.dispose()  # the events stay with the engine's new pool
    session = session_id(guarded)
    assert in_thread(lambda: session_id(guarded)) == session
    assert len(violations) == before


@pytest.mark.parametrize("guarded", [False, True], ids=["plain-engine", "guard_engine"])
def test_strict_dispose_closes_what_other_threads_own(engines, violations, guarded):
    engine = engines(guarded=guarded, pool_size=3, max_overflow=0, connect_args={"guard": "strict"})
    raws = []
    together = threading.Barrier(3)

    def work(_n: int) -> None:
        with engine.connect() as conn:  # each thread opens one: it is the owner
            raws.append(conn.connection.dbapi_connection)
            together.wait(30)

    run_threads(work, 3)
    assert len({id(raw) for raw in raws}) == 3
    engine.dispose()  # from this thread, which owns none of them
    # Any thread may close a connection nobody is inside, strict mode included.
    assert [bool(raw.open) for raw in raws] == [False] * 3
    assert kinds(violations) == set()


def test_guard_engine_leaves_other_drivers_connections_alone(engines, driver):
    if driver.installed:
        pytest.skip(f"guarddb is installed as {driver.plain_name} in this process")
    engine = engines(
        module=driver.plain, guarded=True, pool_size=3, max_overflow=0, pool_pre_ping=True
    )
    with engine.connect() as conn:
        assert not hasattr(conn.connection.dbapi_connection, "adopt")  # not guarddb's
    assert_hammer_clean(hammer(engine, threads=4, checkouts=10), pool_size=3)


def test_create_engine_uses_guarddb_and_the_pool_events(url, driver):
    engine = guarddb_sa.create_engine(
        url, pool_size=1, max_overflow=0, connect_args={"guard": "strict"}
    )
    try:
        assert engine.dialect.dbapi is driver.face
        session = session_id(engine)
        assert in_thread(lambda: session_id(engine)) == session
    finally:
        engine.dispose()


def test_rows_fetched_by_another_thread_are_a_wrapped_programming_error(
    engines, driver, violations
):
    engine = engines(pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        result = conn.exec_driver_sql(FIFTY_ROWS, (3,))
        with pytest.raises(sa.exc.ProgrammingError) as info:
            in_thread(result.fetchall)
        assert isinstance(info.value.orig, driver.face.ConcurrentUseError)
        assert "that thread's rows, not this one's" in str(info.value)
        assert not info.value.connection_invalidated
        assert kinds(violations) == {"ConcurrentUseError"}
        assert conn.exec_driver_sql("SELECT 41 + 1").scalar_one() == 42


def test_a_call_overlapping_another_threads_is_a_wrapped_programming_error(
    engines, driver, driver_connect, violations
):
    engine = engines(pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        session = conn.exec_driver_sql(CONNECTION_ID).scalar_one()
        blocked = Blocked(conn.connection.dbapi_connection, driver_connect())
        try:
            with pytest.raises(sa.exc.ProgrammingError) as info:
                conn.exec_driver_sql("SELECT 1")
        finally:
            blocked.release()
        assert isinstance(info.value.orig, driver.face.ConcurrentUseError)
        assert "BlockedCaller" in str(info.value)
        assert not info.value.connection_invalidated
        assert kinds(violations) == {"ConcurrentUseError"}
        assert conn.exec_driver_sql(CONNECTION_ID).scalar_one() == session


# -- fork ------------------------------------------------------------------------------


def two_sessions(engine: sa.Engine) -> set[int]:
    """Check out two connections at once: the pool's two sessions."""
    with engine.connect() as one, engine.connect() as two:
        return {
            one.exec_driver_sql(CONNECTION_ID).scalar_one(),
            two.exec_driver_sql(CONNECTION_ID).scalar_one(),
        }


def use_twice(engine: sa.Engine) -> list[Any]:
    """In the child: the sessions of two uses, or what SQLAlchemy raised."""
    outcomes: list[Any] = []
    for _ in range(2):
        try:
            outcomes.append(sorted(two_sessions(engine)))
        except sa.exc.DBAPIError as exc:
            outcomes.append(
                {
                    "error": type(exc).__name__,
                    "orig": type(exc.orig).__name__,
                    "code": exc.orig.args[0],
                    "invalidated": exc.connection_invalidated,
                }
            )
    return outcomes


FORK_SETUPS = {
    "plain": {},
    "pre_ping": {"pool_pre_ping": True},
    "guard_engine": {"guarded": True},
    "dispose": {},
    "on_fork_reconnect": {"connect_args": {"on_fork": "reconnect"}},
}


@pytest.mark.parametrize("setup", list(FORK_SETUPS))
def test_forked_child_gets_fresh_sessions_and_the_parents_survive(engines, violations, setup):
    engine = engines(pool_size=2, max_overflow=0, **FORK_SETUPS[setup])
    parent = two_sessions(engine)

    def child() -> list[Any]:
        if setup == "dispose":
            engine.dispose(close=False)  # SQLAlchemy's documented recipe
        return use_twice(engine)

    first, second = in_forked_child(child)
    if setup == "plain":
        # The first use meets the inherited connection: a disconnect, the pool invalidated.
        assert first == {
            "error": "OperationalError",
            "orig": "ForkedConnectionError",
            "code": 2006,
            "invalidated": True,
        }
    else:
        assert isinstance(first, list)
        assert not set(first) & parent
    assert isinstance(second, list)
    assert len(second) == 2
    assert not set(second) & parent
    assert two_sessions(engine) == parent  # the parent's sessions were never touched
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 41 + 1").scalar_one() == 42


@pytest.mark.parametrize("on_fork", ["raise", "reconnect"])
def test_child_invalidating_the_parents_open_transaction_leaves_it_alone(
    engines, violations, on_fork
):
    engine = engines(pool_size=1, max_overflow=1, connect_args={"on_fork": on_fork})
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS sa_fork_txn")
        conn.exec_driver_sql("CREATE TABLE sa_fork_txn (id INT PRIMARY KEY) ENGINE=InnoDB")
    try:
        with engine.connect() as conn:
            transaction = conn.begin()
            conn.exec_driver_sql("INSERT INTO sa_fork_txn VALUES (1)")

            def child() -> dict[str, Any]:
                try:
                    conn.exec_driver_sql("INSERT INTO sa_fork_txn VALUES (2)")
                except sa.exc.OperationalError as exc:
                    outcome = {
                        "orig": type(exc.orig).__name__,
                        "invalid": exc.connection_invalidated,
                    }
                else:
                    outcome = {"orig": None}
                conn.close()  # the pool closes the inherited connection: harmless
                return outcome

            # on_fork="reconnect" refuses too: a transaction was open at fork.
            assert in_forked_child(child) == {"orig": "ForkedConnectionError", "invalid": True}
            conn.exec_driver_sql("INSERT INTO sa_fork_txn VALUES (3)")
            transaction.commit()
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT id FROM sa_fork_txn ORDER BY id").all()
            assert [row[0] for row in rows] == [1, 3]
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS sa_fork_txn")


_inherited: dict[str, Any] = {}


def _query_in_pool_worker(token: int) -> tuple[int, int]:
    with _inherited["engine"].connect() as conn:
        value, session = conn.exec_driver_sql("SELECT %s, CONNECTION_ID()", (token,)).one()
    assert value == token
    return token, session


@pytest.mark.parametrize("setup", ["guard_engine", "pre_ping"])
def test_multiprocessing_children_use_the_inherited_engine(engines, violations, setup):
    engine = _inherited["engine"] = engines(pool_size=2, max_overflow=0, **FORK_SETUPS[setup])
    parent = two_sessions(engine)
    try:
        with multiprocessing.get_context("fork").Pool(4) as pool:
            results = pool.map_async(_query_in_pool_worker, range(40), chunksize=1).get(60)
    finally:
        _inherited.clear()
    assert [token for token, _ in results] == list(range(40))
    assert not {session for _, session in results} & parent
    assert two_sessions(engine) == parent


@pytest.mark.parametrize("guarded", [False, True], ids=["plain-engine", "guard_engine"])
def test_guard_engine_replaces_inherited_connections_without_a_violation(
    engines, violations, guarded
):
    engine = engines(guarded=guarded, pool_size=1, max_overflow=0)
    parent = session_id(engine)

    def child() -> dict[str, Any]:
        seen: list[str] = []
        guarddb.on_violation(lambda violation: seen.append(violation.kind))
        outcomes = []
        for _ in range(2):
            try:
                outcomes.append(session_id(engine))
            except sa.exc.OperationalError as exc:
                outcomes.append(type(exc.orig).__name__)
        return {"outcomes": outcomes, "violations": seen}

    report = in_forked_child(child)
    if guarded:
        # Found on checkout, before any use: nothing was refused, nothing to report.
        assert report["violations"] == []
        assert all(isinstance(session, int) for session in report["outcomes"])
    else:
        # The inherited connection was used: a real violation, then the pool recovers.
        assert report["violations"] == ["ForkedConnectionError"]
        assert report["outcomes"][0] == "ForkedConnectionError"
        assert isinstance(report["outcomes"][1], int)
    assert parent not in report["outcomes"]
    assert session_id(engine) == parent


@pytest.mark.parametrize("guarded", [False, True], ids=["on_fork-alone", "guard_engine"])
def test_connect_event_settings_in_a_child_with_on_fork_reconnect(engines, guarded):
    engine = engines(
        guarded=guarded, pool_size=1, max_overflow=0, connect_args={"on_fork": "reconnect"}
    )

    @sa.event.listens_for(engine, "connect")
    def set_time_zone(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("SET SESSION time_zone = '+05:00'")
        cursor.close()

    def time_zone_and_session() -> list[Any]:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql("SELECT @@session.time_zone, CONNECTION_ID()").one())

    zone, parent = time_zone_and_session()
    assert zone == "+05:00"
    zone, child = in_forked_child(time_zone_and_session)
    assert child != parent
    # guard_engine has the pool replace the connection, so the pool's connect events run
    # on the child's session; on_fork="reconnect" alone reopens the same object and
    # replays only what guarddb saw (autocommit, charset, sql_mode, database), not SQL.
    assert zone == ("+05:00" if guarded else "SYSTEM")
    assert time_zone_and_session() == ["+05:00", parent]
