"""``python -m guarddb demo``: every scenario with its plain driver, then with guarddb.

Each run goes through :func:`guarddb.tools.demo.process.run` (a child process with a
time limit); this module says on stderr which run starts and how it ended, then
prints what each did side by side on stdout: a text table (colour only on a
terminal, never with ``NO_COLOR``) or, with ``--markdown``, the table of README.md.
A scenario runs on mysqlclient (plain, then ``guarddb``) or on PyMySQL (plain,
then ``guarddb.pymysql``); the plain column's header names the versions.
The arguments are parsed by :mod:`guarddb.tools.cli`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import catalog, process
from .catalog import SCENARIOS
from .framework import BAD_KINDS, LIBRARIES, SKIPPED, Outcome, Scenario, Variant

#: Outcome kinds shown in red: the failures guarddb exists to prevent.
_BAD_KINDS = frozenset(BAD_KINDS)

_RED = "\033[1;31m"
_GREEN = "\033[32m"
_YELLOW = "\033[33m"
_BOLD = "\033[1m"
_RESET = "\033[0m"


@dataclass
class _Result:
    """A scenario's runs: its plain driver's, then each guarddb variant's."""

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
            and not catalog.matches(self.scenario, outcome, variant.expected)
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


def run(args: argparse.Namespace) -> int:
    """Run the demo (the arguments of ``python -m guarddb demo``); return the exit code."""
    from ..server import ENV_DSN, PrivateServer, parse_dsn

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
        f"{result.scenario.name} ({result.scenario.label(variant)})"
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


def _plain_version(library: str = "mysqlclient") -> str:
    """The version of a plain driver (a key of LIBRARIES), or "?" if it is not installed."""
    return LIBRARIES[library].version() or "?"


def _plain_header(results: list[_Result]) -> str:
    """``plain mysqlclient 2.3.1``, or with PyMySQL rows too ``... / PyMySQL 1.2.4``.

    The drivers of the rows that ran (of all rows, if none ran).
    """
    shown: list[str] = []
    for result in [r for r in results if not r.skipped] or results:
        library = result.scenario.driver_library
        version = library.version()
        name = f"{library.name} {version}" if version else library.name
        if name not in shown:
            shown.append(name)
    return "plain " + " / ".join(shown or [LIBRARIES["mysqlclient"].name])


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
            from ..broker import NoBroker, find_broker

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
    """Run each scenario with its plain driver, then each guarddb variant, saying so on stderr."""
    results: list[_Result] = []
    total = sum(1 + len(SCENARIOS[name].variants) for name in names)
    number = 0
    for name in names:
        scenario = SCENARIOS[name]
        why_not = catalog.missing_requirement(scenario)
        broker_url = None
        if why_not is None and scenario.broker:
            broker_url, why_not = broker.get()
        runs: list[tuple[str, Variant | None]] = [(scenario.label(None), None)]
        runs += [(scenario.label(variant), variant) for variant in scenario.variants]
        result: _Result | None = None
        for label, variant in runs:
            number += 1
            _progress(f"[{number}/{total}] {name} with {label} ... ")
            if why_not is not None:
                outcome = Outcome(SKIPPED, why_not)
            else:
                outcome = process.run(
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
    if catalog.matches(scenario, outcome, variant.expected):
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
        ok = catalog.matches(scenario, outcome, variant.expected)
        verdict = "as expected" if ok else f"EXPECTED {variant.expected}"
        if third:
            third.append(("", ""))
        third.append((f"{outcome.kind} ({verdict})", _GREEN if ok else _RED))
        options = ", ".join(variant.label.split(" ")[1:])
        third.append(((f"with {options}: " if options else "") + outcome.detail, ""))
    return first, second, third


def _print_table(results: list[_Result], out: TextIO, color: bool) -> None:
    """Scenario | plain driver | guarddb, each cell the kind then what was seen."""
    from guarddb import __version__

    width = min(max(shutil.get_terminal_size((120, 24)).columns, 100), 160)
    first = 28
    rest = (width - first - 10) // 2
    widths = (first, rest, rest)
    header = ("scenario", _plain_header(results), f"guarddb {__version__}")
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
    from guarddb import __version__

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

    print(f"| scenario | {_plain_header(results)} | guarddb {__version__} |", file=out)
    print("|---|---|---|", file=out)
    for result in results:
        print("| " + " | ".join(cell(c) for c in _cells(result)) + " |", file=out)
