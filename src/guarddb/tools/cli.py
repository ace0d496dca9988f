"""``python -m guarddb``: guarddb's command line.

``python -m guarddb run [--mode MODE] [--report FILE] [--fail-on-violation]
(script.py | -m module) [args ...]`` runs an unchanged program with guarddb
installed as MySQLdb and reports the guard violations it made (see
:mod:`guarddb._runner` for the exit status and the report).

``python -m guarddb demo [SCENARIO ...]`` runs the failure scenarios
(:mod:`guarddb._scenarios`: those of DESIGN.md, a Celery prefork worker, a
thread pool leaking connections, an idle SQLAlchemy pool) once with plain
mysqlclient and once with guarddb (some also with other guarddb keywords), each
in a child process with a time limit.  It says on stderr which run starts and
how it ended, then prints what each actually did side by side on stdout (as a
Markdown table with ``--markdown``), in colour only when stdout is a terminal
and ``NO_COLOR`` is not set.  A scenario whose needs are missing (Celery, a
broker, SQLAlchemy) is skipped, saying why.  Exit status: 0 if guarddb gave the
expected outcome in every run that ran (skipped ones do not count), 1
otherwise, 2 if it has no server to run them against.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from . import _scenarios
from ._scenarios import SCENARIOS, SKIPPED, Outcome, Scenario, Variant

#: Outcome kinds shown in red: the failures guarddb exists to prevent.
_BAD_KINDS = frozenset(_scenarios.BAD_KINDS)

_RED = "\033[1;31m"
_GREEN = "\033[32m"
_YELLOW = "\033[33m"
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
            "fork, an unread SSCursor result, a Celery prefork worker, a thread pool leaking "
            "connections, an idle SQLAlchemy pool) in a child process with a time limit, with "
            "plain mysqlclient and with guarddb, saying on stderr how each run ended, then "
            "print what each did side by side (colour only on a terminal, never with "
            "$NO_COLOR). A scenario whose needs are missing (Celery, a broker, SQLAlchemy) is "
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


@dataclass
class _Result:
    """A scenario's runs: plain mysqlclient's, then each guarddb variant's."""

    scenario: Scenario
    plain: Outcome
    guarded: list[tuple[Variant, Outcome]] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        """It did not run: what it needs is missing (every run of it is skipped then)."""
        return self.plain.kind == SKIPPED

    def unexpected(self) -> list[Variant]:
        """The guarddb variants that ran and did not give their expected outcome."""
        return [
            variant
            for variant, outcome in self.guarded
            if outcome.kind != SKIPPED
            and not _scenarios.matches(self.scenario, outcome, variant.expected)
        ]


def _use_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    if os.environ.get("NO_COLOR", "") != "" or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _paint(text: str, code: str, color: bool) -> str:
    """``text`` in the ANSI colour ``code`` if ``color``, else as it is."""
    return f"{code}{text}{_RESET}" if color and code and text else text


def _demo(args: argparse.Namespace) -> int:
    from ._server import ENV_DSN, PrivateServer, parse_dsn

    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        args.parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    names = [name for name in SCENARIOS if not args.scenarios or name in args.scenarios]
    dsn = args.dsn or os.environ.get(ENV_DSN)
    server: PrivateServer | None = None
    broker = _Broker(args.broker)
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
        results = _run_all(names, connect_args, args.timeout, broker, _use_color(sys.stderr))
    finally:
        broker.stop()
        if server is not None:
            server.destroy()
    if args.markdown:
        _print_markdown(results, sys.stdout)
    else:
        _print_table(results, sys.stdout, _use_color(sys.stdout))
    return _summary(results, time.monotonic() - started, sys.stdout)


def _summary(results: list[_Result], elapsed: float, out: TextIO) -> int:
    """Print the verdict; return the exit code (1 if any guarddb run was not as expected)."""
    ran = [result for result in results if not result.skipped]
    runs = sum(1 + len(result.guarded) for result in ran)
    unexpected = [
        f"{result.scenario.name} ({variant.label})"
        for result in ran
        for variant in result.unexpected()
    ]
    print(file=out)
    if unexpected:
        guarded_runs = sum(len(result.guarded) for result in ran)
        print(
            f"guarddb did not give the expected outcome in {len(unexpected)} of {guarded_runs} "
            f"runs: {', '.join(unexpected)}",
            file=out,
        )
    elif len(ran) == 1:
        print("guarddb gave the expected outcome in the one scenario that ran.", file=out)
    elif ran:
        print(f"guarddb gave the expected outcome in all {len(ran)} scenarios that ran.", file=out)
    for result in results:
        if result.skipped:
            print(f"skipped {result.scenario.name}: {result.plain.detail}", file=out)
    print(f"({runs} runs in {elapsed:.1f}s)", file=out)
    return 1 if unexpected else 0


def _progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _plain_version() -> str:
    import MySQLdb.release

    return str(MySQLdb.release.__version__)


class _Broker:
    """The Celery broker, found (or a private Redis started) when a scenario first needs it."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.why_not: str | None = None
        self.private: Any = None
        self.looked = url is not None

    def get(self) -> tuple[str | None, str | None]:
        """``(url, None)``, or ``(None, why there is none)``."""
        if not self.looked:
            from ._broker import NoBroker, find_broker

            self.looked = True
            try:
                self.url, self.private = find_broker()
            except NoBroker as exc:
                self.why_not = str(exc)
        return self.url, self.why_not

    def stop(self) -> None:
        """Stop the private Redis, if one was started."""
        if self.private is not None:
            self.private.stop()
            self.private = None


def _run_all(
    names: list[str],
    connect_args: dict[str, Any],
    timeout: float,
    broker: _Broker,
    color: bool,
) -> list[_Result]:
    """Run each scenario with plain mysqlclient, then each guarddb variant, saying so on stderr."""
    results: list[_Result] = []
    total = sum(1 + len(SCENARIOS[name].variants) for name in names)
    plain_label = f"plain mysqlclient {_plain_version()}"
    number = 0
    for name in names:
        scenario = SCENARIOS[name]
        why_not = _scenarios.missing_requirement(scenario)
        broker_url = None
        if why_not is None and scenario.broker:
            broker_url, why_not = broker.get()
        runs: list[tuple[str, Variant | None]] = [(plain_label, None)]
        runs += [(variant.label, variant) for variant in scenario.variants]
        result: _Result | None = None
        for label, variant in runs:
            number += 1
            _progress(f"[{number}/{total}] {name} with {label} ... ")
            if why_not is not None:
                outcome = Outcome(SKIPPED, why_not)
            else:
                outcome = _scenarios.run(
                    name,
                    "plain" if variant is None else "guarddb",
                    connect_args,
                    timeout=timeout,
                    options=None if variant is None else dict(variant.options),
                    broker_url=broker_url,
                )
            _progress(_run_line(outcome, variant, scenario, color, first=result is None) + "\n")
            if result is None:
                result = _Result(scenario, outcome)
                if outcome.kind == SKIPPED:  # the plain run could not start: nor can the rest
                    why_not = outcome.detail
            else:
                assert variant is not None
                result.guarded.append((variant, outcome))
        assert result is not None
        results.append(result)
    return results


def _run_line(
    outcome: Outcome, variant: Variant | None, scenario: Scenario, color: bool, first: bool
) -> str:
    """How one run ended, for the progress line: its kind, the verdict, the time it took."""
    if outcome.kind == SKIPPED:
        return _paint("skipped", _YELLOW, color) + (f": {outcome.detail}" if first else "")
    if variant is None:
        code = _RED if outcome.kind in _BAD_KINDS else ""
        return f"{_paint(outcome.kind, code, color)} ({outcome.elapsed:.1f}s)"
    if _scenarios.matches(scenario, outcome, variant.expected):
        return f"{_paint(outcome.kind, _GREEN, color)}, as expected ({outcome.elapsed:.1f}s)"
    return (
        f"{_paint(outcome.kind, _RED, color)}, "
        + _paint(f"EXPECTED {variant.expected}", _RED, color)
        + f" ({outcome.elapsed:.1f}s)"
    )


def _cells(result: _Result) -> tuple[list[tuple[str, str]], ...]:
    """The table's three cells for ``result``: (text, colour) paragraphs, head first."""
    scenario = result.scenario
    first = [(scenario.name, _BOLD), (scenario.title, "")]
    plain = result.plain
    if result.skipped:
        return first, [("skipped", _YELLOW), (plain.detail, "")], [("skipped", _YELLOW)]
    second = [(plain.kind, _RED if plain.kind in _BAD_KINDS else ""), (plain.detail, "")]
    third: list[tuple[str, str]] = []
    for variant, outcome in result.guarded:
        ok = _scenarios.matches(scenario, outcome, variant.expected)
        verdict = "as expected" if ok else f"EXPECTED {variant.expected}"
        if third:
            third.append(("", ""))
        third.append((f"{outcome.kind} ({verdict})", _GREEN if ok else _RED))
        options = ", ".join(variant.label.split(" ")[1:])
        third.append(((f"with {options}: " if options else "") + outcome.detail, ""))
    return first, second, third


def _print_table(results: list[_Result], out: TextIO, color: bool) -> None:
    """Scenario | plain mysqlclient | guarddb, each cell the kind then what was seen."""
    from . import __version__

    width = min(max(shutil.get_terminal_size((120, 24)).columns, 100), 160)
    first = 28
    rest = (width - first - 10) // 2
    widths = (first, rest, rest)
    header = ("scenario", f"plain mysqlclient {_plain_version()}", f"guarddb {__version__}")
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: tuple[str, ...], colors: tuple[str, ...]) -> str:
        parts = []
        for cell, w, code in zip(cells, widths, colors):
            parts.append(_paint(cell, code, color) + " " * (w - len(cell)))
        return "| " + " | ".join(parts) + " |"

    print(rule, file=out)
    print(line(header, (_BOLD, _BOLD, _BOLD)), file=out)
    print(rule, file=out)
    for result in results:
        columns: list[list[tuple[str, str]]] = []
        for cell, w in zip(_cells(result), widths):
            lines: list[tuple[str, str]] = []
            for text, code in cell:
                lines.extend((piece, code) for piece in (textwrap.wrap(text, w) or [""]))
            columns.append(lines)
        for row in range(max(len(c) for c in columns)):
            cells = tuple(c[row][0] if row < len(c) else "" for c in columns)
            colors = tuple(c[row][1] if row < len(c) else "" for c in columns)
            print(line(cells, colors), file=out)
        print(rule, file=out)


def _print_markdown(results: list[_Result], out: TextIO) -> None:
    """The table as Markdown, for README.md's ``<!-- demo-table -->``."""
    from . import __version__

    def cell(paragraphs: list[tuple[str, str]]) -> str:
        texts = []
        for index, (text, _) in enumerate(paragraphs):
            text = text.replace("|", "\\|")
            if not text:
                continue
            # Every head (the kind, the name) in bold: the first paragraph, and any after a gap.
            head = index == 0 or not paragraphs[index - 1][0]
            texts.append(f"**{text}**" if head else text)
        return "<br>".join(texts)

    print(f"| scenario | plain mysqlclient {_plain_version()} | guarddb {__version__} |", file=out)
    print("|---|---|---|", file=out)
    for result in results:
        print("| " + " | ".join(cell(c) for c in _cells(result)) + " |", file=out)


if __name__ == "__main__":
    sys.exit(main())
