"""guarddb.pymysql in mutex mode: threads that share a connection (or one cursor) take turns."""

from __future__ import annotations

import threading

import pymysql
import pytest

import guarddb.pymysql
from guarddb.pymysql import ForkedConnectionError, GuardError, LockTimeoutError, PendingResultError
from guarddb.tools.server import PrivateServer

from .helpers import (
    Blocked,
    ChildError,
    in_forked_child,
    in_thread,
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


@pytest.mark.parametrize("cursorclass", [pymysql.cursors.Cursor, pymysql.cursors.DictCursor])
def test_a_shared_cursor_gives_every_thread_its_own_results(pymysql_connect, cursorclass):
    conn = pymysql_connect(guard="mutex", cursorclass=cursorclass)
    cursor = conn.cursor()
    dicts = cursorclass is pymysql.cursors.DictCursor

    def check(number, i):
        cursor.execute("SELECT %s AS n, %s AS i FROM seq_1_to_2", (number, i))
        description = cursor.description
        first = cursor.fetchone()
        rest = cursor.fetchall()
        expected = {"n": number, "i": i} if dicts else (number, i)
        if first != expected or list(rest) != [expected] or cursor.rowcount != 2:
            return (number, i, first, rest, cursor.rowcount)
        if cursor.rownumber != 2 or description[0][0] != "n":
            return (number, i, cursor.rownumber, description)
        return None

    share_among_threads(conn, check, times=200)


def test_threads_iterating_a_shared_sscursor_each_get_their_own_rows(pymysql_connect):
    # Unread rows hold the connection: each thread's execute waits until the
    # last thread's rows are read out, then iterates its own.
    conn = pymysql_connect(guard="mutex")
    cursor = conn.cursor(pymysql.cursors.SSCursor)

    def check(number, i):
        cursor.execute("SELECT %s, seq / %s FROM seq_1_to_3", (number, i % 2))
        rows = [(n, None if q is None else int(q)) for n, q in cursor]
        expected = [(number, None if i % 2 == 0 else seq) for seq in (1, 2, 3)]
        warnings = 3 if i % 2 == 0 else 0  # division by zero: a warning per row
        if rows != expected or (cursor.rownumber, cursor.warning_count) != (3, warnings):
            return (number, i, rows, cursor.rownumber, cursor.warning_count)
        return None

    share_among_threads(conn, check, times=100)


def test_iterating_after_another_thread_s_statement_reads_the_own_result(pymysql_connect):
    conn = pymysql_connect(guard="mutex")
    cursor = conn.cursor(pymysql.cursors.SSCursor)
    cursor.execute("SELECT seq FROM seq_1_to_3")
    assert list(cursor) == [(1,), (2,), (3,)]

    def other():
        cursor.execute("SELECT seq FROM seq_1_to_5")
        return list(cursor), cursor.rownumber

    assert in_thread(other) == ([(1,), (2,), (3,), (4,), (5,)], 5)
    # This thread's result comes back (read out): its end, its row count.
    assert list(cursor) == [] and cursor.rownumber == 3


def test_each_thread_keeps_its_lastrowid(pymysql_connect):
    conn = pymysql_connect(guard="mutex", autocommit=True)
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


def test_a_waiting_thread_releases_the_gil(pymysql_connect):
    conn = pymysql_connect(guard="mutex")
    blocked = Blocked(conn, pymysql_connect())
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


def test_the_lock_is_reentrant_for_its_holder(pymysql_connect):
    conn = pymysql_connect(guard="mutex")
    cursor = conn.cursor()
    cursor.executemany("SELECT %s", [(1,), (2,)])  # executemany calls execute inside
    conn.commit()
    assert select(conn, 3) == ((3,),)


def test_the_lock_is_released_when_a_statement_fails(pymysql_connect):
    conn = pymysql_connect(guard="mutex")
    with pytest.raises(pymysql.err.ProgrammingError):
        conn.cursor().execute("SELEKT 1")
    assert in_thread(lambda: select(conn, 5)) == ((5,),)


def test_an_unbuffered_result_holds_the_lock_until_read_out(pymysql_connect):
    conn = pymysql_connect(guard="mutex")
    ss = conn.cursor(guarddb.pymysql.cursors.SSCursor)
    ss.execute("SELECT * FROM seq_1_to_100")
    ss.fetchmany(10)
    thread, box = start(lambda: select(conn, 7))
    wait_until(lambda: waiting(conn) == 1)
    assert thread.is_alive()
    assert len(ss.fetchall()) == 90
    thread.join(30)
    assert box == {"result": ((7,),)}


def test_same_thread_second_statement_with_rows_unread_is_pending_error(pymysql_connect):
    conn = pymysql_connect(guard="mutex")
    ss = conn.cursor(guarddb.pymysql.cursors.SSCursor)
    ss.execute("SELECT * FROM seq_1_to_100")
    with pytest.raises(PendingResultError):
        select(conn, 1)  # waiting for itself would never end
    ss.close()
    assert select(conn, 1) == ((1,),)


def test_unbuffered_iteration_counts_rows_and_frees_the_connection(pymysql_connect):
    conn = pymysql_connect(guard="mutex")
    ss = conn.cursor(guarddb.pymysql.cursors.SSDictCursor)
    ss.execute("SELECT seq FROM seq_1_to_300")
    assert [row["seq"] for row in ss] == list(range(1, 301))
    assert ss.rownumber == 300
    assert in_thread(lambda: select(conn, 1)) == ((1,),)


def test_timeout_names_the_holder_how_long_and_the_statement(pymysql_connect):
    conn = pymysql_connect(guard="mutex", mutex_timeout=0.2)
    blocked = Blocked(conn, pymysql_connect())
    try:
        with pytest.raises(LockTimeoutError) as info:
            select(conn, 1)
    finally:
        blocked.release()
    error = info.value
    assert isinstance(error, GuardError) and isinstance(error, pymysql.err.OperationalError)
    assert error.args[0] not in DISCONNECT_CODES
    message = str(error)
    assert "BlockedCaller" in message  # the holder
    assert "GET_LOCK" in message  # the statement it runs
    assert "waited 0.2s" in message and " for 0." in message  # how long it has held it
    assert select(conn, 2) == ((2,),)


def test_transaction_scope_keeps_transactions_of_threads_apart(pymysql_connect):
    conn = pymysql_connect(guard="mutex", mutex_scope="transaction")
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


def test_transaction_scope_ends_at_rollback_and_at_autocommit(pymysql_connect):
    conn = pymysql_connect(guard="mutex", mutex_scope="transaction")

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


def test_call_scope_lets_threads_in_between_statements(pymysql_connect):
    conn = pymysql_connect(guard="mutex")
    conn.cursor().execute("SELECT 1")  # autocommit off, a transaction is open
    assert in_thread(lambda: select(conn, 12)) == ((12,),)


def test_forked_child_gets_forked_error_even_if_a_parent_thread_held_the_lock(pymysql_connect):
    conn = pymysql_connect(guard="mutex")
    blocked = Blocked(conn, pymysql_connect())
    try:
        with pytest.raises(ChildError, match=ForkedConnectionError.__name__):
            in_forked_child(lambda: select(conn, 1), timeout=20)
        assert in_forked_child(lambda: conn.close() or "closed", timeout=20) == "closed"
    finally:
        blocked.release()
    assert select(conn, 1) == ((1,),)


def test_stress_sixteen_threads_one_connection(pymysql_connect):
    conn = pymysql_connect(guard="mutex", autocommit=True)
    shared = conn.cursor()
    wrong, errors = [], []
    barrier = threading.Barrier(16)

    def work(number):
        own = conn.cursor()
        barrier.wait()
        for i in range(400):
            cursor = shared if i % 2 else own
            try:
                cursor.execute("SELECT %s, %s", (number, i))
                if cursor.fetchone() != (number, i) or cursor.fetchone() is not None:
                    wrong.append((number, i))
            except Exception as exc:
                errors.append(exc)

    run_threads(work, 16)
    assert wrong == [] and errors == []
    assert conn.guard_stats()["calls"] >= 16 * 400


def test_a_transaction_left_open_by_an_ended_thread_does_not_hang_the_others(
    pymysql_connect, caplog
):
    conn = pymysql_connect(guard="mutex", mutex_scope="transaction")
    in_thread(lambda: select(conn, 1), name="Forgetful")  # ends with its transaction open
    assert select(conn, 2) == ((2,),)
    assert "Forgetful" in caplog.text or "no longer running" in caplog.text


def test_results_of_ended_threads_are_not_kept(pymysql_connect):
    conn = pymysql_connect(guard="mutex")
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


def test_server_killed_while_one_thread_holds_and_others_wait():
    with PrivateServer() as server:
        conn = guarddb.pymysql.connect(guard="mutex", **server.connect_args)
        holder, holder_box = start(lambda: conn.cursor().execute("SELECT SLEEP(30)"), name="Holder")
        wait_until(lambda: int(conn._guard.slot.busy) == holder.ident)  # inside SLEEP(30)
        waiters = [start(lambda n=n: select(conn, n), name=f"Waiter-{n}") for n in range(3)]
        wait_until(lambda: waiting(conn) == 3)
        server.kill()
        for thread, _ in [(holder, holder_box), *waiters]:
            thread.join(30)
            assert not thread.is_alive(), f"{thread.name} hangs"
        assert isinstance(holder_box.get("error"), pymysql.err.OperationalError)
        for _, box in waiters:  # PyMySQL's own errors for a connection that is gone
            assert isinstance(box.get("error"), pymysql.err.Error), box
            assert not isinstance(box["error"], GuardError)
        server.start()
        fresh = guarddb.pymysql.connect(guard="mutex", **server.connect_args)
        assert select(fresh, 1) == ((1,),)
        fresh.close()
        conn.close()
