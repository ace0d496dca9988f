"""``python -m guarddb``: guarddb's command line.

``python -m guarddb run [--mode MODE] [--report FILE] [--fail-on-violation]
(script.py | -m module) [args ...]`` runs an unchanged program with guarddb
installed as MySQLdb and reports the guard violations it made (see
:mod:`guarddb._runner` for the exit status and the report).

``python -m guarddb demo`` runs the failure scenarios of DESIGN.md
(:mod:`guarddb._scenarios`) once with plain mysqlclient and once with
guarddb, each in a child process, and prints what each actually did side by
side.  It exits with 0 if guarddb gave the expected outcome in every scenario,
1 otherwise, and 2 if it has no server to run them against.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
import time
from typing import Any, Callable, TextIO

from . import _scenarios
from ._scenarios import SCENARIOS, Outcome

#: Outcome kinds shown in red: the failures guarddb exists to prevent.
_BAD_KINDS = frozenset(_scenarios.KINDS[:6])

_RED = "\033[1;31m"
_GREEN = "\033[32m"
_BOLD = "\033[1m"
_RESET = "\033[0m"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    program_args: list[str] = []
    if argv[:1] == ["run"]:
        # The program's own arguments are not the runner's: split them off before
        # argparse, which would take a program's "-v" or "--mode" for its own.
        own, program_args = split_run_arguments(argv[1:])
        argv = ["run", *own]
    args = parser.parse_args(argv)
    if args.command == "run":
        args.args = program_args
    command: Callable[[argparse.Namespace], int] = args.func
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m guarddb",
        description="guarddb: a guarded drop-in for MySQLdb (mysqlclient).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="show what plain mysqlclient and guarddb do with a shared connection",
        description=(
            "Run each failure scenario (threads sharing a cursor, a connection crossing "
            "fork, an unread SSCursor result) in a child process, with plain mysqlclient "
            "and with guarddb, and print what each did. Exit code 0 if guarddb gave the "
            "expected outcome every time. Uses a private MariaDB unless --dsn or "
            f"${_server_env()} names a server."
        ),
    )
    demo.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=10.0,
        metavar="S",
        help="seconds one run may take before it counts as a hang (default: %(default)g)",
    )
    demo.add_argument(
        "--dsn",
        help="mysql://user:pw@host:port/db or unix:///socket?user=..&db=.. "
        f"(default: ${_server_env()}, else a private MariaDB)",
    )
    demo.set_defaults(func=_demo)
    bench = commands.add_parser(
        "bench",
        help="measure what the guard costs, side by side with plain mysqlclient",
        description=(
            "Time each workload (round trip, fetchone loop, iteration, fetchall, SSCursor, "
            "executemany) with plain mysqlclient and with guarddb in every guard mode, "
            "interleaved in one process, and print the median ratio guarded/plain with its "
            "spread next to the targets; then mutex mode with 8 threads sharing a connection "
            "against a threading.Lock around plain mysqlclient, and PyMySQL and "
            "mysql-connector-python for reference. Exit code 0 whenever it ran: timings never "
            "fail it. Uses a private MariaDB unless --dsn or "
            f"${_server_env()} names a server."
        ),
    )
    _bench_arguments(bench)
    bench.set_defaults(func=_bench)
    _run_parser(commands)
    return parser


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    from . import bench

    bench.add_arguments(parser)


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.run(args)


# -- run -------------------------------------------------------------------------------------

# The runner's own options before the program: those that take a value, and flags.
_RUN_VALUED = ("--mode", "--report")
_RUN_FLAGS = ("--fail-on-violation", "-h", "--help")


def split_run_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split what follows ``run`` into the runner's part and the program's arguments.

    The runner's part is its options, then ``-m MODULE`` or the script; all
    that follows belongs to the program, options included.
    """
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in _RUN_VALUED:
            index += 2
        elif arg in _RUN_FLAGS or arg.startswith(tuple(f"{o}=" for o in _RUN_VALUED)):
            index += 1
        elif arg == "-m":
            return argv[: index + 2], argv[index + 2 :]
        else:  # the script, "-mMODULE", or something argparse will refuse
            return argv[: index + 1], argv[index + 1 :]
    return argv, []


def _run_parser(commands: Any) -> None:
    from ._runner import VIOLATION_EXIT_CODE
    from .guard import MODES

    run = commands.add_parser(
        "run",
        help="run a program with guarddb as MySQLdb and report its guard violations",
        usage=(
            "python -m guarddb run [-h] [--mode MODE] [--report FILE] [--fail-on-violation]\n"
            "                             (script.py | -m module) [args ...]"
        ),
        description=(
            "Run an unchanged program (as `python script.py args` or `python -m module args` "
            "would) with guarddb installed as MySQLdb. Every guard violation is counted, even "
            "one the program caught; at exit a summary grouped by where the connection was "
            "opened and where it was refused goes to stderr. The exit status is the "
            "program's own (1 after an uncaught exception), or "
            f"{VIOLATION_EXIT_CODE} with --fail-on-violation when there was a violation. "
            "Violations in children made by fork (multiprocessing's fork start method) are "
            "counted too; spawned children and subprocesses are not guarded."
        ),
        allow_abbrev=False,
    )
    run.add_argument(
        "--mode",
        choices=MODES,
        help="the default guard mode of the program's connections "
        "(default: $GUARDDB_MODE, else exclusive)",
    )
    run.add_argument("--report", metavar="FILE", help="also write the summary to FILE as JSON")
    run.add_argument(
        "--fail-on-violation",
        action="store_true",
        help=f"exit with status {VIOLATION_EXIT_CODE} if there was any violation",
    )
    run.add_argument("-m", dest="module", metavar="module", help="run a module as a script")
    run.add_argument("script", nargs="?", help="the program to run (unless -m)")
    run.add_argument("args", nargs=argparse.REMAINDER, help="the program's arguments")
    run.set_defaults(func=_run, parser=run)


def _run(args: argparse.Namespace) -> int:
    from . import _runner

    if (args.module is None) == (args.script is None):
        args.parser.error("give the program to run: a script, or -m module")
    return _runner.run(
        args.module if args.module is not None else args.script,
        args.args,
        module=args.module is not None,
        mode=args.mode,
        report=args.report,
        fail_on_violation=args.fail_on_violation,
    )


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return seconds


def _server_env() -> str:
    from ._server import ENV_DSN

    return ENV_DSN


# -- demo ------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from ._server import ENV_DSN, PrivateServer, parse_dsn

    dsn = args.dsn or os.environ.get(ENV_DSN)
    server: PrivateServer | None = None
    started = time.monotonic()
    try:
        if dsn:
            try:
                connect_args = parse_dsn(dsn)
            except ValueError as exc:
                _progress(f"guarddb demo: {exc}\n")
                return 2
        else:
            _progress("starting a private MariaDB ... ")
            server = PrivateServer()
            try:
                server.start()
            except RuntimeError as exc:
                _progress(f"failed\nguarddb demo: {exc}\nGive a server with --dsn or ${ENV_DSN}.\n")
                return 2
            connect_args = server.connect_args
            _progress(f"ready ({time.monotonic() - started:.1f}s)\n")
        results = _run_all(connect_args, args.timeout)
    finally:
        if server is not None:
            server.destroy()
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    _print_table(results, sys.stdout, color)
    unexpected = [
        name for name, (_, guarded) in results.items() if not _scenarios.matches(name, guarded)
    ]
    total = len(SCENARIOS)
    if unexpected:
        print(
            f"\nguarddb did not give the expected outcome in {len(unexpected)} of {total} "
            f"scenarios: {', '.join(unexpected)}"
        )
    else:
        print(f"\nguarddb gave the expected outcome in all {total} scenarios.")
    print(f"({2 * total} runs in {time.monotonic() - started:.1f}s)")
    return 1 if unexpected else 0


def _progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _plain_version() -> str:
    import MySQLdb.release

    return str(MySQLdb.release.__version__)


def _run_all(connect_args: dict[str, Any], timeout: float) -> dict[str, tuple[Outcome, Outcome]]:
    """Run every scenario with plain mysqlclient, then with guarddb, saying so on stderr."""
    results: dict[str, tuple[Outcome, Outcome]] = {}
    labels = {"plain": f"plain mysqlclient {_plain_version()}", "guarddb": "guarddb"}
    total = 2 * len(SCENARIOS)
    number = 0
    for name in SCENARIOS:
        pair: list[Outcome] = []
        for driver in _scenarios.DRIVERS:
            number += 1
            _progress(f"[{number}/{total}] {name} with {labels[driver]} ... ")
            outcome = _scenarios.run(name, driver, connect_args, timeout=timeout)
            note = ""
            if driver == "guarddb" and not _scenarios.matches(name, outcome):
                note = f", expected {SCENARIOS[name].expected_guarded}"
            _progress(f"{outcome.kind} ({outcome.elapsed:.1f}s{note})\n")
            pair.append(outcome)
        results[name] = (pair[0], pair[1])
    return results


def _print_table(results: dict[str, tuple[Outcome, Outcome]], out: TextIO, color: bool) -> None:
    """Scenario | plain mysqlclient | guarddb, each cell the kind then what was seen."""
    from . import __version__

    width = min(max(shutil.get_terminal_size((120, 24)).columns, 100), 160)
    first = 28
    rest = (width - first - 10) // 2
    widths = (first, rest, rest)
    header = ("scenario", f"plain mysqlclient {_plain_version()}", f"guarddb {__version__}")
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: tuple[str, str, str], colors: tuple[str, str, str] = ("", "", "")) -> str:
        parts = []
        for cell, w, code in zip(cells, widths, colors):
            text = cell.ljust(w)
            if color and code and cell:
                text = code + cell + _RESET + " " * (w - len(cell))
            parts.append(text)
        return "| " + " | ".join(parts) + " |"

    print(rule, file=out)
    print(line(header, (_BOLD, _BOLD, _BOLD)), file=out)
    print(rule, file=out)
    for name, (plain, guarded) in results.items():
        scenario = SCENARIOS[name]
        ok = _scenarios.matches(scenario, guarded)
        verdict = "as expected" if ok else f"EXPECTED {scenario.expected_guarded}"
        heads = (name, plain.kind, f"{guarded.kind} ({verdict})")
        bodies = (scenario.title, plain.detail, guarded.detail)
        columns = [
            textwrap.wrap(head, w) + textwrap.wrap(body, w)
            for head, body, w in zip(heads, bodies, widths)
        ]
        head_lines = [len(textwrap.wrap(head, w)) for head, w in zip(heads, widths)]
        kind_colors = (
            _BOLD,
            _RED if plain.kind in _BAD_KINDS else "",
            _GREEN if ok else _RED,
        )
        for row in range(max(len(c) for c in columns)):
            cells = tuple(c[row] if row < len(c) else "" for c in columns)
            colors = tuple(kind_colors[i] if row < head_lines[i] else "" for i in range(3))
            print(line(cells, colors), file=out)  # type: ignore[arg-type]
        print(rule, file=out)


if __name__ == "__main__":
    sys.exit(main())
