"""The C guard's fast path in instructions, counted by valgrind's callgrind.

    python bench/callgrind_guard.py [--iterations N] [--json FILE]

Runs a tiny Python loop under ``valgrind --tool=callgrind`` twice, with N and
2N iterations, for each case:

* ``enter/leave``: ``lib.guard_enter_mode(slot)`` + ``lib.guard_leave(slot)``, the
  statement path's pair, with the slot's flags 0 (exclusive mode) or ``GUARD_STRICT``;
* ``mutex``: the same with ``GUARD_TIMED`` (mutex mode uncontended: it waits, in
  another call, only when that enter says busy);
* an empty loop, to take the interpreter's loop out of the whole-loop figure.

Subtracting the N run from the 2N run and dividing by N removes everything
done once (start-up, imports, the slot) and leaves exact per-pair counts:

* **C guard**: the inclusive instructions of the guard functions themselves
  (``guard_enter_mode`` + ``guard_leave``, with what they call: ``pthread_self``,
  the clock for mutex mode's hold time);
* **through cffi**: the inclusive instructions of cffi's wrappers
  (``_cffi_f_guard_*``: argument conversion, errno and the guard; built
  by build.py to keep the GIL);
* **from Python**: the whole loop iteration minus the empty loop's (the two
  calls as Python code makes them, attribute lookups and all).

Instruction counts do not depend on the machine's load, so the figures are the
same from run to run (to an instruction or so); they are what the README records.
The guard measured is the one ``import guarddb`` finds; a source tree's
``src/guarddb`` (built in place with ``python build.py``) is preferred when
this script sits in that tree.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_TREE = os.path.join(os.path.dirname(HERE), "src")

# The child loads only the compiled guard (not guarddb and MySQLdb): a shorter
# run under valgrind, and nothing else that could call into the guard.
CHILD = r"""
import importlib.machinery, importlib.util, sys
case, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
loader = importlib.machinery.ExtensionFileLoader("guarddb._guard", path)
spec = importlib.util.spec_from_file_location("guarddb._guard", path, loader=loader)
module = importlib.util.module_from_spec(spec)
loader.exec_module(module)
lib = module.lib


def pairs(slot, n, flags, enter=lib.guard_enter_mode, leave=lib.guard_leave):
    lib.guard_set_flags(slot, flags)  # the mode's, as a connection's guard sets them
    for _ in range(n):
        enter(slot)
        leave(slot)


def enter(slot, n):
    pairs(slot, n, 0)


def strict(slot, n):
    pairs(slot, n, lib.GUARD_STRICT)


def mutex(slot, n):
    pairs(slot, n, lib.GUARD_TIMED)


def empty(slot, n):
    for _ in range(n):
        pass


ME = lib.guard_thread_id()
slot = lib.guard_slot_new(ME)
{"enter": enter, "strict": strict, "mutex": mutex, "empty": empty}[case](slot, n)
if slot.busy != 0 or slot.calls != (0 if case == "empty" else n):
    raise SystemExit(f"the guard did not see {n} enter/leave pairs: {slot.calls}")
lib.guard_slot_free(slot)
"""

CASES = {
    "enter": ("guard_enter_mode", "guard_leave"),
    "strict": ("guard_enter_mode", "guard_leave"),
    "mutex": ("guard_enter_mode", "guard_leave"),
    "empty": (),
}
TITLES = {
    "enter": "guard_enter_mode(slot) + guard_leave, flags 0  (exclusive)",
    "strict": "guard_enter_mode(slot) + guard_leave, GUARD_STRICT  (strict)",
    "mutex": "guard_enter_mode(slot) + guard_leave, GUARD_TIMED  (mutex, uncontended)",
}


def find_extension() -> str:
    """Path of the compiled guard: the source tree's if built there, else the installed one."""
    built = sorted(glob.glob(os.path.join(SOURCE_TREE, "guarddb", "_guard*.so")))
    if built:
        return built[-1]
    import importlib.util

    spec = importlib.util.find_spec("guarddb._guard")
    if spec is None or spec.origin is None:
        raise SystemExit("guarddb._guard not found: build it (python build.py) or install guarddb")
    return spec.origin


def run_callgrind(case: str, n: int, extension: str, workdir: str) -> str:
    """Run one case under callgrind; the path of its output file."""
    out = os.path.join(workdir, f"callgrind.{case}.{n}")
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-c",
        CHILD,
        case,
        str(n),
        extension,
    ]
    # A fixed hash seed: start-up then costs the same instructions in both runs.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"valgrind failed on {case} x {n} ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return out


_FUNCTION_LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(?:\S*:)?([A-Za-z_]\w*)\b")


def inclusive_counts(callgrind_out: str) -> tuple[int, dict[str, int]]:
    """Total instructions and the inclusive instructions of each function (callgrind_annotate)."""
    done = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", callgrind_out],
        capture_output=True,
        text=True,
        check=True,
    )
    total = None
    functions: dict[str, int] = {}
    for line in done.stdout.splitlines():
        if total is None and "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
            continue
        match = _FUNCTION_LINE.match(line)
        if match:
            count, name = int(match.group(1).replace(",", "")), match.group(2)
            functions[name] = functions.get(name, 0) + count
    if total is None:
        raise SystemExit(f"no PROGRAM TOTALS in callgrind_annotate's output for {callgrind_out}")
    return total, functions


def measure(n: int, extension: str, workdir: str) -> dict[str, Any]:
    """Per-pair instruction counts of every case (2N run minus N run, over N)."""
    counts: dict[str, dict[int, tuple[int, dict[str, int]]]] = {}
    for case in CASES:
        counts[case] = {}
        for iterations in (n, 2 * n):
            sys.stderr.write(f"callgrind: {case} x {iterations:,} ...\n")
            sys.stderr.flush()
            counts[case][iterations] = inclusive_counts(
                run_callgrind(case, iterations, extension, workdir)
            )

    def per_iteration(case: str, names: tuple[str, ...] | None = None) -> float:
        (total_n, funcs_n), (total_2n, funcs_2n) = counts[case][n], counts[case][2 * n]
        if names is None:
            return (total_2n - total_n) / n
        missing = [name for name in names if name not in funcs_2n]
        if missing:
            raise SystemExit(f"callgrind saw no {', '.join(missing)} in case {case}")
        return sum(funcs_2n[name] - funcs_n.get(name, 0) for name in names) / n

    empty = per_iteration("empty")
    results: dict[str, Any] = {"iterations": [n, 2 * n], "empty_loop_per_iteration": empty}
    for case, names in CASES.items():
        if not names:
            continue
        wrappers = tuple(f"_cffi_f_{name}" for name in names)
        results[case] = {
            "title": TITLES[case],
            "c_guard": per_iteration(case, names),
            "c_guard_by_function": {name: per_iteration(case, (name,)) for name in names},
            "through_cffi": per_iteration(case, wrappers),
            "from_python": per_iteration(case) - empty,
        }
    return results


def report(results: dict[str, Any], extension: str) -> str:
    """The figures as text (a markdown table)."""
    n, n2 = results["iterations"]
    lines = [
        f"Instructions per enter/leave pair (valgrind --tool=callgrind; runs of {n:,} and "
        f"{n2:,} pairs, the difference over {n:,})",
        f"guard: {extension}",
        "",
        "| pair | C guard | through cffi | from Python |",
        "|---|---|---|---|",
    ]
    for case in CASES:
        if case not in results:
            continue
        entry = results[case]
        parts = " + ".join(
            f"{name} {count:.1f}" for name, count in entry["c_guard_by_function"].items()
        )
        lines.append(
            f"| {entry['title']} | {entry['c_guard']:.1f} ({parts}) | "
            f"{entry['through_cffi']:.1f} | {entry['from_python']:.1f} |"
        )
    lines += [
        "",
        "C guard: inclusive instructions of the guard functions; through cffi: of cffi's "
        "wrappers (arguments, errno, the guard; they keep the GIL); from Python: the loop "
        f"iteration minus an empty loop's ({results['empty_loop_per_iteration']:.1f}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the figures, optionally write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--iterations",
        type=int,
        default=50_000,
        metavar="N",
        help="pairs in the shorter run (the longer has 2N; default: %(default)s)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    for tool in ("valgrind", "callgrind_annotate"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: install valgrind (apt-get install valgrind)", file=sys.stderr)
            return 2
    extension = find_extension()
    with tempfile.TemporaryDirectory(prefix="guarddb-callgrind-") as workdir:
        results = measure(args.iterations, extension, workdir)
    results["extension"] = extension
    print(report(results, extension))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
