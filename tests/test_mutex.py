"""Mutex mode: threads that share a connection (or one cursor) wait their turn."""

from __future__ import annotations

import _thread
import threading
import time

import MySQLdb
import pytest

import guarddb
import guarddb.mutex
from guarddb import ForkedConnectionError, GuardError, PendingResultError
from guarddb.errors import LockTimeoutError
from guarddb.tools.server import PrivateServer

from .helpers import (
    Blocked,
    ChildError,
    in_forked_child,
    in_thread,
    run_python,
    run_threads,
    share_among_threads,
    wait_until,
)

DISCONNECT_CODES = {2006, 2013, 2014, 2045, 2055, 1927, 4031}


def waiting(conn) -> int:
    return int(conn._guard.slot.waiters)


def start(fn, name="Waiter"):
    """Start ``fn`` in a thread; return the thread and a box for its result or error."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)  # a hang fails, not blocks
    thread.start()
    return thread, box


def select(conn, value, cursor=None):
    cursor = cursor or conn.cursor()
    cursor.execute("SELECT %s", (value,))
    return cursor.fetchall()


def test_shared_cursor_gives_every_thread_its_own_results(connect):
    conn = connect(guard="mutex")
    cursor = conn.cursor()

    def check(number, i):
        cursor.execute("SELECT %s, %s FROM seq_1_to_2", (number, i))
        description = cursor.description
        rows = cursor.fetchall()
        if rows != ((number, i), (number, i)) or cursor.rowcount != 2:
            return (number, i, rows, cursor.rowcount)
        if cursor.rownumber != 2 or description[0][0] != str(number):
            return (number, i, cursor.rownumber, description)
        return None

    share_among_threads(conn, check, times=300)


def test_each_thread_keeps_its_lastrowid(connect):
    conn = connect(guard="mutex", autocommit=True)
    setup = conn.cursor()
    setup.execute("CREATE TEMPORARY TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, who INT)")
    cursor = conn.cursor()
    seen = {}
    barrier = threading.Barrier(4)

    def work(who):
        barrier.wait()
        mine = []
        for _ in range(50):
            cursor.execute("INSERT INTO t (who) VALUES (%s)", (who,))
            mine.append(cursor.lastrowid)
        seen[who] = mine

    run_threads(work, 4)
    setup.execute("SELECT id, who FROM t")
    owner = dict(setup.fetchall())
    assert all(owner[row_id] == who for who, ids in seen.items() for row_id in ids)


def test_a_waiting_thread_releases_the_gil(connect, plain_connect):
    conn = connect(guard="mutex")
    blocked = Blocked(conn, plain_connect())
    try:
        thread, box = start(lambda: select(conn, 1))
        wait_until(lambda: waiting(conn) == 1)
        spins = 0
        while spins < 100_000:  # runs only if the waiter does not hold the GIL
            spins += 1
        assert thread.is_alive()
    finally:
        blocked.release()
    thread.join(30)
    assert box == {"result": ((1,),)}


def test_the_lock_is_reentrant_for_its_holder(connect):
    conn = connect(guard="mutex")
    cursor = conn.cursor()
    cursor.executemany("SELECT %s", [(1,), (2,)])  # executemany calls execute inside
    conn.commit()
    assert select(conn, 3) == ((3,),)


def test_the_lock_is_released_when_a_statement_fails(connect):
    conn = connect(guard="mutex")
    with pytest.raises(MySQLdb.ProgrammingError):
        conn.cursor().execute("SELEKT 1")
    assert in_thread(lambda: select(conn, 5)) == ((5,),)


def test_the_lock_is_released_on_keyboard_interrupt(connect):
    conn = connect(guard="mutex")
    entered = threading.Event()

    def interrupt_when_inside():
        wait_until(lambda: int(conn._guard.slot.busy) == threading.main_thread().ident)
        entered.set()
        _thread.interrupt_main()

    interrupter = threading.Thread(target=interrupt_when_inside)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        conn.cursor().execute("SELECT SLEEP(0.5)")
    interrupter.join()
    assert entered.is_set()
    assert int(conn._guard.slot.busy) == 0  # released on the way out

    def other_thread_gets_in():
        try:
            return select(conn, 6)
        except MySQLdb.ProgrammingError as exc:
            # The interrupt may land between sending the query and reading its
            # result: then the connection says so, as plain mysqlclient would.
            return exc.args[0]

    assert in_thread(other_thread_gets_in) in (((6,),), 2014)


def test_an_unbuffered_result_holds_the_lock_until_read_out(connect):
    conn = connect(guard="mutex")
    ss = conn.cursor(guarddb.cursors.SSCursor)
    ss.execute("SELECT * FROM seq_1_to_100")
    ss.fetchmany(10)
    thread, box = start(lambda: select(conn, 7))
    wait_until(lambda: waiting(conn) == 1)
    assert thread.is_alive()
    assert len(ss.fetchall()) == 90
    thread.join(30)
    assert box == {"result": ((7,),)}


def test_same_thread_second_statement_with_rows_unread_is_pending_error(connect):
    conn = connect(guard="mutex")
    ss = conn.cursor(guarddb.cursors.SSCursor)
    ss.execute("SELECT * FROM seq_1_to_100")
    with pytest.raises(PendingResultError):
        select(conn, 1)  # waiting for itself would never end
    ss.close()
    assert select(conn, 1) == ((1,),)


def test_timeout_names_the_holder_how_long_and_the_statement(connect, plain_connect):
    conn = connect(guard="mutex", mutex_timeout=0.2)
    blocked = Blocked(conn, plain_connect())
    try:
        with pytest.raises(LockTimeoutError) as info:
            select(conn, 1)
    finally:
        blocked.release()
    error = info.value
    assert isinstance(error, GuardError) and isinstance(error, MySQLdb.OperationalError)
    assert error.args[0] not in DISCONNECT_CODES
    message = str(error)
    assert "BlockedCaller" in message  # the holder
    assert "GET_LOCK" in message  # the statement it runs
    assert "waited 0.2s" in message and " for 0." in message  # how long it has held it
    assert select(conn, 2) == ((2,),)


def test_without_a_timeout_a_wait_outlasts_many_slices(connect, plain_connect):
    conn = connect(guard="mutex")
    blocked = Blocked(conn, plain_connect())
    thread, box = start(lambda: select(conn, 8))
    wait_until(lambda: waiting(conn) == 1)
    done = threading.Event()
    done.wait(0.35)  # longer than three of guarddb's 0.1 s wait slices
    assert thread.is_alive()
    blocked.release()
    thread.join(30)
    assert box == {"result": ((8,),)}


def test_timeout_must_be_positive(connect_args):
    for bad in (0, -1, "soon"):
        with pytest.raises(ValueError, match="mutex_timeout"):
            guarddb.connect(guard="mutex", mutex_timeout=bad, **connect_args)


def test_transaction_scope_keeps_transactions_of_threads_apart(connect):
    conn = connect(guard="mutex", mutex_scope="transaction")
    setup = conn.cursor()
    setup.execute("CREATE TEMPORARY TABLE ledger (who VARCHAR(8), n INT)")
    conn.commit()
    mine = conn.cursor()
    mine.execute("INSERT INTO ledger VALUES ('main', 1)")  # a transaction begins: held

    def own_transaction():
        rows = select(conn, 9)  # its own transaction begins: held until its commit
        conn.commit()
        return rows

    thread, box = start(own_transaction)
    wait_until(lambda: waiting(conn) == 1)
    mine.execute("INSERT INTO ledger VALUES ('main', 2)")
    assert thread.is_alive()  # still waiting: the transaction is not over
    conn.commit()
    thread.join(30)
    assert box == {"result": ((9,),)}


def test_transaction_scope_ends_at_rollback_and_at_autocommit(connect):
    conn = connect(guard="mutex", mutex_scope="transaction")

    def own_transaction(value):
        rows = select(conn, value)
        conn.commit()
        return rows

    conn.cursor().execute("SELECT 1")
    thread, box = start(lambda: own_transaction(10))
    wait_until(lambda: waiting(conn) == 1)
    conn.rollback()
    thread.join(30)
    assert box == {"result": ((10,),)}
    conn.cursor().execute("SELECT 1")
    thread, box = start(lambda: own_transaction(11))
    wait_until(lambda: waiting(conn) == 1)
    conn.autocommit(True)
    thread.join(30)
    assert box == {"result": ((11,),)}


def test_call_scope_lets_threads_in_between_statements(connect):
    conn = connect(guard="mutex")
    conn.cursor().execute("SELECT 1")  # autocommit off, a transaction is open
    assert in_thread(lambda: select(conn, 12)) == ((12,),)


def test_guard_stats(connect, plain_connect):
    conn = connect(guard="mutex")
    select(conn, 1)
    blocked = Blocked(conn, plain_connect())
    stats = conn.guard_stats()
    assert "BlockedCaller" in stats["holder"] and stats["held_for"] >= 0
    thread, _ = start(lambda: select(conn, 2))
    wait_until(lambda: waiting(conn) == 1)
    blocked.release()
    thread.join(30)
    stats = conn.guard_stats()
    assert stats["mode"] == "mutex"
    assert stats["calls"] >= 4 and stats["waits"] >= 1
    assert stats["wait_longest"] > 0 and stats["wait_total"] >= stats["wait_longest"]
    assert stats["holder"] is None


def test_guard_stats_count_a_long_wait_whole(connect):
    """A wait longer than one of the slices it is waited in (0.1 s) counts from its start."""
    conn = connect(guard="mutex", autocommit=True)
    started = time.monotonic()  # the holder's SLEEP(0.5) ends 0.5 s after this, or later
    holder, _ = start(lambda: select_sleep(conn, 0.5), name="Holder")
    wait_until(lambda: int(conn._guard.slot.busy) == holder.ident)
    waiter, box = start(lambda: select(conn, 2))
    wait_until(lambda: waiting(conn) == 1)
    seen_waiting = time.monotonic()  # the wait began before this
    waiter.join(30)
    holder.join(30)
    assert box["result"] == ((2,),)
    stats = conn.guard_stats()
    assert stats["waits"] == 1
    at_least = started + 0.5 - seen_waiting
    assert stats["wait_longest"] >= at_least and stats["wait_total"] == stats["wait_longest"]


def select_sleep(conn, seconds):
    cursor = conn.cursor()
    cursor.execute("SELECT SLEEP(%s)", (seconds,))
    return cursor.fetchall()


def test_mutex_module_surface(connect_args):
    assert guarddb.mutex.threadsafety == 2
    assert guarddb.mutex.OperationalError is MySQLdb.OperationalError
    assert guarddb.mutex.cursors is guarddb.cursors
    conn = guarddb.mutex.connect(**connect_args)
    try:
        assert conn.guard_mode == "mutex"
        assert guarddb.mutex.connect(guard="strict", **connect_args).guard_mode == "strict"
    finally:
        conn.close()


def test_forked_child_gets_forked_error_even_if_a_parent_thread_held_the_lock(
    connect, plain_connect
):
    conn = connect(guard="mutex")
    blocked = Blocked(conn, plain_connect())
    try:
        with pytest.raises(ChildError, match=ForkedConnectionError.__name__):
            in_forked_child(lambda: select(conn, 1), timeout=20)
        assert in_forked_child(lambda: conn.close() or "closed", timeout=20) == "closed"
    finally:
        blocked.release()
    assert select(conn, 1) == ((1,),)


def test_stress_sixteen_threads_one_connection(connect):
    conn = connect(guard="mutex", autocommit=True)
    shared = conn.cursor()
    wrong, errors = [], []
    barrier = threading.Barrier(16)

    def work(number):
        own = conn.cursor()
        barrier.wait()
        for i in range(1000):
            cursor = shared if i % 2 else own
            try:
                cursor.execute("SELECT %s, %s", (number, i))
                if cursor.fetchone() != (number, i) or cursor.fetchone() is not None:
                    wrong.append((number, i))
            except Exception as exc:
                errors.append(exc)

    run_threads(work, 16)
    assert wrong == [] and errors == []
    assert conn.guard_stats()["calls"] >= 16 * 1000


def test_a_transaction_left_open_by_an_ended_thread_does_not_hang_the_others(connect, caplog):
    conn = connect(guard="mutex", mutex_scope="transaction")
    in_thread(lambda: select(conn, 1), name="Forgetful")  # ends with its transaction open
    assert select(conn, 2) == ((2,),)
    assert "Forgetful" in caplog.text or "no longer running" in caplog.text


def test_server_killed_while_one_thread_holds_and_others_wait():
    with PrivateServer() as server:
        conn = guarddb.connect(guard="mutex", **server.connect_args)
        holder, holder_box = start(lambda: conn.cursor().execute("SELECT SLEEP(30)"), name="Holder")
        wait_until(lambda: int(conn._guard.slot.busy) == holder.ident)  # inside SLEEP(30)
        waiters = [start(lambda n=n: select(conn, n), name=f"Waiter-{n}") for n in range(3)]
        wait_until(lambda: waiting(conn) == 3)
        server.kill()
        for thread, _ in [(holder, holder_box), *waiters]:
            thread.join(30)
            assert not thread.is_alive(), f"{thread.name} hangs"
        assert isinstance(holder_box.get("error"), MySQLdb.OperationalError)
        for _, box in waiters:  # an error, or a working connection, in turn
            assert "result" in box or isinstance(box["error"], MySQLdb.OperationalError), box
        server.start()
        fresh = guarddb.connect(guard="mutex", **server.connect_args)
        assert select(fresh, 1) == ((1,),)
        fresh.close()
        conn.close()


def test_process_defaults_for_the_mutex_keywords(connect):
    try:
        guarddb.set_defaults(guard="mutex", mutex_timeout=2.5, mutex_scope="transaction")
        conn = connect()
        assert conn.guard_mode == "mutex"
        assert conn._guard.timeout == 2.5 and conn._guard.holds_transactions
        assert connect(mutex_timeout=1)._guard.timeout == 1.0  # an explicit keyword wins
    finally:
        guarddb.set_defaults(guard="exclusive", mutex_timeout=None, mutex_scope="call")
    with pytest.raises(TypeError, match="unknown keyword"):
        guarddb.set_defaults(mutex_timeut=1)
    with pytest.raises(ValueError, match="mutex_scope='statement'"):
        guarddb.set_defaults(mutex_scope="statement")


def test_mutex_settings_from_the_environment():
    code = (
        "from guarddb.core.settings import _defaults as d; "
        "print(d['mutex_timeout'], d['mutex_scope'])"
    )
    done = run_python(code, GUARDDB_MUTEX_TIMEOUT="3", GUARDDB_MUTEX_SCOPE="transaction")
    assert done.stdout.split() == ["3.0", "transaction"], done.stderr
    done = run_python(code, GUARDDB_MUTEX_TIMEOUT="never")
    assert "ValueError: GUARDDB_MUTEX_TIMEOUT='never'" in done.stderr


def test_results_of_ended_threads_are_not_kept(connect):
    conn = connect(guard="mutex")
    cursor = conn.cursor()
    started, finish = threading.Barrier(11), threading.Event()

    def run_and_wait():
        cursor.execute("SELECT REPEAT('x', 10000)")
        started.wait()
        finish.wait(30)

    threads = [threading.Thread(target=run_and_wait) for _ in range(10)]
    for thread in threads:
        thread.start()
    started.wait()
    select(conn, 1, cursor)  # puts the last thread's result aside
    finish.set()
    for thread in threads:
        thread.join()
    assert len(cursor.__dict__["_guard_states"]) == 10  # put aside while they were alive
    in_thread(lambda: select(conn, 2, cursor))  # the next change of hands drops them
    assert set(cursor.__dict__["_guard_states"]) == {threading.get_ident()}


def test_unbuffered_iteration_counts_rows_and_frees_the_connection(connect):
    conn = connect(guard="mutex")
    ss = conn.cursor(guarddb.cursors.SSCursor)
    ss.execute("SELECT seq FROM seq_1_to_300")
    assert [row[0] for row in ss] == list(range(1, 301))
    assert ss.rownumber == 300
    assert in_thread(lambda: select(conn, 1)) == ((1,),)
