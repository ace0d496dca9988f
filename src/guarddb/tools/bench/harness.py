"""The bench's harness: timing two sides against each other, and what it ran on.

:func:`compare` interleaves two sides on one workload, round by round, and
:func:`summarize` gives the ratios' median and spread; :func:`contention`
measures mutex mode with threads sharing one connection; :func:`pin_to_one_cpu`
puts the bench and its private server on one CPU; :func:`environment` says
what the numbers were measured on.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, TextIO

from .workloads import CONTENTION_TARGET, Side, Sizes, Tables, Workload

perf_counter_ns = time.perf_counter_ns


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


# -- the environment ------------------------------------------------------------------------


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


def installed(module: str) -> bool:
    """True if ``module`` can be found (not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules
        return False
