"""DBUtils (PooledDB, PersistentDB, SteadyDB) on guarddb, and guarddb.contrib.dbutils (issue 17).

Against the real server: pools used by many threads in every mode, the hand-over that
strict mode refuses without the helper, orphans (judged at once with
``lifecycle.check_orphans()``, never by waiting for the lifecycle thread), sessions left
on the server (information_schema.PROCESSLIST, polled with a deadline: the server ends a
session a moment after its client's COM_QUIT), SteadyDB's failover on guarddb's errors,
and forked children (in os.fork() children with a time limit).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any, Callable

import pytest

pytest.importorskip("dbutils", reason="DBUtils is not installed (pip install 'DBUtils>=3.2')")

pytestmark = pytest.mark.filterwarnings(
    # SteadyDB pings with ping(False), as PyMySQL needs; mysqlclient 2.3 deprecates the argument.
    "ignore:The reconnect parameter of ping:DeprecationWarning"
)

from dbutils import steady_db  # noqa: E402
from dbutils.persistent_db import PersistentDB as PlainPersistentDB  # noqa: E402
from dbutils.pooled_db import PooledDB as PlainPooledDB  # noqa: E402

import guarddb  # noqa: E402
import guarddb.mutex  # noqa: E402
from guarddb.contrib import dbutils as guarddb_dbutils  # noqa: E402
from guarddb.core import lifecycle  # noqa: E402

from .helpers import Blocked, in_forked_child, in_thread, wait_until  # noqa: E402

#: 50 rows (n, 1..50) for a token n: rows of one checkout handed to another thread show.
FIFTY_ROWS = (
    "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 50) "
    "SELECT %s, i FROM s"
)


def kinds(violations) -> list[str]:
    return [violation.kind for violation in violations]


@pytest.fixture
def pools(connect_args):
    """Make pools (DBUtils' or the helper's) on the session's server, closed after the test."""
    made: list[Any] = []

    def make(cls: type, creator: Any = guarddb, *args: Any, **kwargs: Any) -> Any:
        pool = cls(creator, *args, **{**connect_args, **kwargs})
        made.append(pool)
        return pool

    yield make
    for pool in made:
        if isinstance(pool, PlainPersistentDB):
            # This thread's connection, if it has one (closeable=False: close() is ignored).
            mine = getattr(pool.thread, "connection", None)
            if mine is not None:
                mine._close()
        else:
            pool.close()


@pytest.fixture
def sessions_on_server(plain_connect) -> Callable[[], set[int]]:
    """The server's session ids now (a plain connection asks PROCESSLIST)."""
    conn = plain_connect(autocommit=True)

    def sessions() -> set[int]:
        cursor = conn.cursor()
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST")
        return {row[0] for row in cursor.fetchall()}

    return sessions


def session_of(db: Any) -> int:
    cursor = db.cursor()
    cursor.execute("SELECT CONNECTION_ID()")
    (session,) = cursor.fetchone()
    cursor.close()
    return int(session)


def orphans_now(sessions: set[int]) -> set[int]:
    """Of ``sessions``, those reported as orphans (the owners that ended so far are judged
    at once, not when the lifecycle thread gets to them)."""
    return {info.server_thread_id for info in lifecycle.check_orphans()} & sessions


def refusals(violations) -> list[guarddb.Violation]:
    """The violations that are not orphan reports (another test's threads may end meanwhile)."""
    return [violation for violation in violations if violation.kind != "orphan"]


def hammer(pool: Any, threads: int = 8, checkouts: int = 20, **checkout: Any) -> dict[str, Any]:
    """``threads`` threads each check out ``checkouts`` times and query: what went wrong."""
    errors: list[str] = []
    wrong = [0]
    users: dict[int, set[int]] = defaultdict(set)
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait(30)
        for i in range(checkouts):
            token = n * 1000 + i
            try:
                with pool.connection(**checkout) as db:
                    session = session_of(db)
                    cursor = db.cursor()
                    cursor.execute(FIFTY_ROWS, (token,))
                    rows = cursor.fetchall()
                    cursor.close()
                    db.commit()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            users[session].add(n)
            if [tuple(row) for row in rows] != [(token, j) for j in range(1, 51)]:
                wrong[0] += 1

    workers = [threading.Thread(target=work, args=(n,), name=f"w{n}") for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    return {
        "hung": sum(worker.is_alive() for worker in workers),
        "errors": errors,
        "wrong": wrong[0],
        "sessions": set(users),
        "handed_over": sum(len(threads_) > 1 for threads_ in users.values()),
    }


def assert_hammer_clean(report: dict[str, Any], pool_size: int) -> None:
    assert report["hung"] == 0
    assert report["errors"] == []
    assert report["wrong"] == 0
    assert len(report["sessions"]) <= pool_size  # no session replaced: nothing was refused
    assert report["handed_over"] >= 1  # the pool really moved its connections between threads


# -- PooledDB across threads ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "helper"),
    [
        ("exclusive", False),
        ("mutex", False),
        ("off", False),
        ("exclusive", True),
        ("strict", True),
        ("mutex", True),
        ("off", True),
    ],
)
def test_pooled_db_across_threads(pools, violations, mode, helper):
    cls = guarddb_dbutils.PooledDB if helper else PlainPooledDB
    pool = pools(cls, maxcached=3, maxconnections=3, blocking=True, guard=mode)
    report = hammer(pool)
    assert_hammer_clean(report, pool_size=3)
    assert refusals(violations) == []
    if helper:
        # Back in the pool, disowned: the ended threads that used them leave no orphans.
        # (DBUtils' own pool never says so: its connections are reported once their last
        # users have ended, when the lifecycle thread looks.)
        assert orphans_now(report["sessions"]) == set()


def test_pooled_db_strict_without_the_helper_replaces_sessions(pools, violations):
    """DBUtils' own PooledDB in strict mode: the rows are right, but every hand-over's
    checkout ping is refused and SteadyDB opens a new session in its place."""
    pool = pools(PlainPooledDB, maxcached=2, maxconnections=2, blocking=True, guard="strict")
    report = hammer(pool, threads=6, checkouts=20)
    assert (report["hung"], report["errors"], report["wrong"]) == (0, [], 0)
    refused = refusals(violations)
    assert refused and set(kinds(refused)) == {"ThreadOwnershipError"}
    assert all("called ping()" in violation.message for violation in refused)
    # A new session for each refused ping (beside the pool's first one or two).
    assert len(report["sessions"]) - len(refused) in (1, 2)
    print(
        f"6 threads x 20 checkouts, 2 connections: {len(report['sessions'])} sessions, "
        f"{len(refused)} violations"
    )


def test_pooled_db_on_pymysql_strict_with_the_helper(pools, violations):
    face = pytest.importorskip("guarddb.pymysql", reason="PyMySQL is not installed")
    pool = pools(
        guarddb_dbutils.PooledDB, face, maxcached=3, maxconnections=3, blocking=True, guard="strict"
    )
    report = hammer(pool)
    assert_hammer_clean(report, pool_size=3)
    assert refusals(violations) == []
    assert orphans_now(report["sessions"]) == set()


def handover(pool: Any) -> dict[str, Any]:
    """Thread A checks a connection out, queries and returns it; then thread B does.

    A is still alive when B checks out: a thread started after A ended may get A's
    thread id again (glibc reuses it), and with it A's ownership.
    """
    returned = threading.Event()
    done = threading.Event()
    box: dict[str, Any] = {}

    def first() -> None:
        with pool.connection() as db:
            box["first"] = session_of(db)
        returned.set()
        done.wait(30)

    thread_a = threading.Thread(target=first, name="A")
    thread_a.start()
    try:
        assert returned.wait(30)

        def second() -> int:
            with pool.connection() as db:
                return session_of(db)

        try:
            box["second"] = in_thread(second, name="B")
        except guarddb.GuardError as exc:
            box["second"] = exc
    finally:
        done.set()
        thread_a.join(30)
    return box


def test_strict_without_the_helper_every_hand_over_is_refused(pools, violations):
    # DBUtils' checkout pings the connection in the new thread: strict mode refuses it
    # (the connection is thread A's), and SteadyDB, taking the refusal for a dead
    # connection, opens a new session: a violation and a new session per hand-over.
    pool = pools(PlainPooledDB, maxcached=1, guard="strict")
    seen = handover(pool)
    assert seen["second"] != seen["first"]
    assert kinds(refusals(violations)) == ["ThreadOwnershipError"]
    (refused,) = refusals(violations)
    assert "called ping()" in refused.message
    # With guarddb.contrib.dbutils imported, the site is the application's line, not
    # DBUtils' frames.
    assert refused.connection_site.startswith(__file__)

    # Without the ping, the refusal reaches the application: a ProgrammingError, which
    # SteadyDB does not take for a disconnect.
    unpinged = pools(PlainPooledDB, maxcached=1, ping=0, guard="strict")
    seen = handover(unpinged)
    assert isinstance(seen["second"], guarddb.ThreadOwnershipError)
    assert "called execute()" in str(seen["second"])


def test_strict_with_the_helper_hands_the_same_session_over(pools, violations):
    pool = pools(guarddb_dbutils.PooledDB, maxcached=1, guard="strict")
    seen = handover(pool)
    assert seen["second"] == seen["first"]
    assert refusals(violations) == []
    # Resting in the pool, the connection belongs to no thread.
    (info,) = [i for i in guarddb.live_connections() if i.server_thread_id == seen["first"]]
    assert (info.owner_name, info.owner_ident, info.orphan) == ("", 0, False)


def test_strict_with_the_helper_still_refuses_a_thread_that_did_not_check_out(pools, violations):
    pool = pools(guarddb_dbutils.PooledDB, maxcached=1, guard="strict")
    with pool.connection() as db:
        cursor = db.cursor()
        with pytest.raises(guarddb.ThreadOwnershipError):
            in_thread(lambda: cursor.execute("SELECT 1"))
        cursor.execute("SELECT 1")  # the thread that checked it out goes on
        assert cursor.fetchall() == ((1,),)
    assert kinds(refusals(violations)) == ["ThreadOwnershipError"]


def test_pooled_connections_are_orphans_without_the_helper_and_never_with_it(
    pools, violations, sessions_on_server
):
    """close_orphans=True: the threads that used the pool end, the pool keeps its connections."""
    plain = pools(PlainPooledDB, maxcached=2, guard="exclusive", close_orphans=True)
    helped = pools(guarddb_dbutils.PooledDB, maxcached=2, guard="exclusive", close_orphans=True)
    results: dict[str, int] = {}

    def use(pool: Any, name: str) -> None:
        with pool.connection() as db:
            results[name] = session_of(db)

    in_thread(lambda: use(plain, "plain"))
    in_thread(lambda: use(helped, "helped"))
    # DBUtils' own pool never says the connection is back: its last user ended, it is
    # an orphan, and close_orphans closes it under the pool (whose next checkout's
    # ping replaces it: no error reaches the application).
    assert orphans_now(set(results.values())) == {results["plain"]}
    wait_until(lambda: results["plain"] not in sessions_on_server(), timeout=5)
    with plain.connection() as db:
        assert session_of(db) != results["plain"]
    # The helper's rests in the pool, disowned: not an orphan, and still open.
    assert results["helped"] in sessions_on_server()
    with helped.connection() as db:
        assert session_of(db) == results["helped"]
    assert refusals(violations) == []


# -- shared connections (maxshared) ----------------------------------------------------------


def test_shared_connections_in_mutex_mode(pools, violations):
    # guarddb.mutex: DB-API threadsafety 2, so DBUtils shares connections.
    pool = pools(
        guarddb_dbutils.PooledDB, guarddb.mutex, maxshared=2, maxconnections=2, blocking=True
    )
    report = hammer(pool)
    assert (report["hung"], report["errors"], report["wrong"]) == (0, [], 0)
    assert report["handed_over"] >= 1
    assert refusals(violations) == []
    assert orphans_now(report["sessions"]) == set()
    with pool.connection() as db:  # shared: the pool's, not this thread's
        session = session_of(db)
        (info,) = [i for i in guarddb.live_connections() if i.server_thread_id == session]
        assert info.mode == "mutex" and info.owner_ident == 0


@pytest.mark.parametrize("mode", ["strict", "exclusive"])
def test_shared_connections_are_refused_in_strict_and_exclusive_mode(pools, violations, mode):
    pool = pools(guarddb_dbutils.PooledDB, guarddb.mutex, maxshared=2, guard=mode)
    with pytest.raises(guarddb_dbutils.SharedConnectionError, match=f"{mode} mode refuses"):
        pool.connection()
    with pool.connection(shareable=False) as db:  # dedicated connections are fine
        assert session_of(db) > 0
    assert refusals(violations) == []


# -- PersistentDB ----------------------------------------------------------------------------


def persistent_threads(pool: Any, count: int = 4) -> tuple[list[threading.Thread], set[int], Any]:
    """Start ``count`` threads that each use their PersistentDB connection and wait.

    Returns the threads, their sessions, and the event that lets them end.
    """
    ready = threading.Barrier(count + 1)
    release = threading.Event()
    sessions: set[int] = set()

    def work() -> None:
        for _ in range(3):  # the same connection each time
            sessions.add(session_of(pool.connection()))
        ready.wait(30)
        release.wait(30)

    threads = [threading.Thread(target=work, name=f"p{n}") for n in range(count)]
    for thread in threads:
        thread.start()
    ready.wait(30)
    return threads, sessions, release


def end(threads: list[threading.Thread], release: threading.Event) -> None:
    release.set()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()


@pytest.mark.parametrize("helper", [False, True])
def test_persistent_db_no_orphans_while_threads_live(pools, violations, helper):
    cls = guarddb_dbutils.PersistentDB if helper else PlainPersistentDB
    pool = pools(cls, guard="strict", close_orphans=True)
    threads, sessions, release = persistent_threads(pool)
    try:
        assert len(sessions) == 4  # one per thread, kept across connection() calls
        assert orphans_now(sessions) == set()
        live = {i.server_thread_id: i for i in guarddb.live_connections()}
        assert {live[s].owner_name for s in sessions} == {"p0", "p1", "p2", "p3"}
        assert refusals(violations) == []
    finally:
        end(threads, release)


def test_persistent_db_plain_keeps_connections_after_their_threads_end(
    pools, violations, sessions_on_server
):
    """DBUtils' default thread-local storage drops a thread's connection with its Thread object."""
    pool = pools(PlainPersistentDB, guard="strict")
    threads, sessions, release = persistent_threads(pool)
    end(threads, release)
    # The Thread objects are alive (this list): so are their connections, open on the
    # server for nobody.  guarddb reports each as an orphan.
    assert orphans_now(sessions) == sessions
    assert sessions <= sessions_on_server()
    del threads
    # The last thread to call connection() leaves its data as the local's own __dict__
    # until another thread calls it: that connection is still open.
    still_open = {i.server_thread_id for i in guarddb.live_connections()} & sessions
    assert len(still_open) == 1
    pool.connection()  # this thread's turn: the ended thread's connection goes
    wait_until(lambda: not (sessions & sessions_on_server()), timeout=5)
    assert refusals(violations) == []


def test_persistent_db_plain_with_close_orphans(pools, violations, sessions_on_server):
    pool = pools(PlainPersistentDB, guard="strict", close_orphans=True)
    threads, sessions, release = persistent_threads(pool)
    end(threads, release)
    assert orphans_now(sessions) == sessions  # reported, and closed
    wait_until(lambda: not (sessions & sessions_on_server()), timeout=5)
    assert threads  # their Thread objects (and PersistentDB's connections) are still alive
    assert refusals(violations) == []


def test_persistent_db_helper_closes_a_thread_s_connection_as_it_ends(
    pools, violations, sessions_on_server
):
    pool = pools(guarddb_dbutils.PersistentDB, guard="strict")
    threads, sessions, release = persistent_threads(pool)
    assert sessions <= sessions_on_server()
    end(threads, release)
    # Closed in each thread's clean-up (SteadyDB's __del__), the Thread objects still
    # alive: nothing left for guarddb to report, nothing left on the server.
    assert not ({i.server_thread_id for i in guarddb.live_connections()} & sessions)
    assert orphans_now(sessions) == set()
    wait_until(lambda: not (sessions & sessions_on_server()), timeout=5)
    assert refusals(violations) == []
    assert threads


def test_persistent_db_helper_in_a_thread_pool(pools, violations, sessions_on_server):
    from concurrent.futures import ThreadPoolExecutor

    pool = pools(guarddb_dbutils.PersistentDB, guard="strict")
    with ThreadPoolExecutor(4) as executor:
        sessions = set(executor.map(lambda _: session_of(pool.connection()), range(40)))
        assert 1 <= len(sessions) <= 4
        assert orphans_now(sessions) == set()
    # The executor (and its threads' objects) still alive here, its threads ended.
    assert orphans_now(sessions) == set()
    wait_until(lambda: not (sessions & sessions_on_server()), timeout=5)
    assert refusals(violations) == []


# -- SteadyDB and guarddb's errors ----------------------------------------------------------


def test_steady_db_raises_thread_errors_and_never_reconnects_for_them(connect_args, violations):
    steady = guarddb_dbutils.connect(guarddb, guard="strict", **connect_args)
    plain = steady_db.connect(guarddb, guard="strict", **connect_args)
    for db in (steady, plain):
        before = session_of(db)
        cursor = db.cursor()
        with pytest.raises(guarddb.ThreadOwnershipError):
            in_thread(lambda cursor=cursor: cursor.execute("SELECT 1"))
        assert session_of(db) == before  # a ProgrammingError: not in SteadyDB's failures
        db.close()
    assert kinds(refusals(violations)) == ["ThreadOwnershipError"] * 2


@pytest.mark.parametrize("helper", [False, True])
def test_steady_db_reopens_a_connection_guarddb_closed_for_idleness(
    connect_args, violations, helper
):
    connect = guarddb_dbutils.connect if helper else steady_db.connect
    steady = connect(guarddb, max_idle=0.3, autocommit=True, **connect_args)
    before = session_of(steady)
    raw = steady.dbapi_connection
    wait_until(lambda: not raw.open, timeout=10)  # the lifecycle thread closed it
    # IdleClosedError (2006) is a disconnect to SteadyDB: it reopens and runs it again.
    assert session_of(steady) != before
    assert refusals(violations) == []  # guarddb's own close is no violation
    steady.close()


@pytest.mark.parametrize("helper", [False, True])
def test_steady_db_and_a_mutex_lock_timeout(connect, connect_args, violations, helper):
    connect_ = guarddb_dbutils.connect if helper else steady_db.connect
    steady = connect_(guarddb, guard="mutex", mutex_timeout=0.2, autocommit=True, **connect_args)
    before = session_of(steady)
    holder = connect(autocommit=True)
    blocked = Blocked(steady.dbapi_connection, holder)  # another thread inside, waiting
    try:
        if helper:
            # Not a disconnect: the application is told that it waited too long.
            with pytest.raises(guarddb.LockTimeoutError):
                session_of(steady)
            assert steady.dbapi_connection is blocked.conn
        else:
            # DBUtils takes any OperationalError for a disconnect: it opens a new session
            # and runs the statement there, past the lock it was told to wait for.
            assert session_of(steady) != before
            assert steady.dbapi_connection is not blocked.conn
    finally:
        blocked.release()
    if helper:
        assert session_of(steady) == before
    steady.close()


# -- fork ------------------------------------------------------------------------------------


def test_pooled_db_in_a_forked_child_replaces_inherited_connections(pools, violations):
    for ping in (1, 0):  # the helper replaces them without a ping too
        pool = pools(guarddb_dbutils.PooledDB, maxcached=2, ping=ping, guard="strict")
        with pool.connection() as db:
            parent = session_of(db)

        def child(pool: Any = pool) -> list[int]:
            seen: list[guarddb.Violation] = []
            guarddb.on_violation(seen.append)
            with pool.connection() as db:
                first = session_of(db)
            with pool.connection() as db:
                second = session_of(db)
            return [first, second, len(seen)]

        first, second, child_violations = in_forked_child(child)
        assert first == second != parent  # replaced once, then pooled in the child
        assert child_violations == 0
        with pool.connection() as db:
            assert session_of(db) == parent  # the parent's session is untouched
    assert refusals(violations) == []


@pytest.mark.parametrize("helper", [False, True])
def test_steady_db_in_a_forked_child(connect_args, violations, helper):
    connect = guarddb_dbutils.connect if helper else steady_db.connect
    steady = connect(guarddb, guard="strict", **connect_args)
    parent = session_of(steady)

    def child() -> list[Any]:
        seen: list[guarddb.Violation] = []
        guarddb.on_violation(seen.append)
        return [session_of(steady), session_of(steady), kinds(seen)]

    first, second, child_kinds = in_forked_child(child)
    assert first == second != parent
    # Plain SteadyDB: the statement is refused, again on a new cursor, then SteadyDB
    # reconnects.  The helper's replaces the inherited connection before using it.
    assert child_kinds == ([] if helper else ["ForkedConnectionError"] * 2)
    assert session_of(steady) == parent
    steady.close()


def test_persistent_db_in_a_forked_child(pools, violations):
    pool = pools(guarddb_dbutils.PersistentDB, guard="strict")
    parent = session_of(pool.connection())

    def child() -> list[Any]:
        seen: list[guarddb.Violation] = []
        guarddb.on_violation(seen.append)
        return [session_of(pool.connection()), session_of(pool.connection()), len(seen)]

    first, second, child_violations = in_forked_child(child)
    assert first == second != parent
    assert child_violations == 0
    assert session_of(pool.connection()) == parent


def test_a_transaction_is_not_replaced_in_a_forked_child(connect_args, violations):
    steady = guarddb_dbutils.connect(guarddb, guard="strict", **connect_args)
    steady.begin()
    cursor = steady.cursor()
    cursor.execute("SELECT 1")
    cursor.fetchall()

    def child() -> str:
        try:
            cursor.execute("SELECT 2")
        except guarddb.ForkedConnectionError:
            return "refused"
        return "ran"

    # Inside begin() SteadyDB passes errors on: the transaction cannot move to a new session.
    assert in_forked_child(child) == "refused"
    steady.rollback()
    steady.close()
