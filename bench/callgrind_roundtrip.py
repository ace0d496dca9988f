"""Client instructions per round trip, guarded minus plain, counted by callgrind.

    python bench/callgrind_roundtrip.py [--dsn DSN] [--cases plain,exclusive,...] [--json FILE]
                                        [--budget] [--jobs N]

A round trip is ``cursor.execute("SELECT 1")`` + ``cursor.fetchone()``.  Each
case runs a child interpreter under ``valgrind --tool=callgrind`` twice, with
200 and 1,200 round trips (``PYTHONHASHSEED=0``, the garbage collector off),
and the figure is (instructions at 1,200 - at 200) / 1,000: everything done
once (start-up, imports, connect) cancels out.  Where objects land in memory
adds to that figure, by a few hundred instructions and at times by thousands
(CPython's method cache is indexed by the names' addresses: a collision sends a
look-up through the whole MRO), so each case is measured at seven memory layouts
and the least figure is taken.  The runs go in parallel (``--jobs``).  Only the
client is counted; the server is another process.  Instruction counts do not depend on the machine's
load, so the figures repeat from run to run (to a few instructions); they
differ between Python builds, which is why budgets compare guarded with plain
measured in the same run, never absolute figures.

Cases: ``plain`` (MySQLdb), ``exclusive``, ``strict``, ``mutex``, ``off``
(guarddb, each mode), ``pymysql`` (plain PyMySQL), ``pymysql-exclusive`` and
``pymysql-mutex`` (guarddb.pymysql; ``pymysql-<mode>`` takes any mode), compared
with plain PyMySQL, when PyMySQL and guarddb.pymysql are importable,
``gevent-exclusive`` (guarddb after ``gevent.monkey.patch_all()``) when gevent is.

``--budget`` checks the differences against :data:`BUDGETS` and exits 1 if one
is over.  Without ``--dsn`` (or ``$GUARDDB_TEST_DSN``) a private MariaDB is
started for the run.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

SMALL, LARGE = 200, 1200

#: Guarded minus plain, per round trip, that a case must stay within with --budget.
BUDGETS = {
    "exclusive": 500,
    "strict": 500,
    "mutex": 2500,
    "off": 0,
    "pymysql-exclusive": 500,
    "pymysql-mutex": 500,
}


def baseline(case: str) -> str:
    """The plain case a guarded case is compared with: PyMySQL's for guarddb.pymysql's."""
    return "pymysql" if case.startswith("pymysql-") else "plain"


CHILD = r"""
import gc, json, sys
case, n, connect_args, pad = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
# Where the interpreter's objects land shifts the instruction count by a few hundred per
# round trip (CPython's method cache is indexed by the names' addresses): each
# measurement is taken at several memory layouts, shifted by this padding.
_pad = ["x" * size for size in range(int(pad))]
if case.startswith("gevent-"):
    from gevent import monkey
    monkey.patch_all()
    case = case[len("gevent-"):]
if case == "plain":
    import MySQLdb as module
    conn = module.connect(**connect_args)
elif case == "pymysql":
    import pymysql as module
    conn = module.connect(**connect_args)
elif case.startswith("pymysql-"):
    import guarddb.pymysql as module
    conn = module.connect(guard=case[len("pymysql-"):], **connect_args)
else:
    import guarddb as module
    conn = module.connect(guard=case, **connect_args)
cursor = conn.cursor()
for _ in range(50):  # warm: caches, specialisation
    cursor.execute("SELECT 1")
    cursor.fetchone()
gc.disable()
for _ in range(n):
    cursor.execute("SELECT 1")
    cursor.fetchone()
"""


def _cases() -> list[str]:
    cases = ["plain", "exclusive", "strict", "mutex", "off"]
    if importlib.util.find_spec("pymysql") and importlib.util.find_spec("guarddb.pymysql"):
        cases += ["pymysql", "pymysql-exclusive", "pymysql-mutex"]
    if importlib.util.find_spec("gevent"):
        cases += ["gevent-exclusive"]
    return cases


def _pymysql_args(connect_args: dict[str, Any]) -> dict[str, Any]:
    # PyMySQL says db/passwd too, but unix_socket, user, database are the same.
    return dict(connect_args)


#: Paddings (see CHILD): each gives another memory layout.
PADDINGS = (0, 37, 71, 113, 167, 211, 263)


def _instructions(case: str, n: int, connect_args: dict[str, Any], tmp: str, pad: int = 0) -> int:
    out = os.path.join(tmp, f"callgrind.{case}.{n}.{pad}")
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            CHILD,
            case,
            str(n),
            json.dumps(connect_args),
            str(pad),
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    total = 0
    for path in glob.glob(out + "*"):
        with open(path) as f:
            for line in f:
                match = re.match(r"(?:summary|totals): (\d+)", line)
                if match:
                    total = max(total, int(match.group(1)))
    return total


def _per_trip(case: str, connect_args: dict[str, Any], tmp: str, pad: int) -> float:
    large = _instructions(case, LARGE, connect_args, tmp, pad)
    return (large - _instructions(case, SMALL, connect_args, tmp, pad)) / (LARGE - SMALL)


def measure(connect_args: dict[str, Any], cases: list[str], jobs: int) -> dict[str, float]:
    """Instructions per round trip for each case: the least over the memory layouts.

    A layout only ever adds work (a name that collides with another in CPython's
    method cache is looked up the long way, through every class of the MRO), so the
    least figure is the case's own cost; the spread is shown beside it.
    """
    per_trip: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(jobs) as pool:
        runs = {
            case: [
                pool.submit(
                    _per_trip,
                    case,
                    _pymysql_args(connect_args) if case.startswith("pymysql") else connect_args,
                    tmp,
                    pad,
                )
                for pad in PADDINGS
            ]
            for case in cases
        }
        for case, futures in runs.items():
            figures = sorted(future.result() for future in futures)
            per_trip[case] = figures[0]
            print(
                f"  {case:<18} {figures[0]:>9.0f}  (median {statistics.median(figures):.0f}, "
                f"layouts {figures[0]:.0f}-{figures[-1]:.0f})",
                file=sys.stderr,
            )
    return per_trip


def differences(per_trip: dict[str, float]) -> dict[str, float]:
    """Guarded minus its plain baseline, per case."""
    return {
        case: value - per_trip[baseline(case)]
        for case, value in per_trip.items()
        if case not in ("plain", "pymysql") and baseline(case) in per_trip
    }


def _connect_args(dsn: str | None) -> tuple[dict[str, Any], Any]:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from guarddb.tools.server import ENV_DSN, PrivateServer, parse_dsn

    dsn = dsn or os.environ.get(ENV_DSN)
    if dsn:
        return parse_dsn(dsn), None
    server = PrivateServer().start()
    return dict(server.connect_args), server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a server to use (default: a private MariaDB)")
    parser.add_argument("--cases", help="comma-separated cases (default: all available)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--budget", action="store_true", help="exit 1 if a case is over budget")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="valgrind runs at once"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 2
    cases = args.cases.split(",") if args.cases else _cases()
    if "plain" not in cases:
        cases.insert(0, "plain")
    if any(c.startswith("pymysql-") for c in cases) and "pymysql" not in cases:
        cases.insert(1, "pymysql")
    connect_args, server = _connect_args(args.dsn)
    try:
        print(f"callgrind, instructions per round trip ({LARGE}-{SMALL} trips):", file=sys.stderr)
        per_trip = measure(connect_args, cases, args.jobs)
    finally:
        if server is not None:
            server.destroy()
    diffs = differences(per_trip)
    over = []
    print("case                 per trip   minus plain   budget")
    for case, value in per_trip.items():
        diff = diffs.get(case)
        budget = BUDGETS.get(case)
        shown = "" if diff is None else f"{diff:+12.0f}"
        limit = "" if budget is None else f"{budget:+d}"
        if budget is not None and diff is not None and diff > budget:
            over.append(case)
            limit += "  OVER"
        print(f"{case:<18} {value:>10.0f} {shown:>13}   {limit}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"per_trip": per_trip, "minus_plain": diffs}, f, indent=2)
    if args.budget and over:
        print(f"over budget: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
