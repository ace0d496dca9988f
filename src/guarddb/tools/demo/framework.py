"""The demo's scenario framework: what a scenario is, what its runs give, the child's side.

A :class:`Scenario` reproduces one bug of sharing a MySQL connection (between
threads, across ``fork``, ...) or of leaving one open, on one driver
(:data:`LIBRARIES`: mysqlclient, or PyMySQL); it runs once with the plain
driver and once for each of its guarddb :class:`Variant` objects (guarddb's
face for that driver: ``guarddb``, ``guarddb.pymysql``), each run in a child
process (:mod:`guarddb.tools.demo.process`).  In the child, the
scenario's body gets a :class:`Context` and counts what each of its workers
(thread, forked process, Celery task) saw in a :class:`Recorder`, whose JSON
report :func:`classify` turns into an :class:`Outcome`: one of :data:`KINDS`
(or :data:`SKIPPED`, when what the scenario needs, Celery, a broker,
SQLAlchemy or gevent, is not there), with what was seen, for people.

The scenarios themselves are listed in :mod:`guarddb.tools.demo.catalog`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: What the child prints in front of its JSON report.
RESULT_MARK = "GUARDDB-SCENARIO-RESULT "

#: Outcome kinds, from the worst to the best; a run is classified as the first that applies.
KINDS = (
    "signal",  # the child (or one of its forked processes) was killed by a signal
    "hang",  # a worker did not finish in time
    "wrong rows",  # a query returned rows that were not its own (or none)
    "commands out of sync",  # (2014)
    "lost connection",  # (2013) / (2006), not raised by guarddb
    "error",  # another exception
    "sessions left open",  # sessions nobody uses stay on the server, and nobody is told
    "clean error",  # guarddb.GuardError subclasses only
    "reported",  # sessions left open, each one reported by guarddb with where it was opened
    "correct",
)

#: The kinds that are failures guarddb exists to prevent (shown in red by the demo).
BAD_KINDS = KINDS[: KINDS.index("sessions left open") + 1]

#: The kind of a run that did not happen: what it needs is missing (not a failure).
SKIPPED = "skipped"

#: The drivers :func:`~guarddb.tools.demo.process.run` can test: the scenario's library
#: plain, or guarded by guarddb.
DRIVERS = ("plain", "guarddb")


class Library(NamedTuple):
    """A driver library the scenarios run on: its plain module, and guarddb's face for it."""

    #: As people know it: "mysqlclient", "PyMySQL".
    name: str
    #: The module a program imports: "MySQLdb", "pymysql".
    plain: str
    #: guarddb's face for it: "guarddb", "guarddb.pymysql".
    guarded: str
    #: How to install it.
    how: str

    def version(self) -> str | None:
        """Its version, or None when it is not installed."""
        try:
            if self.plain == "MySQLdb":
                import MySQLdb.release

                return str(MySQLdb.release.__version__)
            module = importlib.import_module(self.plain)
        except ImportError:
            return None
        # PyMySQL's __version__ is the mysqlclient version it stands in for.
        return str(getattr(module, "VERSION_STRING", getattr(module, "__version__", "?")))

    def label(self) -> str:
        """``plain PyMySQL 1.2.4``: the plain runs, in progress lines and headers."""
        version = self.version()
        return f"plain {self.name}" + (f" {version}" if version else "")


#: The libraries, by :attr:`Scenario.library`.
LIBRARIES = {
    "mysqlclient": Library(
        "mysqlclient", "MySQLdb", "guarddb", "pip install 'guarddb[mysqlclient]'"
    ),
    "pymysql": Library("PyMySQL", "pymysql", "guarddb.pymysql", "pip install 'guarddb[pymysql]'"),
}

#: Errors that mean the driver lost the session (not raised by guarddb).
LOST_CONNECTION = (2006, 2013)
COMMANDS_OUT_OF_SYNC = 2014


class Expected(NamedTuple):
    """What guarddb must make of a scenario: an outcome kind and, for a clean error, its class."""

    kind: str
    error: str | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.error}" if self.error else self.kind


class Variant(NamedTuple):
    """One guarddb run of a scenario: its connect keywords and what guarddb must make of it."""

    #: guarddb's connect keywords, as ``(name, value)`` pairs (``()``: the defaults).
    options: tuple[tuple[str, Any], ...]
    expected: Expected

    @property
    def label(self) -> str:
        """``guarddb``, followed by the keywords: ``guarddb on_fork="reconnect"``."""
        return self.label_on("guarddb")

    def label_on(self, face: str) -> str:
        """The label with guarddb's face for the scenario's library: ``guarddb.pymysql ...``."""
        return " ".join([face, *(f"{k}={_show(v)}" for k, v in self.options)])


def _show(value: Any) -> str:
    """A keyword's value as it is written in code: ``"reconnect"``, ``True``, ``2``."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


class Scenario(NamedTuple):
    """One failure scenario: the seeds of DESIGN.md, of the frameworks and of the lifecycle."""

    name: str
    title: str
    #: What guarddb must make of it, with ``options``.
    expected_guarded: Expected
    #: guarddb's connect keywords for its guarddb run (``()``: the defaults).
    options: tuple[tuple[str, Any], ...] = ()
    #: Further guarddb runs, with other keywords (the plain driver runs once).
    more: tuple[Variant, ...] = ()
    #: Modules the scenario needs (importable in the child), with how to get them.
    requires: tuple[tuple[str, str], ...] = ()
    #: It needs a Celery broker (see :mod:`guarddb.tools.broker`).
    broker: bool = False
    #: Seconds :func:`~guarddb.tools.demo.process.run` adds to its ``timeout`` (starting a
    #: worker, watching the server).
    extra_time: float = 0.0
    #: Its child runs ``gevent.monkey.patch_all()`` before anything else: its workers are
    #: greenlets (it must also require gevent).
    gevent: bool = False
    #: The driver it runs on (a key of :data:`LIBRARIES`): plain, and guarded by guarddb.
    library: str = "mysqlclient"

    @property
    def variants(self) -> tuple[Variant, ...]:
        """Every guarddb run: the main one first."""
        return (Variant(self.options, self.expected_guarded), *self.more)

    @property
    def driver_library(self) -> Library:
        """The :class:`Library` it runs on."""
        return LIBRARIES[self.library]

    def label(self, variant: Variant | None) -> str:
        """What a run is, for people: ``plain PyMySQL 1.2.4``, ``guarddb.pymysql``, ..."""
        library = self.driver_library
        return library.label() if variant is None else variant.label_on(library.guarded)


@dataclass
class Outcome:
    """What one run of a scenario did.

    ``kind`` is one of :data:`KINDS`; ``detail`` says what was seen, for
    people; ``errors`` counts every exception by ``"ClassName(errno)"`` (or
    ``"ClassName"`` when it carries no error number) over all workers.
    """

    kind: str
    detail: str
    errors: dict[str, int] = field(default_factory=dict)
    #: Names of the guarddb.GuardError classes raised (a subset of ``errors``' classes).
    guard_errors: tuple[str, ...] = ()
    #: Seconds the run took, child start to classification.
    elapsed: float = 0.0
    #: The child's JSON report, or None if it printed none (killed, crashed).
    report: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


# -- what a run gave -------------------------------------------------------------------------


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


_ERRNO = re.compile(r"\((\d+)\)$")


def _errno(key: str) -> int | None:
    found = _ERRNO.search(key)
    return int(found.group(1)) if found else None


def _class_name(key: str) -> str:
    return key.split("(", 1)[0]


def _stderr_hint(stderr: str) -> str:
    """The last line the child wrote to stderr (glibc's 'malloc(): ...', a traceback's end)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1][:100] if lines else ""


def _workers_phrase(names: list[str], total: int) -> str:
    if len(names) <= 2:
        return " and ".join(names)
    listed = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"{len(names)} of {total} workers ({listed})"


def classify(
    report: dict[str, Any] | None,
    returncode: int | None,
    timed_out: bool,
    stderr: str = "",
    timeout: float = 0.0,
) -> Outcome:
    """Turn a child's report and fate into an :class:`Outcome`.

    Precedence: signal > hang > wrong rows > commands out of sync > lost
    connection > error > sessions left open > clean error > reported > correct.
    A report that says the scenario was skipped is a "skipped" outcome.
    """
    if report is not None and report.get("skipped"):
        return Outcome(SKIPPED, str(report["skipped"]), report=report)
    workers: dict[str, dict[str, Any]] = (report or {}).get("workers", {})
    guard_keys = set((report or {}).get("guard_errors", ()))
    samples: dict[str, str] = (report or {}).get("samples", {})
    errors: dict[str, int] = {}
    correct = wrong = 0
    wrong_sample = ""
    signalled: dict[str, list[str]] = {}
    hung: list[str] = []
    died: list[str] = []
    for worker, stats in workers.items():
        correct += stats.get("correct", 0)
        wrong += stats.get("wrong", 0)
        if stats.get("wrong") and not wrong_sample:
            wrong_sample = stats.get("wrong_sample") or ""
        for key, count in stats.get("errors", {}).items():
            errors[key] = errors.get(key, 0) + count
        status = stats.get("status", "done")
        if status.startswith("signal:"):
            signalled.setdefault(status[len("signal:") :], []).append(worker)
        elif status == "hung" or status == "running":
            hung.append(worker)
        elif status.startswith("exit:"):
            died.append(f"{worker} exited with code {status[len('exit:') :]}")
    guard_errors = tuple(sorted({_class_name(k) for k in errors if k in guard_keys}))
    other_errors = {k: n for k, n in errors.items() if k not in guard_keys}
    results = correct + wrong + sum(errors.values())

    parts: list[str] = []
    if signalled:
        parts.append(
            ", ".join(
                f"{sig} in {_workers_phrase(w, len(workers))}" for sig, w in signalled.items()
            )
        )
    if hung:
        waited = (report or {}).get("deadline", timeout)
        how = (report or {}).get("hang_phrase") or f"no answer in {waited:g}s"
        parts.append(f"{_workers_phrase(hung, len(workers))} hung ({how})")
    parts.extend(died)
    if wrong:
        parts.append(
            f"{wrong} of {results} results wrong"
            + (f", e.g. {wrong_sample}" if wrong_sample else "")
        )
    if errors:
        ordered = sorted(errors.items(), key=lambda item: (item[0] in guard_keys, -item[1]))
        parts.append(", ".join(f"{key} x{count}" for key, count in ordered))
        shown = [key for key, _ in ordered if key not in guard_keys and key in samples][:2]
        parts.extend(f"{key}: {samples[key][:60]!r}" for key in shown)
    if results and (wrong or errors):
        parts.append(f"{correct} of {results} correct")
    # Sessions the scenario left open on the server at its end, and how many guarddb reported.
    left_open: dict[str, int] = (report or {}).get("left_open", {})
    open_count = int(left_open.get("count", 0))
    reported = int(left_open.get("reported", 0))
    notes: list[str] = [str(note) for note in (report or {}).get("notes", ())]

    if returncode is not None and returncode < 0 and not timed_out:
        hint = _stderr_hint(stderr)
        detail = f"{signal_name(-returncode)}: the process died" + (f" ({hint})" if hint else "")
        return Outcome("signal", detail, errors, guard_errors, report=report)
    if signalled:
        kind = "signal"
    elif timed_out and report is None:
        return Outcome(
            "hang", f"no answer in {timeout:g}s, killed", errors, guard_errors, report=report
        )
    elif hung:
        kind = "hang"
    elif wrong:
        kind = "wrong rows"
    elif any(_errno(k) == COMMANDS_OUT_OF_SYNC for k in other_errors):
        kind = "commands out of sync"
    elif any(_errno(k) in LOST_CONNECTION for k in other_errors):
        kind = "lost connection"
    elif other_errors or died:
        kind = "error"
    elif report is None:
        hint = _stderr_hint(stderr)
        detail = f"no report (exit code {returncode})" + (f": {hint}" if hint else "")
        return Outcome("error", detail, errors, guard_errors, report=report)
    elif open_count and reported < open_count:
        kind = "sessions left open"
    elif guard_errors:
        kind = "clean error"
    elif open_count:
        kind = "reported"
    else:
        kind = "correct"
        if not parts and results and not notes:
            parts.append(f"{correct} of {results} results correct")
    return Outcome(kind, "; ".join(parts + notes), errors, guard_errors, report=report)


# -- the child side --------------------------------------------------------------------------


class Recorder:
    """Per-worker counts, shared by the child's threads; JSON-ready."""

    def __init__(self, guard_error: type[BaseException] | None) -> None:
        self.guard_error = guard_error
        self.lock = threading.Lock()
        self.workers: dict[str, dict[str, Any]] = {}
        self.guard_keys: set[str] = set()
        self.samples: dict[str, str] = {}
        #: Processes forked by the scenario: killed if they outlive the deadline.
        self.children: list[int] = []
        #: What people should know besides the counts (the lifecycle, the frameworks).
        self.notes: list[str] = []
        #: Sessions the scenario left open at its end: {"count": n, "reported": m}.
        self.left_open: dict[str, int] = {}
        #: How hung workers were given up, if not at the deadline ("killed at the time limit").
        self.hang_phrase: str | None = None

    def note(self, text: str) -> None:
        """Add a sentence to the outcome's detail."""
        with self.lock:
            self.notes.append(text)

    def sessions_left_open(self, count: int, reported: int = 0) -> None:
        """The scenario ended with ``count`` sessions nobody uses; guarddb reported ``reported``."""
        with self.lock:
            self.left_open = {"count": count, "reported": reported}

    def add(self, worker: str) -> None:
        with self.lock:
            self.workers.setdefault(
                worker,
                {"correct": 0, "wrong": 0, "errors": {}, "status": "running", "wrong_sample": ""},
            )

    def status(self, worker: str, status: str) -> None:
        self.add(worker)
        with self.lock:
            self.workers[worker]["status"] = status

    def check(self, worker: str, got: Any, want: Any) -> None:
        """Count ``got`` as correct if it equals ``want``, else as wrong rows."""
        self.apply(worker, self.check_event(worker, got, want))

    def check_event(self, worker: str, got: Any, want: Any) -> tuple[Any, ...]:
        if got == want:
            return ("correct",)
        return ("wrong", f"{worker} got {got!r:.40} for {want!r:.40}")

    def error(self, worker: str, exc: BaseException) -> None:
        self.apply(worker, self.error_event(exc))

    def error_event(self, exc: BaseException) -> tuple[Any, ...]:
        code = exc.args[0] if exc.args and type(exc.args[0]) is int else None
        key = type(exc).__name__ if code is None else f"{type(exc).__name__}({code})"
        is_guard = self.guard_error is not None and isinstance(exc, self.guard_error)
        message = str(exc.args[-1]) if exc.args else str(exc)
        return ("error", key, is_guard, message[:120])

    def apply(self, worker: str, event: tuple[Any, ...] | list[Any]) -> None:
        """Record one event: ("correct",) ("wrong", sample) ("error", key, guard, msg) ("done",)."""
        self.add(worker)
        with self.lock:
            stats = self.workers[worker]
            what = event[0]
            if what == "correct":
                stats["correct"] += 1
            elif what == "wrong":
                stats["wrong"] += 1
                stats["wrong_sample"] = stats["wrong_sample"] or event[1]
            elif what == "error":
                key = event[1]
                stats["errors"][key] = stats["errors"].get(key, 0) + 1
                if event[2]:
                    self.guard_keys.add(key)
                self.samples.setdefault(key, event[3])
            elif what == "done" and stats["status"] == "running":
                stats["status"] = "done"

    def done(self, worker: str) -> None:
        self.apply(worker, ("done",))

    def reaped(self, pid: int) -> None:
        """A forked process was waited for: its pid may be reused, never kill it now."""
        with self.lock:
            if pid in self.children:
                self.children.remove(pid)

    def give_up(self) -> None:
        """The deadline passed: unfinished workers hung; kill the processes still around."""
        with self.lock:
            for stats in self.workers.values():
                if stats["status"] == "running":
                    stats["status"] = "hung"
            children = list(self.children)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def report(self, **extra: Any) -> dict[str, Any]:
        with self.lock:
            return {
                **extra,
                "workers": json.loads(json.dumps(self.workers)),
                "guard_errors": sorted(self.guard_keys),
                "samples": dict(self.samples),
                "notes": list(self.notes),
                "left_open": dict(self.left_open),
                "hang_phrase": self.hang_phrase,
            }


def exit_status(status: int) -> str:
    """A worker status from os.waitpid's status."""
    if os.WIFSIGNALED(status):
        return "signal:" + signal_name(os.WTERMSIG(status))
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return "done" if code == 0 else f"exit:{code}"


@dataclass
class Context:
    """What a scenario's body gets in the child."""

    #: The driver's module: MySQLdb or guarddb; pymysql or guarddb.pymysql.
    db: Any
    driver: str
    #: Where the server is (keywords MySQLdb and PyMySQL both take).
    connect_args: dict[str, Any]
    #: guarddb's connect keywords for the connections under test ({} for plain).
    options: dict[str, Any]
    rec: Recorder
    #: The Celery broker URL, for the scenarios that need one.
    broker_url: str | None
    #: ``time.monotonic()`` by which the body must have finished.
    deadline: float

    def remaining(self) -> float:
        """Seconds left before the deadline."""
        return self.deadline - time.monotonic()
