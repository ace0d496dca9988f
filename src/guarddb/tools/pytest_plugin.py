"""guarddb's pytest plugin: a test that makes a guard violation fails, even if the code caught it.

Registered through the ``pytest11`` entry point as ``guarddb`` (so ``-p
no:guarddb`` disables it, and ``-p guarddb`` loads it when plugin autoloading
is off).

**Turning it on.**  ``pytest --guarddb=MODE``, else the environment variable
``GUARDDB_MODE``, else the ini option ``guarddb = MODE`` (the first one given
wins).  Then, before any ``conftest.py`` is loaded and before collection
(``pytest_load_initial_conftests``), the plugin installs guarddb in place of
the drivers that are installed (:func:`guarddb.tools.install.install`:
``import MySQLdb`` gives guarddb, ``import pymysql`` gives
:mod:`guarddb.pymysql`), calls ``guarddb.set_default_mode(MODE)``, and every
test is watched, whichever driver its code uses.  Both are undone when the
session ends.  With none of
the three the plugin installs nothing, changes no mode and registers no
violation hook (loading it imports the guarddb package, which changes nothing
by itself); only the marker and the fixture below work, since they ask for it.

**What fails.**  Every guard violation (``guarddb.on_violation``) while a test
runs is the test's: one in its setup errors the setup, one in the test itself
fails it, one in its teardown errors the teardown, when that phase would
otherwise have passed.  That catches what application code swallowed (``except
Exception: pass``, a thread pool whose futures nobody reads).  The report shows,
for each (kind, connection site, violating site), how many times, in which
threads, the first message and the first violating call's stack.  When the
phase failed anyway (the GuardError reached pytest, or an assert failed), the
same text is added to its report as a section instead.  Violations in children
the test forked (``os.fork``, multiprocessing's ``fork`` start method) count
too, if the child wrote them before the phase ended (each is written at once).
A violation in a thread that outlives its test is charged to the test running
when it happens; one outside any test is listed at the end of the session.

**The marker** ``@pytest.mark.guarddb(mode="strict")`` (or
``@pytest.mark.guarddb("strict")``) sets the default mode for one test (from
the setup of its fixtures to its teardown; connections opened then without
``guard=`` get it) and watches that test even when the plugin is off.  A bare
``@pytest.mark.guarddb`` watches the test in the session's mode (``"strict"``
when the plugin is off).  It does not install guarddb as MySQLdb (too late, at
that point): with the plugin off it affects code that uses guarddb (or
guarddb.pymysql) directly.

**The fixture** ``guarddb_violations`` is a live, read-only sequence
(:class:`ViolationLog`) of the violations of the current test, from the start
of its setup: :class:`guarddb.Violation` objects, forked children's included
(those a child has written by the time the sequence is read).  A test that uses
it takes responsibility for all its violations: the plugin never fails it for
them; assert on them instead.  It works with the plugin off too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any, overload

import pytest

import guarddb
from guarddb import Violation
from guarddb.core.settings import ENV_MODE, check_mode
from guarddb.tools.install import Installation, install
from guarddb.tools.runner import ChildSpool, group

_FIXTURE = "guarddb_violations"
_PHASES = {"setup": "the setup of this test", "call": "this test", "teardown": "its teardown"}
_STACK_INDENT = "    "


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--guarddb=MODE`` and the ini option ``guarddb``."""
    group = parser.getgroup("guarddb", "guarddb: connection guard violations fail tests")
    group.addoption(
        "--guarddb",
        dest="guarddb_mode",
        metavar="MODE",
        default=None,
        help="install guarddb as MySQLdb and as pymysql (whichever drivers are installed) "
        "with this default guard mode (exclusive, strict, mutex, off) and fail every test "
        "that makes a guard violation, even a caught one. "
        f"Default: ${ENV_MODE}, else the ini option guarddb, else off.",
    )
    parser.addini(
        "guarddb",
        help="guard mode to install guarddb as MySQLdb and pymysql with (like --guarddb=MODE)",
        default="",
    )


class _Watch:
    """The violations of one test."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.checked = 0
        #: The test uses the fixture: it answers for its violations itself.
        self.responsible = False
        #: The marker's mode was not a mode: the setup fails with this.
        self.error: str | None = None
        self.previous_mode: str | None = None


class _Recorder:
    """The on_violation hook: a violation goes to the test being watched now."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.current: _Watch | None = None
        #: Keep violations outside any watched test (the plugin is on).
        self.keep_outside = False
        self.outside: list[Violation] = []
        self.spool: ChildSpool = ChildSpool()

    def __call__(self, violation: Violation) -> None:
        if os.getpid() != self.pid:  # a forked child: the parent reads it from the spool
            self.spool.write(violation)
            return
        with self.lock:
            self._file([violation])

    def _file(self, violations: Sequence[Violation]) -> None:
        if not violations:
            return
        if self.current is not None:
            self.current.violations.extend(violations)
        elif self.keep_outside:
            self.outside.extend(violations)

    def drain_children(self) -> None:
        """Take in what forked children have written so far."""
        with self.lock:
            self._file(self.spool.read_new())


class _State:
    """The plugin's state for one pytest session (kept in ``config.stash``)."""

    def __init__(self) -> None:
        #: The session's mode and where it came from, when the plugin is on.
        self.mode: str | None = None
        self.source = ""
        self.recorder: _Recorder | None = None
        self.installation: Installation | None = None
        self._undo: list[Any] = []
        self.failed: dict[str, int] = {}

    @property
    def on(self) -> bool:
        return self.mode is not None

    def activate(self, mode: str, source: str) -> None:
        """Install guarddb as MySQLdb and pymysql with ``mode`` as the default; watch every test."""
        try:
            check_mode(mode, source)
        except ValueError as exc:
            raise pytest.UsageError(f"guarddb: {exc}") from None
        previous_mode = guarddb.default_mode()
        installation = self.installation = install()
        guarddb.set_default_mode(mode)
        self.mode, self.source = mode, source
        self._undo.append(installation.undo)
        self._undo.append(lambda: guarddb.set_default_mode(previous_mode))
        self.recorder_needed().keep_outside = True

    def recorder_needed(self) -> _Recorder:
        """The violation hook, registered the first time it is needed."""
        if self.recorder is None:
            recorder = self.recorder = _Recorder()
            guarddb.on_violation(recorder)
            self._undo.append(lambda: guarddb.remove_violation_hook(recorder))
            self._undo.append(recorder.spool.close)
        return self.recorder

    def undo(self) -> None:
        """Leave the process as the session found it."""
        while self._undo:
            self._undo.pop()()


_STATE = pytest.StashKey[_State]()
_WATCH = pytest.StashKey[_Watch]()


def _requested(config: pytest.Config, option: str | None) -> tuple[str, str] | None:
    """(mode, where it was asked for), or None: the command line, the environment, the ini."""
    if option:
        return option.strip(), "--guarddb"
    env = os.environ.get(ENV_MODE, "").strip()
    if env:
        return env, ENV_MODE
    ini = str(config.getini("guarddb") or "").strip()
    if ini:
        return ini, "the ini option guarddb"
    return None


def _state(config: pytest.Config) -> _State:
    state = config.stash.get(_STATE, None)
    if state is None:
        state = config.stash[_STATE] = _State()
    return state


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Install guarddb before conftest.py files and test modules import MySQLdb or pymysql."""
    state = _state(early_config)
    option = getattr(early_config.known_args_namespace, "guarddb_mode", None)
    asked = _requested(early_config, option)
    if asked is not None and not state.on:
        state.activate(*asked)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; turn the plugin on now if it was loaded too late for the above."""
    config.addinivalue_line(
        "markers",
        "guarddb(mode=None): set guarddb's default guard mode for this test and fail it for "
        "any guard violation (a bare marker: the session's mode, or strict)",
    )
    state = _state(config)
    asked = _requested(config, config.getoption("guarddb_mode"))
    if asked is not None and not state.on:
        state.activate(*asked)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Uninstall, restore the default mode, remove the hook."""
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.undo()


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """Say that guarddb is installed, as which drivers, and in which mode."""
    state = config.stash.get(_STATE, None)
    if state is None or not state.on or state.installation is None:
        return None
    installation = state.installation
    lines = [
        f"guarddb: installed as {installation.describe()}, default mode {state.mode} "
        f"(from {state.source})"
    ]
    lines += [f"guarddb: {name} left alone: {why}" for name, why in installation.missing.items()]
    return lines


# -- watching tests ------------------------------------------------------------------------


def _marker_mode(item: pytest.Item, state: _State) -> tuple[bool, str | None]:
    """(whether the test has the marker, the mode it asks for)."""
    marker = item.get_closest_marker("guarddb")
    if marker is None:
        return False, None
    mode = marker.kwargs.get("mode", marker.args[0] if marker.args else None)
    if mode is None:
        mode = state.mode or "strict"
    return True, mode


def _start(item: pytest.Item, state: _State, asked: bool = False) -> _Watch | None:
    """Watch ``item`` if the plugin is on, or the test (or ``asked``) asks for it."""
    marked, mode = _marker_mode(item, state)
    if not (asked or state.on or marked or _FIXTURE in getattr(item, "fixturenames", ())):
        return None
    watch = _Watch()
    if mode is not None:
        watch.previous_mode = guarddb.default_mode()
        try:
            guarddb.set_default_mode(mode)
        except ValueError as exc:
            watch.error = f"@pytest.mark.guarddb: {exc}"
            watch.previous_mode = None
    recorder = state.recorder_needed()
    # What forked children wrote while no test was watched is not this test's.
    recorder.drain_children()
    with recorder.lock:
        recorder.current = watch
    item.stash[_WATCH] = watch
    return watch


def _stop(item: pytest.Item, state: _State, watch: _Watch) -> None:
    recorder = state.recorder
    if recorder is not None:
        recorder.drain_children()
        with recorder.lock:
            if recorder.current is watch:
                recorder.current = None
    if watch.previous_mode is not None:
        guarddb.set_default_mode(watch.previous_mode)
    del item.stash[_WATCH]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[Any]:
    """Watch the test (if asked) from its setup to its teardown."""
    state = _state(item.config)
    watch = _start(item, state)
    try:
        return (yield)
    finally:
        if watch is not None:
            _stop(item, state, watch)


def _phase(item: pytest.Item, when: str) -> Iterator[None]:
    watch = item.stash.get(_WATCH, None)
    if watch is None:
        return (yield)
    if when == "setup" and watch.error is not None:
        pytest.fail(watch.error, pytrace=False)
    try:
        result = yield
    except BaseException:
        fresh = _take_new(item, watch)
        if fresh:
            item.add_report_section(when, "guarddb violations", format_violations(fresh, when))
        raise
    fresh = _take_new(item, watch)
    if fresh:
        text = format_violations(fresh, when, failing=not watch.responsible)
        if not watch.responsible:
            state = _state(item.config)
            state.failed[item.nodeid] = state.failed.get(item.nodeid, 0) + len(fresh)
            pytest.fail(text, pytrace=False)
        item.add_report_section(when, "guarddb violations", text)
    return result


def _take_new(item: pytest.Item, watch: _Watch) -> list[Violation]:
    recorder = _state(item.config).recorder
    if recorder is not None:
        recorder.drain_children()
        with recorder.lock:
            fresh = watch.violations[watch.checked :]
            watch.checked = len(watch.violations)
        return fresh
    return []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Fail the setup for its violations."""
    return (yield from _phase(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail the test for its violations."""
    return (yield from _phase(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Fail the teardown for its violations."""
    return (yield from _phase(item, "teardown"))


class ViolationLog(Sequence[Violation]):
    """The violations of one test so far, in order (what ``guarddb_violations`` gives).

    Read-only and live: each read first takes in what forked children have
    written.  Compares equal to a list of the same violations.
    """

    def __init__(self, watch: _Watch, recorder: _Recorder) -> None:
        self._watch = watch
        self._recorder = recorder

    def _now(self) -> list[Violation]:
        self._recorder.drain_children()
        with self._recorder.lock:
            return list(self._watch.violations)

    @overload
    def __getitem__(self, index: int) -> Violation: ...

    @overload
    def __getitem__(self, index: slice) -> list[Violation]: ...

    def __getitem__(self, index: int | slice) -> Violation | list[Violation]:
        return self._now()[index]

    def __len__(self) -> int:
        return len(self._now())

    def __iter__(self) -> Iterator[Violation]:
        return iter(self._now())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (ViolationLog, list, tuple)):
            return self._now() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ViolationLog({self._now()!r})"


@pytest.fixture
def guarddb_violations(request: pytest.FixtureRequest) -> Iterator[ViolationLog]:
    """The guard violations of this test so far (live); the test answers for them.

    A test using this fixture is not failed for its violations by the plugin:
    assert on them (``kind``, ``site``, ``connection_site``, ``thread``,
    ``pid``, ``stack``, ``error``, see :class:`guarddb.Violation`).
    """
    state = _state(request.config)
    item = request.node
    watch = item.stash.get(_WATCH, None)
    started = watch is None  # asked for through request.getfixturevalue()
    if watch is None:
        watch = _start(item, state, asked=True)
        assert watch is not None
    watch.responsible = True
    yield ViolationLog(watch, state.recorder_needed())
    if started:
        _stop(item, state, watch)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """List the tests failed for violations, and violations outside any test."""
    state = config.stash.get(_STATE, None)
    if state is None or state.recorder is None:
        return
    state.recorder.drain_children()
    if not state.failed and not state.recorder.outside:
        return
    terminalreporter.section("guarddb")
    if state.failed:
        total = sum(state.failed.values())
        terminalreporter.write_line(
            f"{len(state.failed)} test{'s' * (len(state.failed) != 1)} failed for {total} "
            f"guard violation{'s' * (total != 1)} that nothing raised to pytest:"
        )
        for nodeid, count in state.failed.items():
            terminalreporter.write_line(f"  {nodeid} ({count})")
    if state.recorder.outside:
        terminalreporter.write_line(
            format_violations(state.recorder.outside, "outside", failing=False).rstrip()
        )


# -- the report ----------------------------------------------------------------------------


def format_violations(violations: Sequence[Violation], when: str, failing: bool = False) -> str:
    """The report of ``violations``: grouped by (kind, connection site, site), with the stack."""
    count = len(violations)
    noun = f"{count} guard violation{'s' * (count != 1)}"
    if when == "outside":
        head = f"guarddb: {noun} outside any test (at collection, or in leftover threads):"
    elif failing:
        head = (
            f"guarddb: {noun} during {_PHASES.get(when, when)}, which would have passed: "
            f"the code under test caught the error, or it was raised in a thread nobody "
            f"checked."
        )
    else:
        head = f"guarddb: {noun} during {_PHASES.get(when, when)}:"
    lines = [head]
    for number, entry in enumerate(group(violations), 1):
        times = "once" if entry["count"] == 1 else f"{entry['count']} times"
        threads = ", ".join(entry["threads"])
        pids = ", ".join(str(pid) for pid in entry["pids"])
        lines += [
            "",
            f"[{number}] {entry['kind']}, {times}, in thread{'s' * (len(entry['threads']) != 1)} "
            f"{threads} (pid{'s' * (len(entry['pids']) != 1)} {pids})",
            f"    connection opened at: {entry['connection_site']}",
            f"    violating call at:    {entry['site']}",
            f"    {entry['message']}",
        ]
        if entry["stack"]:
            lines.append("    stack of the first (most recent call last):")
            for frame in entry["stack"]:
                lines += [_STACK_INDENT + part for part in frame.rstrip().splitlines()]
    return "\n".join(lines) + "\n"
