"""``python -m guarddb bench``: what the guard costs, side by side with plain mysqlclient.

Every workload runs on plain mysqlclient and on guarddb in the same process,
against the same server, over equivalent connections (the same connect
arguments, the same cursor classes: guarddb guards whatever class it is
given).  They are interleaved finely: each round opens a fresh connection on
each side and runs a few chunks of the workload on each, alternating (A B B A
...), so that a burst of load on the machine, or the scheduler's placing of
one connection's server thread, hits both sides alike.  Only the workload is
timed: connecting, creating tables, emptying the insert table and rewinding a
result between passes are not.  The garbage collector is collected before
each chunk and off while it runs, as :mod:`timeit` does.

With its own private server the bench pins itself and the server to one CPU
(``--no-pin`` not to): on a virtual machine a round trip between two CPUs took
anywhere from 1x to 4x as long depending on the connection, which no amount of
interleaving evens out; on one CPU every connection's round trip is the same.

What is printed for each workload and guard mode is the median over the
rounds of the per-round ratio guarded/plain, with its spread (the
interquartile range; min and max are in ``--json``), next to the targets of
issue 5, under a control row of plain mysqlclient against itself (the noise
floor: ideally 1.000).  Timing never fails the command: the exit code is 0
whenever the bench ran.

For reference the same workloads run with PyMySQL and mysql-connector-python
(its C extension when it loads), as ratios to plain mysqlclient.  They run in
a child process: mysql-connector-python's C extension needs the OpenSSL it
ships, which must be loaded before libmariadb (linked to the system's) is,
and that would change the process the guarddb figures are measured in.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Callable, TextIO

from .guard import MODES

perf_counter_ns = time.perf_counter_ns

#: Ratio at or under which a guarded workload meets issue 5's target.
TARGETS = {
    "roundtrip": 1.03,
    "fetchone": 1.15,
    "iterate": 1.15,
    "fetchall": 1.03,
    "ss_iterate": 1.03,
    "executemany": 1.03,
}
#: Per-mode exceptions to TARGETS.
MODE_TARGETS = {("mutex", "roundtrip"): 1.05}
#: mutex mode, threads sharing one connection: guarddb's throughput over the Lock wrapper's.
CONTENTION_TARGET = 1.0


@dataclass(frozen=True)
class Sizes:
    """How much work one run of the bench does.

    A round runs each side ``chunks`` times, alternating plain and guarded
    chunk by chunk, so that a burst of load on the machine hits both alike;
    the round's ratio is the guarded sum over the plain sum.
    """

    rows: int  # rows of the big result (fetchone loop, iteration, fetchall, SSCursor)
    many: int  # rows inserted by one executemany
    roundtrips: int  # execute("SELECT 1") + fetchone() per chunk
    chunks: int  # chunks per side per round (a chunk: roundtrips, one pass, one statement)
    rounds: int  # interleaved rounds for each workload and mode
    threads: int  # threads sharing one connection (contention)
    thread_calls: int  # round trips per thread per contention sample
    reference_rounds: int  # rounds for PyMySQL and mysql-connector-python


FULL = Sizes(
    rows=20_000,
    many=1_000,
    roundtrips=200,
    chunks=6,
    rounds=15,
    threads=8,
    thread_calls=250,
    reference_rounds=7,
)
QUICK = Sizes(
    rows=2_000,
    many=200,
    roundtrips=20,
    chunks=2,
    rounds=3,
    threads=8,
    thread_calls=25,
    reference_rounds=2,
)


# -- the drivers, as the workloads see them ---------------------------------------------------


class Side:
    """One driver's connection: the cursors and calls the workloads need.

    ``rewind`` puts a buffered cursor back at its first row (``scroll`` where
    the driver has it, else a new execute); it is never timed.
    """

    def __init__(
        self,
        label: str,
        conn: Any,
        cursor: Callable[[], Any],
        ss_cursor: Callable[[], Any],
        rewind: Callable[[Any, str], None],
    ) -> None:
        self.label = label
        self.conn = conn
        self.cursor = cursor
        self.ss_cursor = ss_cursor
        self.rewind = rewind

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def _scroll_to_start(cursor: Any, _query: str) -> None:
    cursor.scroll(0, "absolute")


def _execute_again(cursor: Any, query: str) -> None:
    cursor.execute(query)


def mysqlclient_side(module: Any, label: str, connect_args: dict[str, Any], **extra: Any) -> Side:
    """A Side on ``module.connect``: MySQLdb, or guarddb with ``guard=`` (same code for both)."""
    import MySQLdb.cursors

    conn = module.connect(**connect_args, charset="utf8mb4", autocommit=True, **extra)
    return Side(
        label,
        conn,
        conn.cursor,
        lambda: conn.cursor(MySQLdb.cursors.SSCursor),
        _scroll_to_start,
    )


def pymysql_side(connect_args: dict[str, Any]) -> Side:
    """A Side on PyMySQL."""
    import pymysql
    import pymysql.cursors

    conn = pymysql.connect(**connect_args, charset="utf8mb4", autocommit=True)
    return Side(
        "PyMySQL",
        conn,
        conn.cursor,
        lambda: conn.cursor(pymysql.cursors.SSCursor),
        lambda cursor, _query: cursor.scroll(0, mode="absolute"),
    )


def connector_side(connect_args: dict[str, Any], use_pure: bool) -> Side:
    """A Side on mysql-connector-python (its C extension unless ``use_pure``)."""
    import mysql.connector

    conn = mysql.connector.connect(
        **connect_args, charset="utf8mb4", autocommit=True, use_pure=use_pure
    )
    return Side(
        "mysql-connector-python",
        conn,
        lambda: conn.cursor(buffered=True),
        conn.cursor,
        _execute_again,
    )


# -- the workloads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tables:
    """The bench's tables (named per process: a shared test server is safe)."""

    rows: str
    many: str

    @property
    def select(self) -> str:
        return f"SELECT id, name, value FROM {self.rows}"

    @property
    def insert(self) -> str:
        return f"INSERT INTO {self.many} (id, name, value) VALUES (%s, %s, %s)"


def _row(i: int) -> tuple[int, str, float]:
    return (i, f"name-{i:06d}", i * 0.5)


# Each workload is a generator: it sets up (untimed), then yields the
# nanoseconds of one timed chunk each time it is resumed, and cleans up when
# closed.


def _roundtrip(side: Side, sizes: Sizes, tables: Tables) -> Iterator[int]:
    cursor = side.cursor()
    try:
        while True:
            start = perf_counter_ns()
            for _ in range(sizes.roundtrips):
                cursor.execute("SELECT 1")
                cursor.fetchone()
            yield perf_counter_ns() - start
    finally:
        cursor.close()


def _fetchone(side: Side, sizes: Sizes, tables: Tables) -> Iterator[int]:
    cursor = side.cursor()
    try:
        cursor.execute(tables.select)
        while True:
            start = perf_counter_ns()
            while cursor.fetchone() is not None:
                pass
            yield perf_counter_ns() - start
            side.rewind(cursor, tables.select)
    finally:
        cursor.close()


def _iterate(side: Side, sizes: Sizes, tables: Tables) -> Iterator[int]:
    cursor = side.cursor()
    try:
        cursor.execute(tables.select)
        while True:
            start = perf_counter_ns()
            for _row in cursor:
                pass
            yield perf_counter_ns() - start
            side.rewind(cursor, tables.select)
    finally:
        cursor.close()


def _fetchall(side: Side, sizes: Sizes, tables: Tables) -> Iterator[int]:
    cursor = side.cursor()
    try:
        while True:
            start = perf_counter_ns()
            cursor.execute(tables.select)
            rows = cursor.fetchall()
            elapsed = perf_counter_ns() - start
            if len(rows) != sizes.rows:
                raise AssertionError(f"{side.label}: fetchall gave {len(rows)} rows")
            del rows
            yield elapsed
    finally:
        cursor.close()


def _ss_iterate(side: Side, sizes: Sizes, tables: Tables) -> Iterator[int]:
    while True:
        cursor = side.ss_cursor()
        try:
            start = perf_counter_ns()
            cursor.execute(tables.select)
            for _row in cursor:
                pass
            elapsed = perf_counter_ns() - start
        finally:
            cursor.close()
        yield elapsed


def _executemany(side: Side, sizes: Sizes, tables: Tables) -> Iterator[int]:
    data = [_row(i) for i in range(sizes.many)]
    cursor = side.cursor()
    try:
        cursor.execute(f"TRUNCATE TABLE {tables.many}")
        while True:
            start = perf_counter_ns()
            cursor.executemany(tables.insert, data)
            yield perf_counter_ns() - start
    finally:
        cursor.close()


@dataclass(frozen=True)
class Workload:
    """One thing the bench times: ``run`` yields the nanoseconds of one chunk at a time."""

    key: str
    title: str
    short: str  # for the chart
    unit: str  # what "per op" means, for the plain time shown
    run: Callable[[Side, Sizes, Tables], Iterator[int]]
    ops: Callable[[Sizes], int]  # ops in one chunk
    scale: float  # seconds per op -> shown unit


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "roundtrip",
        'round trip: execute("SELECT 1") + fetchone()',
        "round trip",
        "µs/call",
        _roundtrip,
        lambda s: s.roundtrips,
        1e6,
    ),
    Workload(
        "fetchone",
        "fetchone() loop over a buffered result",
        "fetchone() loop",
        "ns/row",
        _fetchone,
        lambda s: s.rows,
        1e9,
    ),
    Workload(
        "iterate",
        "for row in cursor (buffered)",
        "iteration",
        "ns/row",
        _iterate,
        lambda s: s.rows,
        1e9,
    ),
    Workload(
        "fetchall",
        "execute + fetchall()",
        "execute + fetchall()",
        "ms/query",
        _fetchall,
        lambda s: 1,
        1e3,
    ),
    Workload(
        "ss_iterate",
        "SSCursor: execute + iterate",
        "SSCursor iteration",
        "ms/query",
        _ss_iterate,
        lambda s: 1,
        1e3,
    ),
    Workload(
        "executemany",
        "executemany(INSERT)",
        "executemany()",
        "ms/call",
        _executemany,
        lambda s: 1,
        1e3,
    ),
)
WORKLOAD_KEYS = tuple(w.key for w in WORKLOADS)


def target(mode: str, workload: str) -> float:
    """Issue 5's target for this mode and workload (a ratio guarded/plain to stay at or under)."""
    return MODE_TARGETS.get((mode, workload), TARGETS[workload])


def describe_workload(workload: Workload, sizes: Sizes) -> str:
    """The title with this run's sizes."""
    if workload.key == "roundtrip":
        return workload.title
    if workload.key == "executemany":
        return f"{workload.title} of {sizes.many:,} rows into a MEMORY table"
    return f"{workload.title} of {sizes.rows:,} rows"


# -- measuring --------------------------------------------------------------------------------


class Progress:
    """One progress line on stderr (rewritten in place on a terminal, a line per step otherwise)."""

    def __init__(self, total: int, out: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.section = ""
        self.started = time.monotonic()

    def step(self, section: str, detail: str = "") -> None:
        """Count one step done and say what runs next."""
        self.done += 1
        self.show(section, detail)

    def show(self, section: str, detail: str = "") -> None:
        """Say what runs now."""
        percent = min(100, 100 * self.done // self.total)
        if self.tty:
            text = f"bench [{percent:3d}%] {section}"
            if detail:
                text += f" · {detail}"
            self.out.write(f"\r\033[K{text[:150]}")
        elif section != self.section:
            elapsed = time.monotonic() - self.started
            self.out.write(f"bench [{percent:3d}%, {elapsed:5.1f}s] {section}\n")
        self.section = section
        self.out.flush()

    def finish(self) -> None:
        """Clear the progress line."""
        if self.tty:
            self.out.write("\r\033[K")
            self.out.flush()


def _chunk(chunks: Iterator[int]) -> int:
    """One timed chunk, with the garbage collector collected before and off during it."""
    gc.collect()
    gc.disable()
    try:
        return next(chunks)
    finally:
        gc.enable()


def summarize(ratios: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles, min and max of per-round ratios."""
    values = sorted(ratios)
    median = statistics.median(values)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = median
    return {
        "median": median,
        "q1": q1,
        "q3": q3,
        "min": values[0],
        "max": values[-1],
        "ratios": list(ratios),
    }


def compare(
    base: Callable[[], Side],
    other: Callable[[], Side],
    workload: Workload,
    sizes: Sizes,
    tables: Tables,
    rounds: int,
    progress: Progress,
    section: str,
) -> dict[str, Any]:
    """Interleave two sides on one workload; the ratios other/base and the times.

    Each round opens a connection on each side (``base()``, ``other()``), runs
    ``sizes.chunks`` chunks on each, alternating, sums each side's time, and
    closes them.  New connections every round: how fast one connection's
    server thread answers depends on where the scheduler put it, and that
    must not stick to one side for a whole workload.
    """
    chunks = sizes.chunks
    base_ns: list[int] = []
    other_ns: list[int] = []
    for number in range(rounds + 1):  # round 0 warms up, untimed
        progress.show(section, f"round {number}/{rounds}" if number else "warm-up")
        if number % 2:
            base_side, other_side = base(), other()
        else:
            other_side, base_side = other(), base()
        base_run = workload.run(base_side, sizes, tables)
        other_run = workload.run(other_side, sizes, tables)
        try:
            base_total = other_total = 0
            for turn in range(chunks):
                # A B, then B A: neither side always goes first.
                if turn % 2 == number % 2:
                    base_total += _chunk(base_run)
                    other_total += _chunk(other_run)
                else:
                    other_total += _chunk(other_run)
                    base_total += _chunk(base_run)
        finally:
            base_run.close()
            other_run.close()
            base_side.close()
            other_side.close()
        if number:
            base_ns.append(base_total)
            other_ns.append(other_total)
            progress.step(section, f"round {number}/{rounds}")
    ops = workload.ops(sizes) * chunks
    result = summarize([o / b for o, b in zip(other_ns, base_ns)])
    result["base_per_op"] = statistics.median(base_ns) / 1e9 / ops
    result["other_per_op"] = statistics.median(other_ns) / 1e9 / ops
    result["base_s"] = [t / 1e9 for t in base_ns]
    result["other_s"] = [t / 1e9 for t in other_ns]
    return result


def _contention_sample(conn: Any, lock: threading.Lock | None, threads: int, calls: int) -> int:
    """Nanoseconds for ``threads`` threads to do ``calls`` round trips each on one connection."""
    errors: list[BaseException] = []
    wrong = [0]
    ready = threading.Barrier(threads + 1)

    def worker() -> None:
        cursor = conn.cursor()
        ready.wait()
        try:
            if lock is None:
                for _ in range(calls):
                    cursor.execute("SELECT 1")
                    if cursor.fetchone() != (1,):
                        wrong[0] += 1
            else:
                for _ in range(calls):
                    with lock:
                        cursor.execute("SELECT 1")
                    with lock:
                        row = cursor.fetchone()
                    if row != (1,):
                        wrong[0] += 1
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=worker, name=f"bench-{i}") for i in range(threads)]
    for thread in workers:
        thread.start()
    ready.wait()
    start = perf_counter_ns()
    for thread in workers:
        thread.join()
    elapsed = perf_counter_ns() - start
    if errors:
        raise RuntimeError(f"contention: a thread failed: {errors[0]!r}") from errors[0]
    if wrong[0]:
        raise RuntimeError(f"contention: {wrong[0]} round trips returned a wrong row")
    return elapsed


def contention(
    connect_args: dict[str, Any], sizes: Sizes, rounds: int, progress: Progress
) -> dict[str, Any]:
    """mutex mode under contention against plain mysqlclient with one threading.Lock per call."""
    import MySQLdb

    import guarddb

    section = f"mutex, {sizes.threads} threads sharing one connection"
    guarded = guarddb.connect(**connect_args, charset="utf8mb4", autocommit=True, guard="mutex")
    plain = MySQLdb.connect(**connect_args, charset="utf8mb4", autocommit=True)
    lock = threading.Lock()
    threads, calls = sizes.threads, sizes.thread_calls

    def samples(conn: Any, lock: threading.Lock | None) -> Iterator[int]:
        while True:
            yield _contention_sample(conn, lock, threads, calls)

    plain_run, guarded_run = samples(plain, lock), samples(guarded, None)
    plain_ns: list[int] = []
    guarded_ns: list[int] = []
    try:
        for number in range(rounds + 1):  # round 0 warms up, untimed
            progress.show(section, f"round {number}/{rounds}" if number else "warm-up")
            if number % 2:
                plain_time, guarded_time = _chunk(plain_run), _chunk(guarded_run)
            else:
                guarded_time, plain_time = _chunk(guarded_run), _chunk(plain_run)
            if number:
                plain_ns.append(plain_time)
                guarded_ns.append(guarded_time)
                progress.step(section, f"round {number}/{rounds}")
        stats = guarded.guard_stats()
    finally:
        guarded.close()
        plain.close()
    total = threads * calls
    # Throughput ratio guarddb/plain: plain time over guarded time, per round.
    result = summarize([p / g for p, g in zip(plain_ns, guarded_ns)])
    result.update(
        threads=threads,
        calls_per_thread=calls,
        guarddb_calls_per_s=total / (statistics.median(guarded_ns) / 1e9),
        plain_lock_calls_per_s=total / (statistics.median(plain_ns) / 1e9),
        guarddb_s=[t / 1e9 for t in guarded_ns],
        plain_lock_s=[t / 1e9 for t in plain_ns],
        guarddb_waits=stats["waits"],
        target=CONTENTION_TARGET,
        met=result["median"] >= CONTENTION_TARGET,
    )
    return result


# -- the tables -------------------------------------------------------------------------------


def create_tables(connect_args: dict[str, Any], sizes: Sizes) -> Tables:
    """Create and fill this run's tables (with plain mysqlclient)."""
    import MySQLdb

    suffix = f"{os.getpid()}_{int(time.time() * 1000) % 100_000}"
    tables = Tables(rows=f"guarddb_bench_rows_{suffix}", many=f"guarddb_bench_many_{suffix}")
    conn = MySQLdb.connect(**connect_args, charset="utf8mb4", autocommit=True)
    try:
        cursor = conn.cursor()
        # The insert table lives in memory: the client is what is measured, and
        # InnoDB's background flushing made executemany's plain/plain control
        # wander by +-5% (MEMORY: +-1.5%).
        for name, engine in ((tables.rows, "InnoDB"), (tables.many, "MEMORY")):
            cursor.execute(
                f"CREATE TABLE {name} (id INT NOT NULL, name VARCHAR(32) NOT NULL, "
                f"value DOUBLE NOT NULL) ENGINE={engine}"
            )
        insert = f"INSERT INTO {tables.rows} (id, name, value) VALUES (%s, %s, %s)"
        for start in range(0, sizes.rows, 5_000):
            cursor.executemany(
                insert, [_row(i) for i in range(start, min(start + 5_000, sizes.rows))]
            )
        cursor.execute(f"SELECT id, name, value FROM {tables.rows} LIMIT 1")
        cursor.fetchall()
    finally:
        conn.close()
    return tables


def drop_tables(connect_args: dict[str, Any], tables: Tables) -> None:
    """Drop this run's tables (best effort)."""
    import MySQLdb

    try:
        conn = MySQLdb.connect(**connect_args)
        try:
            conn.cursor().execute(f"DROP TABLE IF EXISTS {tables.rows}, {tables.many}")
        finally:
            conn.close()
    except MySQLdb.Error as exc:
        print(f"guarddb bench: could not drop the bench tables: {exc}", file=sys.stderr)


# -- the guarded modes ------------------------------------------------------------------------


def run_modes(
    connect_args: dict[str, Any],
    sizes: Sizes,
    tables: Tables,
    rounds: int,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    """Every workload in every mode, guarddb against plain mysqlclient."""
    import MySQLdb

    import guarddb

    def plain() -> Side:
        return mysqlclient_side(MySQLdb, "plain mysqlclient", connect_args)

    results: dict[str, dict[str, Any]] = {}
    for mode in MODES:

        def guarded(mode: str = mode) -> Side:
            return mysqlclient_side(guarddb, f"guarddb {mode}", connect_args, guard=mode)

        per_mode: dict[str, Any] = {}
        for workload in WORKLOADS:
            section = f"{mode}: {workload.title}"
            measured = compare(plain, guarded, workload, sizes, tables, rounds, progress, section)
            limit = target(mode, workload.key)
            measured["target"] = limit
            measured["met"] = measured["median"] <= limit
            per_mode[workload.key] = measured
        results[mode] = per_mode
    return results


def run_control(
    connect_args: dict[str, Any],
    sizes: Sizes,
    tables: Tables,
    rounds: int,
    progress: Progress,
) -> dict[str, Any]:
    """Plain mysqlclient against itself on a second connection: the bench's noise floor.

    Ideally 1.000 everywhere; how far it is off says how much of a guarded
    ratio the machine (other processes, where the scheduler put each
    connection's server thread) can explain.
    """
    import MySQLdb

    def plain() -> Side:
        return mysqlclient_side(MySQLdb, "plain mysqlclient", connect_args)

    return {
        workload.key: compare(
            plain,
            plain,
            workload,
            sizes,
            tables,
            rounds,
            progress,
            f"control, plain/plain: {workload.title}",
        )
        for workload in WORKLOADS
    }


#: A control (plain/plain) median further than this from 1 means a noisy machine.
NOISE_MARGIN = 0.03


def noise_warning(report: dict[str, Any]) -> str | None:
    """A warning when the control shows the machine was too noisy to hold the targets to."""
    worst = max(report["control"].items(), key=lambda item: abs(item[1]["median"] - 1))
    key, stats = worst
    if abs(stats["median"] - 1) <= NOISE_MARGIN:
        return None
    return (
        f"NOISY: plain/plain on {key} came out at {stats['median']:.3f}x (should be 1): "
        f"something else ran on this machine (load average "
        f"{report['environment']['load_average']:.2f} at the start, "
        f"{report.get('load_average_end', float('nan')):.2f} at the end); ratios within "
        f"that of 1 mean nothing. Run the bench again on a quiet machine."
    )


# -- PyMySQL and mysql-connector-python, in a child process ------------------------------------

REFERENCES = ("pymysql", "mysql-connector")
#: Seconds the reference child may take (it hangs only if something is badly wrong).
REFERENCE_TIME_LIMIT = 1800

_REFERENCE_NAMES = {
    "pymysql": ("PyMySQL", "pymysql", "PyMySQL"),
    "mysql-connector": ("mysql-connector-python", "mysql.connector", "mysql-connector-python"),
}

# The child loads mysql-connector-python's C extension before anything else:
# it needs the OpenSSL the wheel ships, and fails with the system's
# ("version `OPENSSL_3.2.0' not found") once libmariadb has loaded that one.
_CHILD = """
import sys
cext_error = ""
if sys.argv[2] == "1":
    try:
        import _mysql_connector  # noqa: F401
    except Exception as exc:
        cext_error = f"{type(exc).__name__}: {exc}"
from guarddb.bench import reference_child
sys.exit(reference_child(sys.argv[1], cext_error))
"""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules
        return False


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def reference_plan() -> dict[str, dict[str, Any]]:
    """Which reference drivers are installed, and their versions."""
    plan: dict[str, dict[str, Any]] = {}
    for key in REFERENCES:
        label, module, dist = _REFERENCE_NAMES[key]
        available = _installed(module)
        plan[key] = {
            "label": label,
            "available": available,
            "version": _dist_version(dist) if available else None,
            "implementation": None,
            "note": "" if available else f"not installed: pip install 'guarddb[bench]' ({dist})",
            "workloads": {},
        }
    return plan


def run_references(
    connect_args: dict[str, Any],
    sizes: Sizes,
    tables: Tables,
    rounds: int,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    """The reference drivers against plain mysqlclient, measured in a child process."""
    plan = reference_plan()
    if not any(entry["available"] for entry in plan.values()):
        return plan
    request = {
        "connect_args": connect_args,
        "sizes": asdict(sizes),
        "tables": asdict(tables),
        "rounds": rounds,
        "plan": plan,
        "progress": {
            "total": progress.total,
            "done": progress.done,
            "elapsed": time.monotonic() - progress.started,
        },
    }
    import guarddb

    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(guarddb.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    preload = "1" if plan["mysql-connector"]["available"] else "0"
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(request), preload],
            stdout=subprocess.PIPE,
            env=env,
            timeout=REFERENCE_TIME_LIMIT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        for entry in plan.values():
            if entry["available"]:
                entry["note"] = f"the reference run took over {REFERENCE_TIME_LIMIT}s: stopped"
        return plan
    progress.done += sum(len(WORKLOADS) * rounds for entry in plan.values() if entry["available"])
    if done.returncode != 0:
        for entry in plan.values():
            if entry["available"]:
                entry["note"] = f"the reference run failed (exit code {done.returncode})"
        return plan
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def reference_child(request_json: str, cext_error: str) -> int:
    """In the child: each available reference driver against plain mysqlclient; JSON on stdout."""
    import MySQLdb

    request = json.loads(request_json)
    connect_args: dict[str, Any] = request["connect_args"]
    sizes = Sizes(**request["sizes"])
    tables = Tables(**request["tables"])
    rounds: int = request["rounds"]
    plan: dict[str, dict[str, Any]] = request["plan"]
    progress = Progress(request["progress"]["total"])
    progress.done = request["progress"]["done"]
    progress.started -= request["progress"]["elapsed"]
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints (driver warnings) must not spoil the JSON

    def plain() -> Side:
        return mysqlclient_side(MySQLdb, "plain mysqlclient", connect_args)

    for key, entry in plan.items():
        if not entry["available"]:
            continue
        driver: Callable[[], Side]
        if key == "pymysql":
            driver = functools.partial(pymysql_side, connect_args)
        else:
            import mysql.connector

            use_pure = not getattr(mysql.connector, "HAVE_CEXT", False)
            driver = functools.partial(connector_side, connect_args, use_pure)
        try:
            probe = driver()
        except Exception as exc:
            entry["available"] = False
            entry["note"] = f"could not connect: {type(exc).__name__}: {exc}"
            progress.done += len(WORKLOADS) * rounds
            continue
        if type(probe.conn).__name__.startswith("CMySQL"):
            entry["implementation"] = "C extension"
        else:
            entry["implementation"] = "pure Python"
            if key == "mysql-connector":
                why = f" ({cext_error})" if cext_error else ""
                entry["note"] = f"its C extension did not load{why}"
        probe.close()
        for workload in WORKLOADS:
            section = f"reference {entry['label']}: {workload.title}"
            try:
                entry["workloads"][workload.key] = compare(
                    plain, driver, workload, sizes, tables, rounds, progress, section
                )
            except Exception as exc:
                entry["workloads"][workload.key] = {"error": f"{type(exc).__name__}: {exc}"}
    progress.finish()
    json.dump(plan, out)
    out.flush()
    return 0


# -- the report -------------------------------------------------------------------------------


def _ratio(value: float) -> str:
    return f"{value:.3f}x"


def _spread(stats: dict[str, Any]) -> str:
    return f"{stats['q1']:.3f}-{stats['q3']:.3f}"


def _per_op(workload: Workload, seconds: float) -> str:
    value = seconds * workload.scale
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{digits}f} {workload.unit}"


def _table(rows: list[list[str]], out: TextIO) -> None:
    """A markdown table with aligned columns (readable as it is, pasteable into the README)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    print(line(rows[0]), file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for row in rows[1:]:
        print(line(row), file=out)


def print_report(report: dict[str, Any], out: TextIO) -> None:
    """The tables: guarddb per mode, mutex under contention, the reference drivers."""
    sizes = Sizes(**report["sizes"])
    env = report["environment"]
    print(
        f"guarddb {env['guarddb']} vs plain mysqlclient {env['mysqlclient']}: median ratio "
        f"guarded/plain of {report['rounds']} interleaved rounds (IQR: the middle half of "
        f"the rounds)",
        file=out,
    )
    print(
        f"server: {env['server']} over {env['transport']}; Python {env['python']}; "
        f"{env['cpus']} CPUs; {env['machine']}; load average {env['load_average']:.2f} at "
        f"the start; {env['pinning']}",
        file=out,
    )
    if report["quick"]:
        print(
            "--quick: small sizes and few rounds, to prove the bench works; not a measurement",
            file=out,
        )
    print(file=out)

    rows = [["workload", "mode", "plain mysqlclient", "guarded/plain", "IQR", "target", ""]]
    for workload in WORKLOADS:
        control = report["control"][workload.key]
        rows.append(
            [
                describe_workload(workload, sizes),
                "control: plain/plain",
                _per_op(workload, control["base_per_op"]),
                _ratio(control["median"]),
                _spread(control),
                "1",
                "",
            ]
        )
        for mode in MODES:
            stats = report["modes"][mode][workload.key]
            rows.append(
                [
                    "",
                    mode if mode != "mutex" else "mutex (uncontended)",
                    _per_op(workload, stats["base_per_op"]),
                    _ratio(stats["median"]),
                    _spread(stats),
                    f"≤ {stats['target']:.2f}x",
                    "met" if stats["met"] else "MISSED",
                ]
            )
    _table(rows, out)

    c = report["contention"]
    print(file=out)
    _table(
        [
            [
                f"{c['threads']} threads share one connection, round trips",
                "calls/s",
                "guarddb/plain",
                "IQR",
                "target",
                "",
            ],
            [
                "guarddb, guard='mutex'",
                f"{c['guarddb_calls_per_s']:,.0f}",
                _ratio(c["median"]),
                _spread(c),
                f"≥ {c['target']:.2f}x",
                "met" if c["met"] else "MISSED",
            ],
            [
                "plain mysqlclient, every call in one threading.Lock",
                f"{c['plain_lock_calls_per_s']:,.0f}",
                "1",
                "",
                "",
                "",
            ],
        ],
        out,
    )

    print(file=out)
    references = report["reference"]
    available = [key for key in REFERENCES if references[key]["available"]]
    header = ["reference: driver/plain mysqlclient", "plain mysqlclient"]
    for key in available:
        entry = references[key]
        header.append(f"{entry['label']} {entry['version']} ({entry['implementation']})")
    if available:
        rows = [header]
        for workload in WORKLOADS:
            row = [describe_workload(workload, sizes), ""]
            for key in available:
                stats = references[key]["workloads"].get(workload.key, {})
                if "median" in stats:
                    row[1] = row[1] or _per_op(workload, stats["base_per_op"])
                    row.append(f"{_ratio(stats['median'])} ({_spread(stats)})")
                else:
                    row.append(stats.get("error", "not run"))
            rows.append(row)
        _table(rows, out)
    for key in REFERENCES:
        entry = references[key]
        if entry["note"]:
            print(f"{entry['label']}: {entry['note']}", file=out)
    if not available:
        print("reference drivers: none installed (pip install 'guarddb[bench]')", file=out)

    missed = [
        f"{mode}/{key}"
        for mode in MODES
        for key, stats in report["modes"][mode].items()
        if not stats["met"]
    ]
    if not c["met"]:
        missed.append("mutex contended")
    print(file=out)
    total = len(MODES) * len(WORKLOADS) + 1
    if missed:
        print(
            f"targets met: {total - len(missed)} of {total}; missed: {', '.join(missed)}", file=out
        )
    else:
        print(f"targets met: all {total}", file=out)
    warning = None if report["quick"] else noise_warning(report)
    if warning:
        print(warning, file=out)
    print(f"(bench ran in {report['elapsed_s']:.0f}s)", file=out)


# -- the chart --------------------------------------------------------------------------------

MATPLOTLIB_MISSING = (
    "--plot needs matplotlib, which is not installed: pip install 'guarddb[bench]' "
    "(or pip install matplotlib)"
)


def have_matplotlib() -> bool:
    """True if matplotlib can be imported."""
    return _installed("matplotlib")


def _workload_labels(sizes: Sizes) -> list[str]:
    labels = []
    for w in WORKLOADS:
        if w.key == "roundtrip":
            size = "SELECT 1"
        elif w.key == "executemany":
            size = f"{sizes.many:,} rows"
        else:
            size = f"{sizes.rows:,} rows"
        labels.append(f"{w.short}\n{size}")
    return labels


def plot(report: dict[str, Any], path: str) -> None:
    """A PNG bar chart of the ratios: guarddb per mode, contention, the reference drivers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    sizes = Sizes(**report["sizes"])
    labels = _workload_labels(sizes)
    env = report["environment"]
    references = report["reference"]
    available = [k for k in REFERENCES if references[k]["available"] and references[k]["workloads"]]
    panels = 1 + bool(available)
    fig, axes = plt.subplots(
        panels,
        2,
        figsize=(14, 5 * panels),
        gridspec_kw={"width_ratios": [5, 1]},
        squeeze=False,
    )
    fig.suptitle(
        f"guarddb {env['guarddb']} vs plain mysqlclient {env['mysqlclient']}: "
        f"{env['server']}, {env['transport']}, Python {env['python']}, {env['cpus']} CPUs, "
        f"median of {report['rounds']} interleaved rounds{' (--quick)' if report['quick'] else ''}"
        f"\n{env['pinning']}"
    )
    times = FuncFormatter(lambda value, _pos: f"{value:g}x")
    x = range(len(WORKLOADS))

    ax = axes[0][0]
    series = [("control: plain/plain", report["control"], "0.75")] + [
        (mode, report["modes"][mode], f"C{i}") for i, mode in enumerate(MODES)
    ]
    width = 0.8 / len(series)
    for i, (name, results, color) in enumerate(series):
        stats = [results[w.key] for w in WORKLOADS]
        medians = [s["median"] for s in stats]
        errors = [
            [s["median"] - s["q1"] for s in stats],
            [s["q3"] - s["median"] for s in stats],
        ]
        positions = [p - 0.4 + width * (i + 0.5) for p in x]
        ax.bar(positions, medians, width, yerr=errors, capsize=2, label=name, color=color)
        for pos, w, median in zip(positions, WORKLOADS, medians):
            if name in MODES:
                limit = target(name, w.key)
                ax.hlines(limit, pos - width / 2, pos + width / 2, colors="black", lw=1.2)
            ax.annotate(
                f"{median:.2f}",
                (pos, median),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=6,
            )
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=8)
    ax.yaxis.set_major_formatter(times)
    ax.set_ylabel("time guarded / plain (bars: IQR)")
    ax.set_title("guarddb in each guard mode (black ticks: the targets; lower is better)")
    ax.legend(fontsize=8)
    low = min(results[w.key]["q1"] for _, results, _ in series for w in WORKLOADS)
    ax.set_ylim(min(0.9, low - 0.05), None)

    c = report["contention"]
    ax = axes[0][1]
    ax.bar([0, 1], [c["guarddb_calls_per_s"], c["plain_lock_calls_per_s"]], color=["C2", "C7"])
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["guarddb\nmutex", "plain +\nLock"], fontsize=8)
    ax.set_ylabel("round trips/s (higher is better)")
    ax.set_title(f"{c['threads']} threads share one\nconnection: {c['median']:.2f}x", fontsize=9)

    if available:
        ax = axes[1][0]
        width = 0.8 / len(available)
        for i, key in enumerate(available):
            entry = references[key]
            medians = [entry["workloads"].get(w.key, {}).get("median", 0.0) for w in WORKLOADS]
            positions = [p - 0.4 + width * (i + 0.5) for p in x]
            ax.bar(
                positions,
                medians,
                width,
                label=f"{entry['label']} {entry['version']} ({entry['implementation']})",
                color=f"C{4 + i}",
            )
            for pos, median in zip(positions, medians):
                if median:
                    ax.annotate(
                        f"{median:.2f}",
                        (pos, median),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_yscale("log")
        shown = [
            entry["workloads"].get(w.key, {}).get("median", 1.0)
            for entry in (references[k] for k in available)
            for w in WORKLOADS
        ]
        ticks = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
        ax.set_yticks([t for t in ticks if min(shown) / 2 <= t <= max(shown) * 2])
        ax.yaxis.set_major_formatter(times)
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("time driver / plain mysqlclient (log)")
        ax.set_title("for reference: other drivers against plain mysqlclient")
        ax.legend(fontsize=8)
        axes[1][1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- one CPU ----------------------------------------------------------------------------------


def _threads(pid: int) -> list[int]:
    return [int(task) for task in os.listdir(f"/proc/{pid}/task")]


def _idlest_cpu(allowed: set[int]) -> int:
    """The allowed CPU that was idle the most over a fifth of a second."""

    def idle() -> dict[int, int]:
        times: dict[int, int] = {}
        with open("/proc/stat") as stat:
            for line in stat:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    times[int(name[3:])] = int(fields[3]) + int(fields[4])  # idle + iowait
        return times

    try:
        before = idle()
        time.sleep(0.2)
        after = idle()
        return max(sorted(allowed), key=lambda cpu: after.get(cpu, 0) - before.get(cpu, 0))
    except (OSError, ValueError, IndexError):
        return max(allowed)


def pin_to_one_cpu(server_pid: int) -> tuple[int | None, str]:
    """Put every thread of the server and of this process on one CPU: (the CPU, what was done).

    A round trip between two CPUs costs here whatever the scheduler and the
    machine make of the wake-ups, and it sticks to a connection: one
    connection's round trips took 4x another's in the same second.  On one
    CPU a round trip is the same for every connection.  Threads started
    later (the server's connection threads, the reference child) inherit it.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None, "not pinned: this system cannot set CPU affinity"
    allowed = os.sched_getaffinity(0)
    cpu = _idlest_cpu(allowed)
    try:
        for tid in _threads(server_pid):
            os.sched_setaffinity(tid, {cpu})
        for tid in _threads(os.getpid()):
            os.sched_setaffinity(tid, {cpu})
    except OSError as exc:
        for pid in (server_pid, os.getpid()):
            with contextlib.suppress(OSError):
                for tid in _threads(pid):
                    os.sched_setaffinity(tid, allowed)
        return None, f"not pinned: {exc}"
    return cpu, f"the bench and its server pinned to CPU {cpu}"


# -- the command ------------------------------------------------------------------------------


def _server_version(connect_args: dict[str, Any]) -> str:
    import MySQLdb

    conn = MySQLdb.connect(**connect_args)
    try:
        info = conn.get_server_info()
    finally:
        conn.close()
    name = "MariaDB" if "MariaDB" in info else "MySQL"
    return f"{name} {info.split('-')[0]}"


def environment(connect_args: dict[str, Any], pinned: tuple[int | None, str]) -> dict[str, Any]:
    """What the numbers were measured on."""
    import MySQLdb.release

    import guarddb

    return {
        "guarddb": guarddb.__version__,
        "mysqlclient": MySQLdb.release.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "server": _server_version(connect_args),
        "transport": "unix socket" if "unix_socket" in connect_args else "TCP",
        "load_average": os.getloadavg()[0],
        "pinned_cpu": pinned[0],
        "pinning": pinned[1],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's command-line options."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few rounds: proves the bench works (CI), measures nothing",
    )
    parser.add_argument(
        "--dsn",
        help="mysql://user:pw@host:port/db or unix:///socket?user=..&db=.. "
        "(default: $GUARDDB_TEST_DSN, else a private MariaDB)",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        metavar="N",
        help=f"interleaved rounds per workload and mode (default: {FULL.rounds}, "
        f"--quick {QUICK.rounds})",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the bench and its private server to one CPU (round trips between "
        "CPUs vary a lot from connection to connection)",
    )
    parser.add_argument("--plot", metavar="FILE.png", help="write a bar chart of the ratios")
    parser.add_argument("--json", metavar="FILE", help="write every number as JSON")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """``python -m guarddb bench``: 0 whenever the bench ran (timing never fails it), else 2."""
    from ._server import ENV_DSN, PrivateServer, parse_dsn

    started = time.monotonic()
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or sizes.rounds
    reference_rounds = args.rounds or sizes.reference_rounds
    if args.plot and not have_matplotlib():
        print(f"guarddb bench: {MATPLOTLIB_MISSING}; running without the chart", file=sys.stderr)

    dsn = args.dsn or os.environ.get(ENV_DSN)
    server: PrivateServer | None = None
    try:
        if dsn:
            try:
                connect_args = parse_dsn(dsn)
            except ValueError as exc:
                print(f"guarddb bench: {exc}", file=sys.stderr)
                return 2
        else:
            sys.stderr.write("starting a private MariaDB ... ")
            sys.stderr.flush()
            server = PrivateServer()
            try:
                server.start()
            except RuntimeError as exc:
                print(
                    f"failed\nguarddb bench: {exc}\nGive a server with --dsn or ${ENV_DSN}.",
                    file=sys.stderr,
                )
                return 2
            connect_args = server.connect_args
            print(f"ready ({time.monotonic() - started:.1f}s)", file=sys.stderr)
        if not args.pin:
            pinned: tuple[int | None, str] = (None, "not pinned (--no-pin)")
        elif server is None or server.process is None:
            pinned = (None, "not pinned: the server is not the bench's own (--dsn)")
        else:
            pinned = pin_to_one_cpu(server.process.pid)
        report = measure(connect_args, sizes, rounds, reference_rounds, pinned)
    finally:
        if server is not None:
            server.destroy()
    report["quick"] = bool(args.quick)
    report["elapsed_s"] = time.monotonic() - started

    print_report(report, sys.stdout)
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=1)
            out.write("\n")
        print(f"numbers written to {args.json}")
    if args.plot:
        if have_matplotlib():
            plot(report, args.plot)
            print(f"chart written to {args.plot}")
        else:
            print(f"no chart: {MATPLOTLIB_MISSING}")
    return 0


def measure(
    connect_args: dict[str, Any],
    sizes: Sizes,
    rounds: int,
    reference_rounds: int,
    pinned: tuple[int | None, str] = (None, "not pinned"),
) -> dict[str, Any]:
    """Run every part of the bench against this server; the report (without timing of the whole)."""
    plan = reference_plan()
    reference_steps = sum(
        len(WORKLOADS) * reference_rounds for e in plan.values() if e["available"]
    )
    progress = Progress((len(MODES) + 1) * len(WORKLOADS) * rounds + rounds + reference_steps)
    progress.show("creating the bench tables")
    tables = create_tables(connect_args, sizes)
    try:
        report: dict[str, Any] = {
            "environment": environment(connect_args, pinned),
            "sizes": asdict(sizes),
            "rounds": rounds,
            "reference_rounds": reference_rounds,
            "workloads": {
                w.key: {
                    "title": describe_workload(w, sizes),
                    "unit": w.unit,
                    "ops_per_sample": w.ops(sizes),
                }
                for w in WORKLOADS
            },
            "targets": {mode: {w.key: target(mode, w.key) for w in WORKLOADS} for mode in MODES},
        }
        report["control"] = run_control(connect_args, sizes, tables, rounds, progress)
        report["modes"] = run_modes(connect_args, sizes, tables, rounds, progress)
        report["contention"] = contention(connect_args, sizes, rounds, progress)
        report["reference"] = run_references(
            connect_args, sizes, tables, reference_rounds, progress
        )
    finally:
        progress.finish()
        drop_tables(connect_args, tables)
    report["load_average_end"] = os.getloadavg()[0]
    return report
