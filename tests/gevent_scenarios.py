"""gevent scenarios for tests/test_gevent.py, one per fresh interpreter.

``python tests/gevent_scenarios.py SCENARIO ORDER [JSON]`` runs one scenario and prints one
JSON line (its last line of output): what it saw.  Monkey patching is process-wide, so
every scenario gets an interpreter of its own; the test runs it with a time limit and kills
its process group on timeout, so a hub that hangs fails one test, not the session.

``ORDER`` says when gevent patches: ``before`` (``monkey.patch_all()`` before
``import guarddb``), ``after`` (``import guarddb`` first, then the patch), ``after_thread``
(as ``after``, with guarddb's lifecycle thread started as a real OS thread before the
patch) or ``none`` (the scenario patches itself, or never imports gevent at all).
``JSON`` holds the scenario's keyword arguments.  The connect arguments come in
``GUARDDB_TEST_CONNECT_ARGS`` (JSON).

Nothing here waits on the clock for another greenlet: greenlets meet at gevent Events, and
``gevent.sleep(0)`` is a yield (the thing under test: a greenlet that lets others run while
it holds a connection).  Only the server's state (another session inside ``SLEEP()``) and
guarddb's own lifecycle thread, which nothing here can signal, are polled, with a deadline.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sys
import time
import weakref
from typing import Any, Callable

ENV_ARGS = "GUARDDB_TEST_CONNECT_ARGS"
#: Seconds any one wait inside a scenario may take (the test's own limit is longer).
DEADLINE = 20.0
#: How often a poll of state nothing can signal looks again.
POLL = 0.005

#: Filled in by main(): the imports the import order decides.
guarddb: Any = None
gevent: Any = None

SCENARIOS: dict[str, Callable[..., Any]] = {}


def scenario(fn: Callable[..., Any]) -> Callable[..., Any]:
    SCENARIOS[fn.__name__] = fn
    return fn


def connect_args() -> dict[str, Any]:
    """The private server's connect arguments, from the environment."""
    return json.loads(os.environ[ENV_ARGS])  # type: ignore[no-any-return]


def error(exc: BaseException) -> dict[str, Any]:
    """An exception as JSON: class, module, args[0] and message."""
    return {
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "args0": exc.args[0] if exc.args else None,
        "args": [a if isinstance(a, (int, str)) else repr(a) for a in exc.args],
        "message": str(exc.args[-1]) if exc.args else "",
    }


def poll_until(condition: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Poll state that nothing can signal (the server, guarddb's lifecycle thread), yielding."""
    give_up = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"{what}: not reached in {deadline}s")
        gevent.sleep(POLL)


#: Hooks this scenario added: removed before the interpreter exits, so that the errors
#: they keep (and the connections in their tracebacks) go while guarddb is still whole.
_hooks: list[Callable[[Any], Any]] = []


def collect_violations() -> list[Any]:
    """Every violation reported from now on (the hook runs in the violating thread)."""
    seen: list[Any] = []
    _hooks.append(guarddb.on_violation(seen.append))
    return seen


def session_open(watcher: Any, server_thread_id: int) -> bool:
    cur = watcher.cursor()
    cur.execute(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (server_thread_id,)
    )
    (count,) = cur.fetchone()
    cur.close()
    return bool(count)


def sessions(watcher: Any) -> int:
    """How many sessions the server keeps that were opened after ``watcher``'s own."""
    cur = watcher.cursor()
    cur.execute(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID > %s", (watcher.thread_id(),)
    )
    (count,) = cur.fetchone()
    cur.close()
    return int(count)


def sleeping(watcher: Any) -> int:
    """How many sessions the server runs ``SELECT SLEEP(...)`` in, now."""
    cur = watcher.cursor()
    cur.execute(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%%'"
    )
    (count,) = cur.fetchone()
    cur.close()
    return int(count)


# -- 1. the modes across greenlets --------------------------------------------------------


@scenario
def exclusive_shared_cursor(args: dict[str, Any], greenlets: int = 8, rounds: int = 5) -> Any:
    """8 greenlets share one cursor, yielding between execute and fetchall."""
    conn = guarddb.connect(**args)
    cur = conn.cursor()
    seen = {"right": 0, "wrong": 0}
    errors: list[dict[str, Any]] = []

    def work(n: int) -> None:
        for _ in range(rounds):
            try:
                cur.execute("SELECT %s", (n,))
                gevent.sleep(0)
                rows = cur.fetchall()
            except guarddb.GuardError as exc:
                errors.append(error(exc))
                continue
            seen["right" if rows == ((n,),) else "wrong"] += 1

    gevent.joinall([gevent.spawn(work, n) for n in range(greenlets)], raise_error=True)
    conn.close()
    return {**seen, "errors": errors}


@scenario
def strict_owner(args: dict[str, Any]) -> Any:
    """The owner greenlet may use it, another is refused, adopt() hands it over."""
    box: dict[str, Any] = {}
    opened, again = gevent.event.Event(), gevent.event.Event()
    out: dict[str, Any] = {}

    def owner() -> None:
        box["conn"] = conn = guarddb.connect(guard="strict", **args)
        cur = conn.cursor()
        cur.execute("SELECT 1")
        out["owner_first"] = cur.fetchall()
        opened.set()
        again.wait()
        try:
            cur.execute("SELECT 2")
            out["owner_after_refusal"] = cur.fetchall()
        except guarddb.GuardError as exc:
            out["owner_after_refusal"] = error(exc)

    def intruder() -> None:
        try:
            box["conn"].cursor().execute("SELECT 3")
            out["intruder"] = "allowed"
        except guarddb.GuardError as exc:
            out["intruder"] = error(exc)

    def adopter() -> None:
        conn = box["conn"]
        conn.adopt()
        cur = conn.cursor()
        cur.execute("SELECT 4")
        out["adopter"] = cur.fetchall()

    first = gevent.spawn(owner)
    first.name = "the-owner"
    opened.wait()
    second = gevent.spawn(intruder)
    second.name = "the-intruder"
    second.join()
    again.set()
    first.join()
    third = gevent.spawn(adopter)
    third.name = "the-adopter"
    third.join()
    # The first owner is refused now: the connection is the adopter's.
    fourth = gevent.spawn(lambda: out.update(old_owner=_try(box["conn"])))
    fourth.join()
    box["conn"].close()
    for g in (first, second, third, fourth):
        if g.exception is not None:
            raise g.exception
    return out


def _try(conn: Any) -> Any:
    try:
        cur = conn.cursor()
        cur.execute("SELECT 5")
        return cur.fetchall()
    except guarddb.GuardError as exc:
        return error(exc)


@scenario
def main_greenlet_keeps_owner(args: dict[str, Any]) -> Any:
    """A strict connection opened by the main thread before the patch is its own after it."""
    global guarddb
    import guarddb as imported

    guarddb = imported
    conn = imported.connect(guard="strict", **args)
    from gevent import monkey

    monkey.patch_all()
    import gevent as patched

    from guarddb.core import identity

    cur = conn.cursor()
    cur.execute("SELECT 1")
    out: dict[str, Any] = {"main": cur.fetchall(), "greenlets": identity.greenlets}

    def other() -> None:
        out["other"] = _try(conn)

    patched.spawn(other).join()
    conn.close()
    return out


@scenario
def mutex_shared_cursor(
    args: dict[str, Any],
    cursor: str = "Cursor",
    greenlets: int = 8,
    rounds: int = 40,
    cooperative: bool = False,
) -> Any:
    """8 greenlets x 40 execute + yield + fetchall on one shared cursor (mutex mode)."""
    conn = guarddb.connect(guard="mutex", cooperative=cooperative, **args)
    cur = conn.cursor(getattr(guarddb.cursors, cursor))
    seen = {"right": 0, "wrong": 0}
    errors: list[dict[str, Any]] = []

    def work(n: int) -> None:
        for i in range(rounds):
            try:
                cur.execute("SELECT %s, %s", (n, i))
                gevent.sleep(0)
                rows = cur.fetchall()
            except Exception as exc:
                errors.append(error(exc))
                continue
            seen["right" if tuple(rows) == ((n, i),) else "wrong"] += 1

    gevent.joinall([gevent.spawn(work, n) for n in range(greenlets)], raise_error=True)
    stats = conn.guard_stats()
    conn.close()
    return {**seen, "errors": errors, "waits": stats["waits"], "calls": stats["calls"]}


# -- 2. a dead greenlet's id() reused -----------------------------------------------------


@scenario
def dead_greenlet_id_reused(args: dict[str, Any], tries: int = 5000) -> Any:
    """A new greenlet with a dead owner's id() is still refused; the orphan is reported."""
    violations = collect_violations()
    orphan_seen = gevent.event.Event()
    _hooks.append(guarddb.on_violation(lambda v: v.kind == "orphan" and orphan_seen.set()))
    box: dict[str, Any] = {}
    release = gevent.event.Event()
    out: dict[str, Any] = {}

    def opener() -> None:
        box["conn"] = guarddb.connect(guard="strict", **args)

    def same_id() -> None:
        out["same_id"] = id(gevent.getcurrent()) == dead_id
        out["refused"] = _try(box["conn"])
        release.wait()

    # Everything the search needs exists before the owner's memory is freed: the next
    # greenlet allocated should land there (CPython reuses the block at once).
    dead = gevent.spawn(opener)
    dead.name = "dead-owner"
    dead.join()
    dead_id, gone = id(dead), weakref.ref(dead)
    del dead
    gc.collect()
    gevent.sleep(0)  # the hub's own references to the finished greenlet go
    assert gone() is None, "the finished greenlet is still referenced"
    twin, kept = None, []
    for attempt in range(1, tries + 1):
        candidate = gevent.Greenlet(same_id)
        if id(candidate) == dead_id:
            twin, out["attempts"] = candidate, attempt
            break
        kept.append(candidate)  # kept: the next one is allocated elsewhere
    del kept
    if twin is None:
        return {"attempts": tries, "found": False}
    twin.name = "same-id"
    twin.start()
    gevent.sleep(0)  # it runs: refused, then waits for the release
    orphan_seen.wait(DEADLINE)
    out["twin_alive_at_report"] = not twin.dead
    release.set()
    twin.join()
    if twin.exception is not None:
        raise twin.exception
    out["found"] = True
    out["violations"] = [
        {"kind": v.kind, "message": v.message, "thread": v.thread} for v in violations
    ]
    box["conn"].close()  # closing is allowed from any greenlet, strict mode included
    return out


# -- 3. mutex: unbuffered results, timeouts, transactions ---------------------------------


@scenario
def mutex_sscursor_writer_waits(args: dict[str, Any]) -> Any:
    """A reader greenlet holds unbuffered rows and yields; a writer greenlet waits for it."""
    conn = guarddb.connect(guard="mutex", **args)
    holding, writer_started = gevent.event.Event(), gevent.event.Event()
    log: list[str] = []
    out: dict[str, Any] = {}

    def reader() -> None:
        cur = conn.cursor(guarddb.cursors.SSCursor)
        cur.execute("SELECT seq FROM seq_1_to_200")
        first = [cur.fetchone() for _ in range(10)]
        holding.set()
        writer_started.wait()  # the writer runs now, into the connection this one holds
        rest = cur.fetchall()
        log.append("reader read out")
        out["reader_rows"] = [r[0] for r in (*first, *rest)]
        cur.close()

    def writer() -> None:
        holding.wait()
        cur = conn.cursor()
        writer_started.set()
        try:
            cur.execute("SELECT 42")
            log.append("writer executed")
            out["writer"] = cur.fetchall()
        except Exception as exc:
            log.append("writer failed")
            out["writer"] = error(exc)

    gevent.joinall([gevent.spawn(reader), gevent.spawn(writer)], raise_error=True)
    out["log"] = log
    out["waits"] = conn.guard_stats()["waits"]
    conn.close()
    return out


@scenario
def mutex_timeout_greenlet(args: dict[str, Any], timeout: float = 0.3) -> Any:
    """A greenlet waiting longer than mutex_timeout gets LockTimeoutError; others ran meanwhile."""
    conn = guarddb.connect(guard="mutex", mutex_timeout=timeout, **args)
    holding, done = gevent.event.Event(), gevent.event.Event()
    ticks = [0]
    out: dict[str, Any] = {}

    def holder() -> None:
        cur = conn.cursor(guarddb.cursors.SSCursor)
        cur.execute("SELECT seq FROM seq_1_to_10")
        cur.fetchone()
        holding.set()
        done.wait()
        cur.fetchall()
        cur.close()

    def ticker() -> None:
        while not done.is_set():
            ticks[0] += 1
            gevent.sleep(0.001)

    def waiter() -> None:
        holding.wait()
        before = ticks[0]
        try:
            conn.cursor().execute("SELECT 1")
            out["waiter"] = "entered"
        except Exception as exc:
            out["waiter"] = error(exc)
        out["ticks_during_wait"] = ticks[0] - before
        done.set()
        cur = conn.cursor()
        cur.execute("SELECT 7")  # the holder has read out by now: in after it
        out["after"] = cur.fetchall()

    gevent.joinall(
        [gevent.spawn(holder), gevent.spawn(ticker), gevent.spawn(waiter)], raise_error=True
    )
    conn.close()
    return out


@scenario
def mutex_transaction_scope(args: dict[str, Any], greenlets: int = 4) -> Any:
    """mutex_scope="transaction": a greenlet's begin()..commit() is not interleaved."""
    conn = guarddb.connect(guard="mutex", mutex_scope="transaction", **args)
    setup = conn.cursor()
    setup.execute("CREATE TEMPORARY TABLE gevent_txn (who INT, step INT)")
    conn.commit()
    log: list[tuple[int, str]] = []

    def work(n: int) -> None:
        cur = conn.cursor()
        conn.begin()
        cur.execute("INSERT INTO gevent_txn VALUES (%s, 1)", (n,))
        log.append((n, "insert 1"))
        gevent.sleep(0)
        cur.execute("INSERT INTO gevent_txn VALUES (%s, 2)", (n,))
        log.append((n, "insert 2"))
        gevent.sleep(0)
        conn.commit()
        log.append((n, "commit"))

    gevent.joinall([gevent.spawn(work, n) for n in range(greenlets)], raise_error=True)
    setup.execute("SELECT who, step FROM gevent_txn ORDER BY who, step")
    rows = setup.fetchall()
    conn.commit()
    stats = conn.guard_stats()
    conn.close()
    return {"log": log, "rows": rows, "waits": stats["waits"]}


# -- 4. threads and greenlets on one mutex connection -------------------------------------


@scenario
def threads_and_greenlets(
    args: dict[str, Any], threads: int = 2, greenlets: int = 4, rounds: int = 30
) -> Any:
    """Real OS threads and greenlets of the main thread share one mutex connection."""
    from gevent import monkey

    start_thread = monkey.get_original("_thread", "start_new_thread")
    os_ident = monkey.get_original("_thread", "get_ident")
    conn = guarddb.connect(guard="mutex", **args)
    cur = conn.cursor()
    seen = {"right": 0, "wrong": 0}
    errors: list[dict[str, Any]] = []
    finished: list[int] = []
    thread_idents: list[int] = []

    def check(who: int, i: int) -> None:
        try:
            cur.execute("SELECT %s, %s", (who, i))
            if who >= 100:
                gevent.sleep(0)  # a greenlet yields; an OS thread just goes on
            rows = cur.fetchall()
        except Exception as exc:
            errors.append(error(exc))
            return
        seen["right" if tuple(rows) == ((who, i),) else "wrong"] += 1

    def in_thread(n: int) -> None:
        thread_idents.append(os_ident())
        try:
            for i in range(rounds):
                check(n, i)
        finally:
            finished.append(n)

    def in_greenlet(n: int) -> None:
        for i in range(rounds):
            check(100 + n, i)

    for n in range(threads):
        start_thread(in_thread, (n,))
    gevent.joinall([gevent.spawn(in_greenlet, n) for n in range(greenlets)], raise_error=True)
    # The threads report nothing a greenlet could wait on: poll, yielding.
    poll_until(lambda: len(finished) == threads, "the OS threads finished")
    stats = conn.guard_stats()
    conn.close()
    return {
        **seen,
        "errors": errors,
        "waits": stats["waits"],
        "os_threads": len(set(thread_idents) - {os_ident()}),
    }


# -- 5. orphans of ended greenlets ---------------------------------------------------------


@scenario
def greenlet_orphans(args: dict[str, Any], close_orphans: bool = False, count: int = 3) -> Any:
    """Greenlets open connections and end: reported as orphans (and closed if asked)."""
    violations = collect_violations()
    watcher = guarddb.connect(**args)
    baseline = sessions(watcher)
    opened: list[Any] = []
    ids: list[int] = []
    ticks = [0]
    stop = gevent.event.Event()

    def leaker() -> None:
        conn = guarddb.connect(close_orphans=close_orphans, **args)
        opened.append(conn)
        ids.append(conn.thread_id())

    def ticker() -> None:  # keeps running while the lifecycle thread judges
        while not stop.is_set():
            ticks[0] += 1
            gevent.sleep(0.001)

    tick = gevent.spawn(ticker)
    leakers = [gevent.spawn(leaker) for _ in range(count)]
    for n, g in enumerate(leakers):
        g.name = f"leaker-{n}"
    gevent.joinall(leakers, raise_error=True)
    open_after_leak = sessions(watcher) - baseline
    ticks_at_end = ticks[0]
    # guarddb's lifecycle thread judges 0.2 s after the ends: nothing signals that here.
    poll_until(lambda: sum(v.kind == "orphan" for v in violations) >= count, "orphans reported")
    ticks_while_judged = ticks[0] - ticks_at_end
    out: dict[str, Any] = {
        "open_after_leak": open_after_leak,
        "ticks_while_judged": ticks_while_judged,
        "violations": [{"kind": v.kind, "message": v.message} for v in violations],
        "live": [
            {"owner_name": i.owner_name, "orphan": i.orphan}
            for i in guarddb.live_connections()
            if i.server_thread_id in ids
        ],
    }
    if close_orphans:
        poll_until(lambda: not any(session_open(watcher, i) for i in ids), "orphans closed")
        out["open_after_close"] = sessions(watcher) - baseline
        out["closed"] = [conn.open for conn in opened]
    stop.set()
    tick.join()
    watcher.close()
    for conn in opened:
        conn.close()
    return out


# -- 6. names -------------------------------------------------------------------------------


@scenario
def greenlet_names(args: dict[str, Any]) -> Any:
    """live_connections() and violations name the greenlet."""
    violations = collect_violations()
    box: dict[str, Any] = {}
    opened, release = gevent.event.Event(), gevent.event.Event()

    def owner() -> None:
        box["conn"] = guarddb.connect(guard="strict", **args)
        box["live"] = [
            {"owner_name": i.owner_name, "owner_alive": i.owner_alive}
            for i in guarddb.live_connections()
        ]
        opened.set()
        release.wait()

    def intruder() -> None:
        box["refused"] = _try(box["conn"])

    first = gevent.Greenlet(owner)
    first.name = "owner-greenlet"
    first.start()
    opened.wait()
    second = gevent.Greenlet(intruder)
    second.name = "intruder-greenlet"
    second.start()
    second.join()
    release.set()
    first.join()
    box["conn"].close()
    return {
        "live": box["live"],
        "refused": box["refused"],
        "violations": [{"kind": v.kind, "thread": v.thread} for v in violations],
    }


# -- 7. cooperative=True ---------------------------------------------------------------------


def _sleep_together(conns: list[Any], watcher: Any, seconds: float) -> dict[str, Any]:
    """Each connection runs SELECT SLEEP() in a greenlet of its own while another greenlet
    counts, through ``watcher``, how many sessions the server has inside SLEEP() at once."""
    done = gevent.event.Event()
    results: list[Any] = []
    most = [0]

    def sleeper(conn: Any) -> None:
        cur = conn.cursor()
        cur.execute("SELECT SLEEP(%s)", (seconds,))
        results.append(cur.fetchall())

    def watch() -> None:
        while not done.is_set():
            most[0] = max(most[0], sleeping(watcher))
            if most[0] == len(conns):
                return
            gevent.sleep(POLL)

    look = gevent.spawn(watch)
    gevent.joinall([gevent.spawn(sleeper, c) for c in conns], raise_error=True)
    done.set()
    look.join()
    return {
        "most_at_once": most[0],
        "results": results,
        "settings": [c.guard_settings["cooperative"] for c in conns],
    }


@scenario
def cooperative_overlap(args: dict[str, Any], how: str = "keyword", seconds: float = 1.0) -> Any:
    """10 greenlets on their own connections run SELECT SLEEP(): does the server see 10?"""
    keywords: dict[str, Any] = {}
    if how == "keyword":
        keywords["cooperative"] = True
    elif how == "off":
        keywords["cooperative"] = False
    elif how == "set_defaults":
        guarddb.set_defaults(cooperative=True)
    # "env": GUARDDB_COOPERATIVE=1 is in the environment
    conns = [guarddb.connect(**keywords, **args) for _ in range(10)]
    watcher = guarddb.connect(cooperative=False, **args)
    out = _sleep_together(conns, watcher, seconds)
    for conn in [*conns, watcher]:
        conn.close()
    return out


def _kill_mid_wait(args: dict[str, Any], cooperative: bool) -> Any:
    """A session killed by another connection while its statement waits for the server."""
    import MySQLdb
    from gevent import monkey

    start_thread = monkey.get_original("_thread", "start_new_thread")
    real_sleep = monkey.get_original("time", "sleep")
    conn = guarddb.connect(cooperative=cooperative, **args)
    victim = conn.thread_id()
    killed: list[Any] = []

    def killer() -> None:  # a real OS thread: without cooperative, the hub is blocked
        try:
            other = MySQLdb.connect(**args)
            cur = other.cursor()
            give_up = time.monotonic() + DEADLINE
            while time.monotonic() < give_up:
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    "WHERE ID = %s AND INFO LIKE 'SELECT SLEEP%%'",
                    (victim,),
                )
                if cur.fetchone()[0]:
                    cur.execute("KILL %s", (victim,))
                    killed.append(True)
                    break
                real_sleep(POLL)
            other.close()
        except BaseException as exc:
            killed.append(error(exc))

    start_thread(killer, ())
    cur = conn.cursor()
    try:
        cur.execute("SELECT SLEEP(%s)", (DEADLINE,))
        got: Any = cur.fetchall()
    except Exception as exc:
        got = error(exc)
    poll_until(lambda: killed, "the killer finished")
    with contextlib.suppress(Exception):  # its session is gone
        conn.close()
    return {"killed": killed, "got": got}


def _statements(args: dict[str, Any], cooperative: bool) -> Any:
    """What a run of statements gives (rows, errors, row counts), as JSON."""
    conn = guarddb.connect(cooperative=cooperative, **args)
    out: dict[str, Any] = {"cooperative": conn.guard_settings["cooperative"]}
    cur = conn.cursor()
    cur.execute("SELECT 1, 'a', NULL, 2.5")
    out["select"] = [cur.fetchall(), [d[0] for d in cur.description], cur.rowcount]
    try:
        cur.execute("SELEC 1")
    except Exception as exc:
        out["syntax_error"] = error(exc)
    cur.execute("SELECT 'still usable'")
    out["after_error"] = cur.fetchall()
    ss = conn.cursor(guarddb.cursors.SSCursor)
    ss.execute("SELECT seq, seq * seq FROM seq_1_to_300")
    out["sscursor"] = list(ss)
    ss.close()
    cur.execute("SELECT 1; SELECT 2, 3; SELECT 'x'")
    sets = [cur.fetchall()]
    while cur.nextset():
        sets.append(cur.fetchall())
    out["multi"] = sets
    cur.execute("CREATE TEMPORARY TABLE gevent_many (a INT, b VARCHAR(10))")
    out["executemany"] = cur.executemany(
        "INSERT INTO gevent_many VALUES (%s, %s)", [(n, f"v{n}") for n in range(25)]
    )
    out["executemany_rowcount"] = cur.rowcount
    cur.execute("SELECT a, b FROM gevent_many ORDER BY a")
    out["inserted"] = cur.fetchall()
    name = f"gevent_proc_{os.getpid()}_{int(cooperative)}"
    cur.execute(f"CREATE PROCEDURE {name}(IN x INT) BEGIN SELECT x * 2; SELECT x + 1; END")
    try:
        cur.callproc(name, (21,))
        procs = [cur.fetchall()]
        while cur.nextset():
            procs.append(cur.fetchall())
        out["callproc"] = procs
    finally:
        cur.execute(f"DROP PROCEDURE {name}")
    conn.rollback()
    conn.close()
    return json.loads(json.dumps(out, default=repr))


@scenario
def cooperative_same_results(args: dict[str, Any]) -> Any:
    """The same statements with cooperative off and on, side by side."""
    return {"off": _statements(args, False), "on": _statements(args, True)}


@scenario
def cooperative_kill(args: dict[str, Any]) -> Any:
    """A session killed mid-wait: the same error with cooperative off and on."""
    return {"off": _kill_mid_wait(args, False), "on": _kill_mid_wait(args, True)}


@scenario
def cooperative_guarded(args: dict[str, Any], mode: str = "exclusive") -> Any:
    """Greenlet A is inside a cooperative SLEEP (yielded); greenlet B uses the connection."""
    from guarddb.core import identity

    conn = guarddb.connect(guard=mode, cooperative=True, **args)
    log: list[str] = []
    out: dict[str, Any] = {}
    idents: dict[str, int] = {}

    def a() -> None:
        idents["a"] = identity.get_ident()
        cur = conn.cursor()
        log.append("a executes")
        cur.execute("SELECT SLEEP(0.3), 'a'")
        log.append("a returned")
        out["a"] = cur.fetchall()

    def b() -> None:
        idents["b"] = identity.get_ident()
        # A is inside its statement: it yielded to the hub while the server sleeps.
        out["inside_when_b_runs"] = int(conn._guard.slot.busy) == idents["a"]
        cur = conn.cursor()
        log.append("b executes")
        try:
            cur.execute("SELECT 'b'")
            log.append("b returned")
            out["b"] = cur.fetchall()
        except Exception as exc:
            log.append("b refused")
            out["b"] = error(exc)

    gevent.joinall([gevent.spawn(a), gevent.spawn(b)], raise_error=True)
    out["log"] = log
    out["waits"] = conn.guard_stats()["waits"]
    out["cooperative"] = conn.guard_settings["cooperative"]
    conn.close()
    return out


@scenario
def cooperative_settings(args: dict[str, Any], how: str = "keyword") -> Any:
    """How cooperative=True is turned on, and guard_settings saying so."""
    from guarddb.connections import CooperativeQueries

    keywords: dict[str, Any] = {}
    if how == "keyword":
        keywords["cooperative"] = True
    elif how == "set_defaults":
        guarddb.set_defaults(cooperative=True)
    conn = guarddb.connect(**keywords, **args)
    off = guarddb.connect(cooperative=False, **args)
    out = {
        "setting": conn.guard_settings["cooperative"],
        "class": isinstance(conn, CooperativeQueries),
        "explicit_off": off.guard_settings["cooperative"],
        "explicit_off_class": isinstance(off, CooperativeQueries),
    }
    conn.close()
    off.close()
    return out


@scenario
def pymysql_cooperative_overlap(args: dict[str, Any], how: str = "keyword") -> Any:
    """10 greenlets on their own guarddb.pymysql connections run SELECT SLEEP(): does the
    server see 10 at once?  ORDER ``none`` imports gevent without patching anything (only
    cooperative=True makes PyMySQL's socket gevent's), ``before`` patches first."""
    global gevent
    import gevent as imported_gevent
    import gevent.event
    import gevent.socket

    import guarddb.pymysql as pymysql

    gevent = imported_gevent
    keywords: dict[str, Any] = {}
    if how == "keyword":
        keywords["cooperative"] = True
    elif how == "off":
        keywords["cooperative"] = False
    elif how == "set_defaults":
        pymysql.set_defaults(cooperative=True)
    # "env": GUARDDB_COOPERATIVE=1 is in the environment
    conns = [pymysql.connect(**keywords, **args) for _ in range(10)]
    watcher = pymysql.connect(**args)
    out = _sleep_together(conns, watcher, 1.5)
    out["green_sockets"] = [isinstance(c._sock, gevent.socket.socket) for c in conns]
    for conn in [*conns, watcher]:
        conn.close()
    return out


@scenario
def cooperative_unpatched_guarded(
    args: dict[str, Any], driver: str = "mysqldb", mode: str = "exclusive"
) -> Any:
    """gevent patched nothing: greenlet A is inside a cooperative SLEEP (yielded); greenlet
    B uses the connection.  Greenlets are told apart all the same."""
    import gevent as green

    if driver == "pymysql":
        import guarddb.pymysql as module
    else:
        import guarddb as module

    conn = module.connect(guard=mode, cooperative=True, **args)
    log: list[str] = []
    out: dict[str, Any] = {}

    def a() -> None:
        cur = conn.cursor()
        log.append("a executes")
        cur.execute("SELECT SLEEP(0.3), 'a'")
        log.append("a returned")
        out["a"] = cur.fetchall()

    def b() -> None:
        cur = conn.cursor()
        log.append("b executes")
        try:
            cur.execute("SELECT 'b'")
        except Exception as exc:
            log.append("b refused")
            out["b"] = error(exc)
            return
        log.append("b returned")
        out["b"] = cur.fetchall()

    first = green.spawn(a)
    green.sleep(0)  # A runs up to its wait for the server, and yields
    out["inside_when_b_runs"] = log == ["a executes"]
    green.joinall([first, green.spawn(b)], raise_error=True)
    out["log"] = log
    out["waits"] = conn.guard_stats()["waits"]
    conn.close()
    return out


@scenario
def pymysql_cooperative_tls(args: dict[str, Any]) -> Any:
    """cooperative=True on guarddb.pymysql, gevent unpatched: the TLS context it would wrap
    its socket with (the private server speaks no TLS)."""
    import socket

    import guarddb.pymysql as pymysql

    out: dict[str, Any] = {}
    for cooperative in (False, True):
        conn = pymysql.connect(
            cooperative=cooperative, ssl={"check_hostname": False}, defer_connect=True, **args
        )
        left, right = socket.socketpair()
        wrapped = conn.ctx.wrap_socket(left, do_handshake_on_connect=False)
        out[f"tls_{cooperative}"] = type(wrapped).__module__
        for end in (wrapped, right):
            end.close()
    return out


# -- 7b, 8. without gevent -----------------------------------------------------------------


def _keep_gevent_out(how: str) -> None:
    """Make gevent unimportable: ``hidden`` (find_spec() finds nothing, as when it is not
    installed) or ``blocked`` (a meta-path finder refuses it with ModuleNotFoundError)."""
    import importlib.machinery

    def is_gevent(fullname: str) -> bool:
        return fullname.partition(".")[0] == "gevent"

    if how == "blocked":

        class Blocker:
            @staticmethod
            def find_spec(fullname: str, path: Any = None, target: Any = None) -> Any:
                if is_gevent(fullname):
                    raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
                return None

        sys.meta_path.insert(0, Blocker)  # type: ignore[arg-type]
        return

    class WithoutGevent(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, fullname: str, path: Any = None, target: Any = None) -> Any:
            return None if is_gevent(fullname) else super().find_spec(fullname, path, target)

    sys.meta_path[:] = [
        WithoutGevent if finder is importlib.machinery.PathFinder else finder
        for finder in sys.meta_path
    ]


@scenario
def no_gevent_cooperative(
    args: dict[str, Any], how: str = "hidden", driver: str = "mysqldb"
) -> Any:
    """gevent cannot be imported: cooperative=True is an ImportError, off works."""
    _keep_gevent_out(how)
    global guarddb
    if driver == "pymysql":
        import guarddb.pymysql as imported
    else:
        import guarddb as imported

    guarddb = imported
    out: dict[str, Any] = {}
    try:
        import gevent as _found  # noqa: F401

        out["gevent_importable"] = True
    except ImportError:
        out["gevent_importable"] = False
    try:
        imported.connect(cooperative=True, **args).close()
        out["cooperative"] = "connected"
    except ImportError as exc:
        out["cooperative"] = error(exc)
    conn = imported.connect(**args)
    cur = conn.cursor()
    cur.execute("SELECT 1")
    out["off"] = cur.fetchall()
    conn.close()
    return out


@scenario
def never_imports_gevent(args: dict[str, Any]) -> Any:
    """A program that never imports gevent: guarddb does not either."""
    global guarddb
    import guarddb as imported

    guarddb = imported
    from guarddb.core import identity

    conn = imported.connect(**args)
    cur = conn.cursor()
    cur.execute("SELECT 1")
    rows = cur.fetchall()
    ss = conn.cursor(imported.cursors.SSCursor)
    ss.execute("SELECT 2")
    rows += tuple(ss)
    live = [i.owner_name for i in imported.live_connections()]
    conn.close()
    return {
        "rows": rows,
        "greenlets": identity.greenlets,
        "live": live,
        "gevent_modules": sorted(
            m for m in sys.modules if m.split(".")[0] in ("gevent", "greenlet")
        ),
    }


# -- running --------------------------------------------------------------------------------


def main() -> None:
    global guarddb, gevent
    name, order = sys.argv[1], sys.argv[2]
    keywords = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    if order == "before":
        from gevent import monkey

        monkey.patch_all()
    if order in ("before", "after", "after_thread"):
        import guarddb as imported
    if order == "after_thread":
        # A connection opened by a thread other than the main one starts guarddb's
        # lifecycle thread: here a real OS thread, started before the patch.
        import threading

        def early() -> None:
            imported.connect(**connect_args()).close()

        thread = threading.Thread(target=early)
        thread.start()
        thread.join()
        assert imported.core.lifecycle._lifecycle.thread is not None
    if order in ("after", "after_thread"):
        from gevent import monkey

        monkey.patch_all()
    if order in ("before", "after", "after_thread"):
        import gevent as patched
        import gevent.event

        guarddb, gevent = imported, patched
    # Violations are asserted through hooks: the log would only fill stderr.
    logging.getLogger("guarddb").disabled = True
    result = SCENARIOS[name](connect_args(), **keywords)
    print(json.dumps(result, default=repr), flush=True)
    for hook in _hooks:
        guarddb.remove_violation_hook(hook)
    del result
    gc.collect()


if __name__ == "__main__":
    main()
