"""``python -m guarddb bench``: its options, and every part of the bench against one server.

:func:`run` is the command (a private MariaDB unless told of a server);
:func:`measure` runs the control, every guard mode, guarddb.pymysql in every
mode against plain PyMySQL, the contention, the cooperative round trip under
gevent and the reference drivers against a server and returns the report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any, Callable

from guarddb import MODES

from .cooperative import cooperative_plan, run_cooperative
from .harness import Progress, compare, contention, environment, installed, pin_to_one_cpu
from .references import reference_plan, run_references
from .report import MATPLOTLIB_MISSING, have_matplotlib, plot, print_report
from .workloads import (
    FULL,
    QUICK,
    WORKLOADS,
    Side,
    Sizes,
    Tables,
    create_tables,
    describe_workload,
    drop_tables,
    mysqlclient_side,
    pymysql_side,
    rounds_of,
    target,
)

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

    def guarded(mode: str) -> Side:
        return mysqlclient_side(guarddb, f"guarddb {mode}", connect_args, guard=mode)

    return _every_mode(plain, guarded, "mysqlclient", "", sizes, tables, rounds, progress)


def _every_mode(
    plain: Callable[[], Side],
    guarded: Callable[[str], Side],
    driver: str,
    prefix: str,
    sizes: Sizes,
    tables: Tables,
    rounds: int,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    """Every workload in every mode, ``guarded(mode)`` against ``plain``, with the targets."""
    results: dict[str, dict[str, Any]] = {}
    for mode in MODES:

        def side(mode: str = mode) -> Side:
            return guarded(mode)

        per_mode: dict[str, Any] = {}
        for workload in WORKLOADS:
            section = f"{prefix}{mode}: {workload.title}"
            measured = compare(
                plain, side, workload, sizes, tables, rounds_of(workload, rounds), progress, section
            )
            limit = target(mode, workload.key, driver)
            measured["target"] = limit
            # None where there is no target: neither met nor missed.
            measured["met"] = None if limit is None else measured["median"] <= limit
            per_mode[workload.key] = measured
        results[mode] = per_mode
    return results


def pymysql_plan() -> dict[str, Any]:
    """Whether guarddb.pymysql can be measured here (PyMySQL installed), and PyMySQL's version."""
    available = installed("pymysql")
    version = None
    if available:
        import pymysql

        version = pymysql.VERSION_STRING
    return {
        "available": available,
        "version": version,
        "note": ""
        if available
        else "not run: PyMySQL is not installed (pip install 'guarddb[pymysql]')",
        "modes": {},
    }


def run_pymysql(
    connect_args: dict[str, Any],
    sizes: Sizes,
    tables: Tables,
    rounds: int,
    progress: Progress,
) -> dict[str, Any]:
    """Every workload in every mode, guarddb.pymysql against plain PyMySQL (when installed)."""
    entry = pymysql_plan()
    if not entry["available"]:
        return entry
    import guarddb.pymysql

    def plain() -> Side:
        return pymysql_side(connect_args)

    def guarded(mode: str) -> Side:
        return pymysql_side(connect_args, guarddb.pymysql, f"guarddb.pymysql {mode}", guard=mode)

    entry["modes"] = _every_mode(
        plain, guarded, "pymysql", "guarddb.pymysql ", sizes, tables, rounds, progress
    )
    return entry


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
            rounds_of(workload, rounds),
            progress,
            f"control, plain/plain: {workload.title}",
        )
        for workload in WORKLOADS
    }


# -- the command ------------------------------------------------------------------------------


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
    from ..server import ENV_DSN, PrivateServer, parse_dsn

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
    cooperative_steps = rounds if cooperative_plan()["available"] else 0
    per_mode = sum(rounds_of(w, rounds) for w in WORKLOADS)
    pymysql_steps = len(MODES) * per_mode if installed("pymysql") else 0
    progress = Progress(
        (len(MODES) + 1) * per_mode + rounds + pymysql_steps + cooperative_steps + reference_steps
    )
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
                    "rounds": rounds_of(w, rounds),
                }
                for w in WORKLOADS
            },
            "targets": {mode: {w.key: target(mode, w.key) for w in WORKLOADS} for mode in MODES},
        }
        report["control"] = run_control(connect_args, sizes, tables, rounds, progress)
        report["modes"] = run_modes(connect_args, sizes, tables, rounds, progress)
        report["pymysql"] = run_pymysql(connect_args, sizes, tables, rounds, progress)
        report["contention"] = contention(connect_args, sizes, rounds, progress)
        report["cooperative"] = run_cooperative(connect_args, sizes, tables, rounds, progress)
        report["reference"] = run_references(
            connect_args, sizes, tables, reference_rounds, progress
        )
    finally:
        progress.finish()
        drop_tables(connect_args, tables)
    report["load_average_end"] = os.getloadavg()[0]
    return report
