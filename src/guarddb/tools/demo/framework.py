"""The failure scenarios of DESIGN.md and of the frameworks, each run in a child process.

Sharing one MySQL connection between threads or across ``fork`` crashes,
hangs or silently mixes up results on plain mysqlclient; connections left open
by ended threads, or idle in a pool, pile up on the server.  Each scenario here
reproduces one such bug; :func:`run` runs it against plain mysqlclient
(``import MySQLdb``) or guarddb (``import guarddb as MySQLdb``, with the
scenario's guarddb connect keywords) in a child process with a time limit, and
classifies what happened into one of :data:`KINDS` (or ``"skipped"``, when what
the scenario needs, Celery, a broker or SQLAlchemy, is not there).  The child
never takes its caller down: a segfault, an abort or a hang is an
:class:`Outcome` like any other.

The child is ``python -m guarddb._scenarios --child NAME DRIVER JSON`` (JSON:
the connect arguments; ``--options JSON``: guarddb's connect keywords;
``--broker URL``).  It prints one line, :data:`RESULT_MARK` followed by a JSON
report: for every worker (thread, forked process, Celery task) its count of
correct results, wrong rows and exceptions by ``"ClassName(errno)"``, and how it
ended; the sessions a scenario left open on the server; notes for people.  A
"plain" child imports the guarddb package (to run this module) but opens no
guarded connection, so guarddb's fork handler is never installed there.

The bodies of the framework and lifecycle scenarios are in
:mod:`guarddb._demo_bodies`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

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

#: The drivers :func:`run` can test.
DRIVERS = ("plain", "guarddb")

#: Errors that mean libmysqlclient lost the session (not raised by guarddb).
LOST_CONNECTION = (2006, 2013)
COMMANDS_OUT_OF_SYNC = 2014

THREADS = 8
THREAD_LOOPS = 200  # round trips that did not raise, per thread
THREAD_ATTEMPTS = 1000  # at most, per thread
FORK_CHILDREN = 8
FORK_LOOPS = 20
SS_ROWS = 1000

#: Rows 1..SS_ROWS, with no table (MariaDB >= 10.2, MySQL >= 8.0).
_ROWS_SQL = (
    "WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq "
    f"WHERE n < {SS_ROWS}) SELECT n FROM seq"
)


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
        return " ".join(["guarddb", *(f"{k}={_show(v)}" for k, v in self.options)])


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
    #: Further guarddb runs, with other keywords (plain mysqlclient runs once).
    more: tuple[Variant, ...] = ()
    #: Modules the scenario needs (importable in the child), with how to get them.
    requires: tuple[tuple[str, str], ...] = ()
    #: It needs a Celery broker (see :mod:`guarddb._broker`).
    broker: bool = False
    #: Seconds :func:`run` adds to its ``timeout`` (starting a worker, watching the server).
    extra_time: float = 0.0

    @property
    def variants(self) -> tuple[Variant, ...]:
        """Every guarddb run: the main one first."""
        return (Variant(self.options, self.expected_guarded), *self.more)


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


SCENARIOS: OrderedDict[str, Scenario] = OrderedDict(
    (s.name, s)
    for s in (
        Scenario(
            "shared_cursor",
            "8 threads share one connection and one cursor (execute + fetchall)",
            Expected("clean error", "ConcurrentUseError"),
        ),
        Scenario(
            "fork_shared",
            "a connection opened before fork, used by 8 multiprocessing children",
            Expected("clean error", "ForkedConnectionError"),
        ),
        Scenario(
            "fork_child_close",
            "a forked child closes, or drops and exits with, the inherited connection",
            Expected("correct"),
        ),
        Scenario(
            "sscursor_pending",
            "SSCursor with rows unread, then a second query on the same connection",
            Expected("clean error", "PendingResultError"),
        ),
        Scenario(
            "celery_prefork",
            "a Celery prefork worker (2 children) whose module opens a connection at import; "
            "8 tasks each insert a row and make 200 round trips",
            Expected("clean error", "ForkedConnectionError"),
            options=(("on_fork", "raise"),),
            more=(Variant((("on_fork", "reconnect"),), Expected("correct")),),
            requires=(("celery", "pip install 'celery[redis]>=5.3'"),),
            broker=True,
            extra_time=20.0,
        ),
        Scenario(
            "thread_pool_leak",
            "a thread pool whose threads each open a connection and end without closing it "
            "(references kept, as a framework's reference cycles keep them)",
            Expected("reported"),
            more=(Variant((("close_orphans", True),), Expected("correct")),),
            extra_time=5.0,
        ),
        Scenario(
            "idle_pool",
            "a SQLAlchemy QueuePool (pool_size 10, pool_pre_ping) used by a burst of 15 "
            "threads, then left idle; then one more checkout",
            Expected("correct"),
            options=(("max_idle", 2),),
            requires=(("sqlalchemy", "pip install 'sqlalchemy>=2'"),),
            extra_time=8.0,
        ),
    )
)


def matches(scenario: Scenario | str, outcome: Outcome, expected: Expected | None = None) -> bool:
    """True if ``outcome`` is what guarddb must give for ``scenario`` (or ``expected``).

    ``expected`` defaults to the scenario's main guarddb run; give a
    :class:`Variant`'s for the others.  A clean error must be of exactly the
    expected GuardError class, no other.  A skipped run matches nothing.
    """
    if isinstance(scenario, str):
        scenario = SCENARIOS[scenario]
    if expected is None:
        expected = scenario.expected_guarded
    if outcome.kind != expected.kind:
        return False
    return expected.error is None or outcome.guard_errors == (expected.error,)


def missing_requirement(scenario: Scenario | str) -> str | None:
    """Why ``scenario`` cannot run in this interpreter (a module it needs), or None."""
    if isinstance(scenario, str):
        scenario = SCENARIOS[scenario]
    for module, how in scenario.requires:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({how}, or guarddb's test extra)"
    return None


# -- the parent side -------------------------------------------------------------------------


def run(
    name: str,
    driver: str,
    connect_args: dict[str, Any],
    timeout: float = 20.0,
    python: str | None = None,
    options: dict[str, Any] | None = None,
    broker_url: str | None = None,
) -> Outcome:
    """Run scenario ``name`` with ``driver`` ("plain" or "guarddb") in a child process.

    The child gets ``timeout`` seconds, plus the scenario's ``extra_time``, in
    all; it stops waiting for its workers a little earlier so that it can still
    say which ones hung.  Whatever is left of its process group at the end is
    killed.  ``python`` is the interpreter to run it with (default: this one);
    guarddb's source directory is put on its ``PYTHONPATH``.  ``options`` are
    guarddb's connect keywords (default: the scenario's own; only for
    "guarddb").  A scenario that needs a broker uses ``broker_url``, else one
    that :func:`guarddb._broker.find_broker` finds or starts for this run.
    What the scenario needs and is missing gives a "skipped" outcome.
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if driver not in DRIVERS:
        raise ValueError(f"unknown driver {driver!r}; use one of {', '.join(DRIVERS)}")
    scenario = SCENARIOS[name]
    if options is None:
        options = dict(scenario.options) if driver == "guarddb" else {}
    elif options and driver != "guarddb":
        raise ValueError("options are guarddb's connect keywords: give them to guarddb runs only")
    if python is None:
        missing = missing_requirement(scenario)
        if missing is not None:
            return Outcome(SKIPPED, missing)
    private = None
    if scenario.broker and broker_url is None:
        from ._broker import NoBroker, find_broker

        try:
            broker_url, private = find_broker()
        except NoBroker as exc:
            return Outcome(SKIPPED, str(exc))
    try:
        return _run_child(
            name, driver, connect_args, timeout + scenario.extra_time, python, options, broker_url
        )
    finally:
        if private is not None:
            private.stop()


def _run_child(
    name: str,
    driver: str,
    connect_args: dict[str, Any],
    timeout: float,
    python: str | None,
    options: dict[str, Any],
    broker_url: str | None,
) -> Outcome:
    """Run the child of one scenario run and classify what it did (see :func:`run`)."""
    deadline = max(timeout - min(3.0, timeout * 0.25), 0.5)
    command = [
        python or sys.executable,
        "-m",
        "guarddb._scenarios",
        "--deadline",
        f"{deadline:g}",
        "--options",
        json.dumps(options),
    ]
    if broker_url:
        command += ["--broker", broker_url]
    command += ["--child", name, driver, json.dumps(connect_args)]
    env = dict(os.environ)
    source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    # The scenarios measure guarddb's defaults and their own keywords: no GUARDDB_MODE,
    # GUARDDB_CLOSE_ORPHANS, ... from the caller's environment (GUARDDB_TEST_* stay).
    for variable in [v for v in env if v.startswith("GUARDDB_")]:
        if not variable.startswith("GUARDDB_TEST_"):
            del env[variable]
    env.pop("PYTHONFAULTHANDLER", None)  # a crash is reported by its signal, not a dump
    env.pop("DJANGO_SETTINGS_MODULE", None)  # Celery would install its Django fixup
    started = time.monotonic()
    child = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The child, or a process it forked that still holds its pipes, is stuck.
        timed_out = child.poll() is None
        _kill_group(child.pid)
        try:
            out, err = child.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a process that left the group holds the pipes
            timed_out, out, err = True, b"", b""
    finally:
        _kill_group(child.pid)  # forked workers the child could not reap
        if child.poll() is None:
            child.kill()
            child.wait()
    elapsed = time.monotonic() - started
    report = _parse_report(out.decode(errors="replace"))
    outcome = classify(
        report,
        child.returncode,
        timed_out,
        err.decode(errors="replace"),
        timeout,
    )
    outcome.elapsed = elapsed
    return outcome


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _parse_report(out: str) -> dict[str, Any] | None:
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARK):
            try:
                report = json.loads(line[len(RESULT_MARK) :])
            except ValueError:
                return None
            return report if isinstance(report, dict) else None
    return None


def _signal_name(number: int) -> str:
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
        detail = f"{_signal_name(-returncode)}: the process died" + (f" ({hint})" if hint else "")
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


class _Recorder:
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


def _exit_status(status: int) -> str:
    """A worker status from os.waitpid's status."""
    if os.WIFSIGNALED(status):
        return "signal:" + _signal_name(os.WTERMSIG(status))
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return "done" if code == 0 else f"exit:{code}"


def _shared_cursor(db: Any, connect_args: dict[str, Any], rec: _Recorder) -> None:
    """8 threads share one connection and one cursor; each checks it gets its own number.

    A thread goes on until it has had THREAD_LOOPS answers (or made
    THREAD_ATTEMPTS attempts), retrying shortly after an error.
    """
    conn = db.connect(**connect_args)
    cursor = conn.cursor()
    start = threading.Barrier(THREADS)

    def work(number: int) -> None:
        worker = f"thread {number}"
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(timeout=10)
        answered = 0
        for _ in range(THREAD_ATTEMPTS):
            try:
                cursor.execute("SELECT %s", (number,))
                rows = cursor.fetchall()
            except Exception as exc:
                rec.error(worker, exc)
                time.sleep(0.0002)  # what legacy code does on an error: retry soon
                continue
            rec.check(worker, rows, ((number,),))
            answered += 1
            if answered == THREAD_LOOPS:
                break
        rec.done(worker)

    threads = []
    for number in range(1, THREADS + 1):
        rec.add(f"thread {number}")
        threads.append(threading.Thread(target=work, args=(number,), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    conn.close()


def _fork_shared(db: Any, connect_args: dict[str, Any], rec: _Recorder) -> None:
    """A connection opened before fork, used by 8 fork-context children and by the parent."""
    context = multiprocessing.get_context("fork")
    conn = db.connect(**connect_args)
    go = context.Event()

    def query_loop(number: int, report: Callable[[tuple[Any, ...]], None]) -> None:
        worker = f"child {number}" if number else "parent"
        go.wait(10)
        for _ in range(FORK_LOOPS):
            try:
                cursor = conn.cursor()
                cursor.execute("SELECT %s", (number,))
                rows = cursor.fetchall()
            except Exception as exc:
                report(rec.error_event(exc))
                continue
            report(rec.check_event(worker, rows, ((number,),)))
        report(("done",))

    def child(number: int, pipe: Any) -> None:
        query_loop(number, pipe.send)
        pipe.close()

    readers: dict[Any, str] = {}
    processes: dict[str, Any] = {}
    for number in range(1, FORK_CHILDREN + 1):
        worker = f"child {number}"
        rec.add(worker)
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(target=child, args=(number, writer), daemon=True)
        process.start()
        writer.close()
        rec.children.append(process.pid)
        readers[reader] = worker
        processes[worker] = process
    rec.add("parent")
    parent = threading.Thread(
        target=query_loop, args=(0, lambda event: rec.apply("parent", event)), daemon=True
    )
    parent.start()
    go.set()
    while readers:
        for reader in multiprocessing.connection.wait(list(readers)):
            try:
                event = reader.recv()
            except (EOFError, OSError):
                del readers[reader]
                continue
            rec.apply(readers[reader], event)
    for worker, process in processes.items():
        process.join(10)
        if process.exitcode is not None:
            rec.reaped(process.pid)
        if process.exitcode is not None and process.exitcode < 0:
            rec.status(worker, "signal:" + _signal_name(-process.exitcode))
        elif process.exitcode:
            rec.status(worker, f"exit:{process.exitcode}")
    parent.join()
    conn.close()


def _fork_child_close(db: Any, connect_args: dict[str, Any], rec: _Recorder) -> None:
    """A forked child closes the inherited connection; another drops it and exits.

    Each case gets a fresh connection; after the child is gone the parent
    checks that its session is the same one and still answers.
    """
    for action in ("close", "del"):
        child_worker = f"child ({action})"
        parent_worker = f"parent after child ({action})"
        rec.add(parent_worker)
        rec.add(child_worker)
        conn = db.connect(**connect_args)
        cursor = conn.cursor()
        cursor.execute("SELECT CONNECTION_ID()")
        before = cursor.fetchall()
        cursor.close()
        del cursor
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no return from here
            code = 0
            os.close(reader)
            try:
                if action == "close":
                    conn.close()
                else:
                    del conn
                    gc.collect()
            except BaseException as exc:
                os.write(writer, json.dumps(rec.error_event(exc)).encode())
                code = 3
            os._exit(code)
        os.close(writer)
        rec.children.append(pid)
        with os.fdopen(reader, "rb") as pipe:
            said = pipe.read()
        _, status = os.waitpid(pid, 0)
        rec.reaped(pid)
        if said:
            rec.apply(child_worker, json.loads(said))
        rec.status(child_worker, _exit_status(status))
        for sql, want in (("SELECT CONNECTION_ID()", before), ("SELECT %s", ((7,),))):
            try:
                cursor = conn.cursor()
                cursor.execute(sql, (7,) if "%s" in sql else None)
                rec.check(parent_worker, cursor.fetchall(), want)
            except Exception as exc:
                rec.error(parent_worker, exc)
        rec.done(parent_worker)
        try:
            conn.close()
        except Exception as exc:
            rec.error(parent_worker, exc)


def _sscursor_pending(db: Any, connect_args: dict[str, Any], rec: _Recorder) -> None:
    """An SSCursor with rows unread; a second query on another cursor, same thread."""
    conn = db.connect(**connect_args)
    for worker in ("SSCursor", "second query", "query after read-out"):
        rec.add(worker)
    unbuffered = conn.cursor(db.cursors.SSCursor)
    other = conn.cursor()
    try:
        unbuffered.execute(_ROWS_SQL)
        rec.check("SSCursor", unbuffered.fetchone(), (1,))
    except Exception as exc:
        rec.error("SSCursor", exc)
    try:
        other.execute("SELECT %s", (2,))
        rec.check("second query", other.fetchall(), ((2,),))
    except Exception as exc:
        rec.error("second query", exc)
    rec.done("second query")
    try:
        rows = unbuffered.fetchall()
        rec.check("SSCursor", tuple(rows), tuple((n,) for n in range(2, SS_ROWS + 1)))
    except Exception as exc:
        rec.error("SSCursor", exc)
    rec.done("SSCursor")
    try:
        other.execute("SELECT %s", (3,))
        rec.check("query after read-out", other.fetchall(), ((3,),))
    except Exception as exc:
        rec.error("query after read-out", exc)
    rec.done("query after read-out")
    conn.close()


@dataclass
class Context:
    """What a scenario's body gets in the child."""

    #: The driver's module: MySQLdb, or guarddb.
    db: Any
    driver: str
    #: Where the server is (plain MySQLdb's keywords).
    connect_args: dict[str, Any]
    #: guarddb's connect keywords for the connections under test ({} for plain).
    options: dict[str, Any]
    rec: _Recorder
    #: The Celery broker URL, for the scenarios that need one.
    broker_url: str | None
    #: ``time.monotonic()`` by which the body must have finished.
    deadline: float

    def remaining(self) -> float:
        """Seconds left before the deadline."""
        return self.deadline - time.monotonic()


def _classic(
    body: Callable[[Any, dict[str, Any], _Recorder], None],
) -> Callable[[Context], None]:
    """A DESIGN.md scenario's body, run with the connect arguments alone."""

    def run_body(ctx: Context) -> None:
        body(ctx.db, ctx.connect_args, ctx.rec)

    return run_body


def _framework(name: str) -> Callable[[Context], None]:
    """The body ``name`` of :mod:`guarddb._demo_bodies` (imported in the child only)."""

    def run_body(ctx: Context) -> None:
        from . import _demo_bodies

        getattr(_demo_bodies, name)(ctx)

    return run_body


_BODIES: dict[str, Callable[[Context], None]] = {
    "shared_cursor": _classic(_shared_cursor),
    "fork_shared": _classic(_fork_shared),
    "fork_child_close": _classic(_fork_child_close),
    "sscursor_pending": _classic(_sscursor_pending),
    "celery_prefork": _framework("celery_prefork"),
    "thread_pool_leak": _framework("thread_pool_leak"),
    "idle_pool": _framework("idle_pool"),
}


def _child(
    name: str,
    driver: str,
    connect_args: dict[str, Any],
    deadline: float,
    options: dict[str, Any] | None = None,
    broker_url: str | None = None,
) -> None:
    """Run one scenario in this process, print the report, and leave with os._exit."""
    missing = missing_requirement(name)
    if missing is not None:
        sys.stdout.write(RESULT_MARK + json.dumps({"scenario": name, "skipped": missing}) + "\n")
        sys.stdout.flush()
        os._exit(0)
    if driver == "plain":
        import MySQLdb as db

        guard_error: type[BaseException] | None = None
    else:
        import guarddb as db
        from guarddb.errors import GuardError as guard_error

    import MySQLdb.release

    rec = _Recorder(guard_error)
    started = time.monotonic()
    ctx = Context(
        db=db,
        driver=driver,
        connect_args=connect_args,
        options=dict(options or {}) if driver == "guarddb" else {},
        rec=rec,
        broker_url=broker_url,
        deadline=started + deadline,
    )

    def body() -> None:
        try:
            _BODIES[name](ctx)
        except Exception as exc:
            rec.error("scenario", exc)
            rec.done("scenario")

    scenario = threading.Thread(target=body, name="scenario", daemon=True)
    scenario.start()
    scenario.join(deadline)
    gave_up = scenario.is_alive()
    if gave_up:
        rec.give_up()
    report = rec.report(
        scenario=name,
        driver=driver,
        options=ctx.options,
        mysqlclient=MySQLdb.release.__version__,
        deadline=deadline,
        gave_up=gave_up,
        elapsed=round(time.monotonic() - started, 3),
    )
    sys.stdout.write(RESULT_MARK + json.dumps(report, default=repr) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: threads stuck in libmysqlclient, or multiprocessing's exit
    # handlers waiting for children, must not keep the process alive.
    os._exit(0)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m guarddb._scenarios",
        description="Run one guarddb failure scenario in this process (used by run()).",
    )
    parser.add_argument(
        "--child",
        nargs=3,
        metavar=("NAME", "DRIVER", "JSON"),
        required=True,
        help="scenario name, driver (plain|guarddb), connect arguments as JSON",
    )
    parser.add_argument(
        "--deadline", type=float, default=15.0, help="seconds to wait for the workers"
    )
    parser.add_argument(
        "--options", default="{}", metavar="JSON", help="guarddb's connect keywords (guarddb runs)"
    )
    parser.add_argument(
        "--broker", metavar="URL", help="the Celery broker, if the scenario needs one"
    )
    args = parser.parse_args(argv)
    name, driver, connect_json = args.child
    if name not in SCENARIOS:
        parser.error(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if driver not in DRIVERS:
        parser.error(f"unknown driver {driver!r}; use one of {', '.join(DRIVERS)}")
    _child(
        name,
        driver,
        json.loads(connect_json),
        args.deadline,
        options=json.loads(args.options),
        broker_url=args.broker,
    )
    return 0  # not reached: _child leaves with os._exit


if __name__ == "__main__":
    sys.exit(_main())
