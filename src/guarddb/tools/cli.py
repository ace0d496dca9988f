"""``python -m guarddb``: guarddb's command line, ``demo``, ``bench`` and ``run``.

``python -m guarddb run [--mode MODE] [--report FILE] [--fail-on-violation]
(script.py | -m module) [args ...]`` runs an unchanged program with guarddb
installed as MySQLdb and as pymysql (whichever drivers are installed) and
reports the guard violations it made (see
:mod:`guarddb.tools.runner` for the exit status and the report).

``python -m guarddb demo [SCENARIO ...]`` runs the failure scenarios
(:mod:`guarddb.tools.demo`: those of DESIGN.md, on mysqlclient and the thread
and fork ones on PyMySQL too, a Celery prefork worker, a thread pool leaking
connections, an idle SQLAlchemy pool) once with the plain driver and once with
guarddb (some also with other guarddb keywords), each
in a child process with a time limit.  It says on stderr which run starts and
how it ended, then prints what each actually did side by side on stdout (as a
Markdown table with ``--markdown``), in colour only when stdout is a terminal
and ``NO_COLOR`` is not set.  A scenario whose needs are missing (Celery, a
broker, SQLAlchemy, the driver) is skipped, saying why.  Exit status: 0 if guarddb gave the
expected outcome in every run that ran (skipped ones do not count), 1
otherwise, 2 if it has no server to run them against (see
:mod:`guarddb.tools.demo.command`).

``python -m guarddb bench`` measures what the guard costs (see
:mod:`guarddb.tools.bench`).

This module parses the arguments and hands each command to its module.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from .demo.catalog import SCENARIOS


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
        help="show what plain mysqlclient and PyMySQL, and guarddb, do with a shared connection",
        description=(
            "Run each failure scenario (threads sharing a cursor, a connection crossing "
            "fork, an unread SSCursor result, a Celery prefork worker, a thread pool leaking "
            "connections, an idle SQLAlchemy pool; the *_pymysql ones on PyMySQL) in a child "
            "process with a time limit, with the plain driver and with guarddb, saying on "
            "stderr how each run ended, then print what each did side by side (colour only on "
            "a terminal, never with $NO_COLOR). A scenario whose needs are missing (Celery, a "
            "broker, SQLAlchemy, its driver) is "
            "skipped, saying why. Exit code 0 if guarddb gave the expected outcome in every "
            "run that ran (skipped runs do not count), 1 if not, 2 without a server. Uses a "
            f"private MariaDB unless --dsn or ${_server_env()} names a server."
        ),
    )
    demo.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"run only these ({', '.join(SCENARIOS)}; default: all)",
    )
    demo.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=10.0,
        metavar="S",
        help="seconds one run may take before it counts as a hang; the Celery and lifecycle "
        "scenarios get a few more for their workers and watches (default: %(default)g)",
    )
    demo.add_argument(
        "--dsn",
        help="mysql://user:pw@host:port/db or unix:///socket?user=..&db=.. "
        f"(default: ${_server_env()}, else a private MariaDB)",
    )
    demo.add_argument(
        "--broker",
        metavar="URL",
        help="the Celery broker for celery_prefork (default: $GUARDDB_TEST_BROKER, else a Redis "
        "on 127.0.0.1:6379, else a private redis-server, else a RabbitMQ on 127.0.0.1:5672)",
    )
    demo.add_argument(
        "--markdown",
        action="store_true",
        help="print the table as Markdown (as in README.md) instead of a text table",
    )
    demo.set_defaults(func=_demo, parser=demo)
    bench = commands.add_parser(
        "bench",
        help="measure what the guard costs, side by side with plain mysqlclient",
        description=(
            "Time each workload (round trip, fetchone loop, iteration, fetchall, SSCursor, "
            "executemany) with plain mysqlclient and with guarddb in every guard mode, "
            "interleaved in one process, and print the median ratio guarded/plain with its "
            "spread next to the targets; guarddb.pymysql in every mode against plain PyMySQL "
            "the same way; then mutex mode with 8 threads sharing a connection "
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


def _demo(args: argparse.Namespace) -> int:
    from .demo import command

    return command.run(args)


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    from .bench import command

    command.add_arguments(parser)


def _bench(args: argparse.Namespace) -> int:
    from .bench import command

    return command.run(args)


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
    from guarddb import MODES

    from .runner import VIOLATION_EXIT_CODE

    run = commands.add_parser(
        "run",
        help="run a program with guarddb as MySQLdb and pymysql and report its guard violations",
        usage=(
            "python -m guarddb run [-h] [--mode MODE] [--report FILE] [--fail-on-violation]\n"
            "                             (script.py | -m module) [args ...]"
        ),
        description=(
            "Run an unchanged program (as `python script.py args` or `python -m module args` "
            "would) with guarddb installed as MySQLdb and as pymysql (each where its driver, "
            "mysqlclient or PyMySQL, is installed). Every guard violation is counted, even "
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
    from . import runner

    if (args.module is None) == (args.script is None):
        args.parser.error("give the program to run: a script, or -m module")
    return runner.run(
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
    from .server import ENV_DSN

    return ENV_DSN


if __name__ == "__main__":
    sys.exit(main())
