"""Process-pool scenarios for tests/test_multiprocessing.py, one per fresh interpreter.

``python tests/mp_worker.py SCENARIO ON_FORK`` runs one scenario and prints one JSON line:
what the parent saw.  The test runs it with a time limit and kills its process group on
timeout, so a pool that hangs fails one test, not the session.

The connect arguments come in ``GUARDDB_TEST_CONNECT_ARGS`` (JSON).  ``ON_FORK`` says how
the policy is chosen: ``default`` (nothing given: raise), ``raise`` or ``reconnect`` (the
``on_fork=`` keyword), ``set_defaults`` (``guarddb.set_defaults(on_fork="reconnect")``) or
``env`` (``GUARDDB_ON_FORK=reconnect``, which the test puts in the environment).

The functions the children run live at module level here, so that pools pickle them by
reference as ``mp_worker.<name>`` (run as a script, the file re-imports itself under that
name).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import select
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from types import SimpleNamespace
from typing import Any, Callable

import MySQLdb

import guarddb

ENV_ARGS = "GUARDDB_TEST_CONNECT_ARGS"
#: How mp_preloaded (imported in the forkserver) chooses its on_fork policy.
ENV_PRELOAD_ON_FORK = "GUARDDB_TEST_ON_FORK"
#: Seconds any one wait inside a scenario may take (the test's own limit is longer).
TIMEOUT = 20.0
#: Workers per pool; the first WORKERS tasks meet at a barrier, so each worker runs one.
WORKERS = 2
TASKS = 6

#: The parent's connection: forked children inherit it as a module global.
_conn: Any = None
#: A pool worker's barrier (see use_inherited) and, under forkserver, its own connection.
_barrier: Any = None
_own: Any = None


def connect_args() -> dict[str, Any]:
    """The private server's connect arguments, from the environment."""
    return json.loads(os.environ[ENV_ARGS])  # type: ignore[no-any-return]


def on_fork_keywords(spec: str) -> dict[str, str]:
    """The connect keywords for ``spec``; ``set_defaults`` sets the process default here."""
    if spec in ("raise", "reconnect"):
        return {"on_fork": spec}
    if spec == "set_defaults":
        guarddb.set_defaults(on_fork="reconnect")
    return {}


def session(conn: Any) -> int:
    """CONNECTION_ID() of the session ``conn`` talks to."""
    cursor = conn.cursor()
    cursor.execute("SELECT CONNECTION_ID()")
    ((number,),) = cursor.fetchall()
    cursor.close()
    return int(number)


def query(conn: Any, n: int) -> dict[str, int]:
    """Ask the server to echo ``n`` with its CONNECTION_ID(): whose answer came back."""
    cursor = conn.cursor()
    cursor.execute("SELECT %s, CONNECTION_ID()", (n,))
    ((echo, number),) = cursor.fetchall()
    cursor.close()
    return {"n": n, "echo": int(echo), "pid": os.getpid(), "session": int(number)}


def describe(outcome: Any) -> Any:
    """A child's outcome as JSON: a result as it is, an exception by its class and args.

    The exception object came back pickled (a pool's return value or its error path);
    ``repickles`` checks once more that it survives a round trip with its message.
    """
    if not isinstance(outcome, BaseException):
        return outcome
    try:
        again = pickle.loads(pickle.dumps(outcome))
        repickles = type(again) is type(outcome) and again.args == outcome.args
    except Exception:
        repickles = False
    return {
        "error": type(outcome).__name__,
        "module": type(outcome).__module__,
        "args0": outcome.args[0] if outcome.args else None,
        "message": str(outcome.args[-1]) if outcome.args else str(outcome),
        "forked": isinstance(outcome, guarddb.ForkedConnectionError),
        "operational": isinstance(outcome, MySQLdb.OperationalError),
        "repickles": repickles,
        "cause": type(outcome.__cause__).__name__ if outcome.__cause__ else None,
    }


def attempt(call: Callable[[], Any]) -> Any:
    """``call()``'s result, or the exception it raised (returned, to be pickled back)."""
    try:
        return call()
    except Exception as exc:
        return exc


# -- what the children run ---------------------------------------------------------------


def init_worker(barrier: Any) -> None:
    """Pool initializer: keep the barrier the first tasks meet at."""
    global _barrier
    _barrier = barrier


def _meet(n: int) -> None:
    # Tasks 0..WORKERS-1 wait for each other: a worker blocked here cannot take the next
    # one, so every worker of the pool runs one of them (no luck in who gets what).
    if _barrier is not None and n < WORKERS:
        _barrier.wait(TIMEOUT)


def use_inherited(n: int) -> dict[str, int]:
    """A task: query through the connection inherited from the parent (errors propagate)."""
    _meet(n)
    return query(_conn, n)


def use_inherited_caught(n: int) -> Any:
    """The same, with an error returned as the task's result (pickled as a value)."""
    return attempt(lambda: use_inherited(n))


def use_preloaded_caught(n: int) -> dict[str, Any]:
    """A forkserver task: query through the connection mp_preloaded opened in the forkserver."""
    import mp_preloaded  # imported in the forkserver already: this is the inherited module

    _meet(n)
    return {
        "outcome": attempt(lambda: query(mp_preloaded.conn, n)),
        "pid": os.getpid(),
        "preloaded_pid": mp_preloaded.PID,
        "preloaded_session": mp_preloaded.SESSION,
    }


def use_own_connection(n: int) -> dict[str, Any]:
    """A forkserver task: the parent's connection is not here; open one per worker and query."""
    global _own
    _meet(n)
    if _own is None:
        _own = guarddb.connect(**connect_args(), autocommit=True)
    return {**query(_own, n), "inherited": _conn is not None}


def close_inherited(*_: Any) -> None:
    """Pool initializer: close the inherited connection (Django's close_all() after fork)."""
    _conn.close()


def pid_only(_: int) -> int:
    """A task that touches no connection."""
    return os.getpid()


def process_child(n: int, report: Any) -> None:
    """A Process target: query through the inherited connection, close it, report both."""
    outcome = attempt(lambda: use_inherited(n))
    closed = attempt(_conn.close)
    report.send({"outcome": outcome, "close": closed, "pid": os.getpid()})
    report.close()


# -- pools, behind one face --------------------------------------------------------------


def make_pool(kind: str, method: str) -> SimpleNamespace:
    """A pool of WORKERS processes: ``map(fn, items)``, ``one(fn, arg)``, ``close()``.

    ``kind`` is ``mp`` (multiprocessing.Pool), ``billiard`` (billiard.Pool, Celery's fork
    of multiprocessing) or ``executor`` (concurrent.futures.ProcessPoolExecutor); every
    wait has a time limit.
    """
    if kind == "executor":
        ctx = multiprocessing.get_context(method)
        executor = ProcessPoolExecutor(
            WORKERS, mp_context=ctx, initializer=init_worker, initargs=(ctx.Barrier(WORKERS),)
        )
        return SimpleNamespace(
            map=lambda fn, items: list(executor.map(fn, items, timeout=TIMEOUT)),
            one=lambda fn, arg: executor.submit(fn, arg).result(TIMEOUT),
            close=lambda: executor.shutdown(wait=True),
        )
    if kind == "billiard":
        import billiard

        ctx = billiard.get_context(method)
    else:
        ctx = multiprocessing.get_context(method)
    pool = ctx.Pool(WORKERS, init_worker, (ctx.Barrier(WORKERS),))

    def close() -> None:
        pool.close()  # workers finish and exit normally (no terminate(): no SIGTERM)
        pool.join()

    return SimpleNamespace(
        map=lambda fn, items: pool.map_async(fn, items, chunksize=1).get(TIMEOUT),
        one=lambda fn, arg: pool.apply_async(fn, (arg,)).get(TIMEOUT),
        close=close,
    )


def _open_parent(spec: str, **extra: Any) -> int:
    global _conn
    _conn = guarddb.connect(
        **{"autocommit": True, **connect_args(), **extra}, **on_fork_keywords(spec)
    )
    return session(_conn)


# -- scenarios -----------------------------------------------------------------------------


def pool_scenario(kind: str, method: str) -> Callable[[str], dict[str, Any]]:
    """Children of a pool query through the parent's connection; then the parent queries."""

    def run(spec: str) -> dict[str, Any]:
        before = _open_parent(spec)
        pool = make_pool(kind, method)
        try:
            per_task = pool.map(use_inherited_caught, range(TASKS))
            # What a user sees: the error through the pool's own error path, or the answer.
            one = attempt(lambda: pool.one(use_inherited, 100))
        finally:
            pool.close()
        return {
            "parent_session": before,
            "per_task": [describe(outcome) for outcome in per_task],
            "one": describe(one),
            "parent_session_after": session(_conn),
        }

    return run


def process_scenario(kind: str) -> Callable[[str], dict[str, Any]]:
    """WORKERS Process children (fork) each query through, then close, the parent's connection."""

    def run(spec: str) -> dict[str, Any]:
        if kind == "billiard":
            import billiard

            ctx: Any = billiard.get_context("fork")
        else:
            ctx = multiprocessing.get_context("fork")
        before = _open_parent(spec)
        children, reports = [], []
        for n in range(WORKERS):
            reader, writer = ctx.Pipe(duplex=False)
            child = ctx.Process(target=process_child, args=(n, writer))
            child.start()
            writer.close()
            children.append(child)
            reports.append(reader)
        answers = []
        for reader in reports:
            answer = attempt(reader.recv) if reader.poll(TIMEOUT) else "no answer in time"
            # A child that died without reporting: EOFError here, its exit code below.
            answers.append(answer if isinstance(answer, dict) else {"outcome": answer})
        for child in children:
            child.join(TIMEOUT)
        return {
            "parent_session": before,
            "per_task": [describe(answer["outcome"]) for answer in answers],
            "close": [describe(answer.get("close")) for answer in answers],
            "exitcodes": [child.exitcode for child in children],
            "parent_session_after": session(_conn),
        }

    return run


def os_fork_exit(spec: str) -> dict[str, Any]:
    """An os.fork() child queries through the inherited connection, then exits normally.

    sys.exit() runs the interpreter's shutdown in the child: atexit, finalizers, garbage
    collection of the (reconnected) connection.
    """
    before = _open_parent(spec)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        report = describe(attempt(lambda: query(_conn, 7)))
        os.write(write_end, json.dumps(report).encode())
        os.close(write_end)
        sys.exit(0)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read_end], [], [], deadline - time.monotonic())
        chunk = os.read(read_end, 65536) if ready else b""
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return {
        "parent_session": before,
        "per_task": [json.loads(b"".join(chunks) or b'"no answer"')],
        "child_exit_status": os.waitstatus_to_exitcode(status),
        "parent_session_after": session(_conn),
    }


def forkserver_own(spec: str) -> dict[str, Any]:
    """forkserver: the children do not inherit the parent's connection; each opens its own."""
    before = _open_parent(spec)
    multiprocessing.set_forkserver_preload(["mp_worker"])
    pool = make_pool("mp", "forkserver")
    try:
        per_task = pool.map(use_own_connection, range(TASKS))
    finally:
        pool.close()
    return {
        "parent_session": before,
        "per_task": per_task,
        "parent_session_after": session(_conn),
    }


def forkserver_preloaded(kind: str) -> Callable[[str], dict[str, Any]]:
    """forkserver with mp_preloaded preloaded: its connection, opened in the forkserver at
    import, is inherited by every child.  Afterwards the forkserver's session must still be
    there (the main process looks it up in the server's process list)."""

    def run(spec: str) -> dict[str, Any]:
        os.environ[ENV_PRELOAD_ON_FORK] = spec  # the forkserver inherits the environment
        before = _open_parent("default")
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["mp_preloaded", "mp_worker"])
        pool = make_pool(kind, "forkserver")
        try:
            per_task = pool.map(use_preloaded_caught, range(TASKS))
        finally:
            pool.close()
        forkserver_session = per_task[0]["preloaded_session"]
        cursor = _conn.cursor()
        cursor.execute(
            "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = %s",
            (forkserver_session,),
        )
        found = cursor.fetchall()
        return {
            "parent_session": before,
            "per_task": [describe(task["outcome"]) for task in per_task],
            "pids": [task["pid"] for task in per_task],
            "preloaded_pids": sorted({task["preloaded_pid"] for task in per_task}),
            "forkserver_session": forkserver_session,
            "forkserver_session_after": [row[0] for row in found],
            "parent_session_after": session(_conn),
        }

    return run


def refused_then_reconnect(spec: str) -> dict[str, Any]:
    """on_fork="reconnect" refuses what a fresh session would lose, and the parent keeps it.

    Autocommit off (mysqlclient's default): an INSERT left uncommitted at fork, then the
    same after a rollback, then an unbuffered SSCursor result left unread at fork.
    """
    before = _open_parent(spec, autocommit=False)
    cursor = _conn.cursor()
    cursor.execute("CREATE TEMPORARY TABLE mp_txn (n INT) ENGINE=InnoDB")
    cursor.execute("INSERT INTO mp_txn VALUES (1)")
    outcome: dict[str, Any] = {"parent_session": before}

    def through_a_pool() -> list[Any]:
        pool = make_pool("mp", "fork")
        try:
            return [describe(o) for o in pool.map(use_inherited_caught, range(WORKERS))]
        finally:
            pool.close()

    outcome["in_transaction"] = through_a_pool()
    cursor.execute("SELECT COUNT(*) FROM mp_txn")  # the same session, the row uncommitted
    outcome["rows_in_transaction"] = cursor.fetchall()[0][0]
    _conn.rollback()
    outcome["after_rollback"] = through_a_pool()
    _conn.autocommit(True)
    unbuffered = _conn.cursor(guarddb.cursors.SSCursor)
    unbuffered.execute("SELECT 1 UNION ALL SELECT 2")
    outcome["unread_result"] = through_a_pool()
    outcome["unread_rows"] = [row[0] for row in unbuffered.fetchall()]
    outcome["parent_session_after"] = session(_conn)
    return outcome


def close_in_children(driver: str) -> dict[str, Any]:
    """A fork pool whose initializer closes the inherited connection; then the parent queries.

    ``driver`` is ``plain`` (mysqlclient) or ``guarddb``: plain mysqlclient sends COM_QUIT
    on the socket it shares with the parent, and the parent's session is gone.
    """
    global _conn
    module: Any = MySQLdb if driver == "plain" else guarddb
    _conn = module.connect(**connect_args(), autocommit=True)
    before = session(_conn)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(WORKERS, initializer=close_inherited) as pool:
        pids = pool.map_async(pid_only, range(TASKS)).get(TIMEOUT)
        pool.close()
        pool.join()
    try:
        after: Any = session(_conn)
    except MySQLdb.Error as exc:
        after = {"error": type(exc).__name__, "args0": exc.args[0]}
    return {"parent_session": before, "children": sorted(set(pids)), "parent_session_after": after}


SCENARIOS: dict[str, Callable[[str], dict[str, Any]]] = {
    "mp_fork_pool": pool_scenario("mp", "fork"),
    "mp_fork_process": process_scenario("mp"),
    "os_fork_exit": os_fork_exit,
    "forkserver_own": forkserver_own,
    "forkserver_preloaded": forkserver_preloaded("mp"),
    "executor_fork": pool_scenario("executor", "fork"),
    "executor_forkserver_preloaded": forkserver_preloaded("executor"),
    "billiard_fork_pool": pool_scenario("billiard", "fork"),
    "billiard_fork_process": process_scenario("billiard"),
    "refused_then_reconnect": refused_then_reconnect,
    "close_in_children": close_in_children,
}


def main(argv: list[str]) -> int:
    """Run one scenario; print what the parent saw as one JSON line."""
    scenario, spec = argv
    result = SCENARIOS[scenario](spec)
    result["parent_pid"] = os.getpid()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    # Re-import this file as "mp_worker", so that the children's functions pickle by that
    # name (not as __main__'s, which forkserver children would not find).
    import mp_worker

    sys.exit(mp_worker.main(sys.argv[1:]))
