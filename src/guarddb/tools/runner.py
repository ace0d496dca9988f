"""``python -m guarddb run``: an unchanged program, with guarddb installed as MySQLdb and pymysql.

::

    python -m guarddb run [--mode MODE] [--report FILE] [--fail-on-violation] \\
        (script.py | -m module) [args ...]

The program runs in this process, as ``python script.py args`` or ``python -m
module args`` would run it (``__main__``, ``sys.argv``, ``sys.path[0]``), after
guarddb is installed in place of the drivers that are installed
(:func:`guarddb.tools.install.install`: ``import MySQLdb`` gives guarddb,
``import pymysql`` gives :mod:`guarddb.pymysql`), and ``set_default_mode(MODE)``
with ``--mode``.  Every guard violation is counted, even one the program caught and
swallowed.  When the program is over, the way Python ends it (its non-daemon
threads joined, its ``atexit`` handlers run), a summary of the violations,
grouped by (kind, where the connection was opened, where it was refused) with
counts, goes to stderr, and with ``--report FILE`` the same as JSON::

    {"mode": "strict", "total": 7, "program_status": 0, "exit_status": 3,
     "violations": [{"kind": "ThreadOwnershipError", "connection_site": "app.py:12",
                     "site": "app.py:20", "count": 7, "message": "(the first one's)",
                     "threads": ["ThreadPoolExecutor-0_0"], "pids": [4242],
                     "stack": ["(the first one's, formatted frames)"]}]}

Exit status: the program's own (``sys.exit(code)``; 0 when it ends normally; 1
after an uncaught exception, whose traceback is printed as Python prints it;
130 after KeyboardInterrupt).  With ``--fail-on-violation`` and at least one
violation it is :data:`VIOLATION_EXIT_CODE` (3) instead, whatever the
program's own was (the summary says what that was).  Usage errors of the runner
itself exit with 2 (argparse), a script that does not exist too (as Python).

Forked children (``os.fork``, multiprocessing's ``fork`` start method) inherit
the counting: each violation in a child is appended at once to a spool file
the runner reads at the end (a child may leave through ``os._exit`` and run no
exit handlers), so they are in the summary and the report, under the child's
pid.  Children started with ``spawn`` or ``forkserver`` (the default from
Python 3.14), and other programs started with ``subprocess``, are fresh
interpreters: guarddb is not installed in them.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import runpy
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from guarddb import Violation, on_violation, remove_violation_hook
from guarddb.core import lifecycle
from guarddb.tools.install import install

#: The exit status with ``--fail-on-violation`` when there was at least one violation.
VIOLATION_EXIT_CODE = 3

#: The status after an uncaught KeyboardInterrupt (128 + SIGINT, as shells report it).
_INTERRUPTED = 130

_PROG = "python -m guarddb run"

# Frames of these modules sit between the runner and the program: left out of tracebacks.
_OWN_MODULES = frozenset({__name__, "runpy"})


# -- violations of child processes ---------------------------------------------------------


def _record(violation: Violation) -> dict[str, Any]:
    return {
        "kind": violation.kind,
        "message": violation.message,
        "connection_site": violation.connection_site,
        "site": violation.site,
        "mode": violation.mode,
        "thread": violation.thread,
        "pid": violation.pid,
        "stack": list(violation.stack),
    }


class ChildSpool:
    """A file to which forked children append their violations, one JSON line each.

    A child may end with ``os._exit`` (multiprocessing's children do), so it
    writes each violation at once, in one ``write`` on an ``O_APPEND``
    descriptor opened for it.  Once :meth:`close` has removed the file, a late
    child's violation is dropped (the file is not created again).
    """

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="guarddb-violations-", suffix=".jsonl")
        os.close(fd)
        self._offset = 0

    def write(self, violation: Violation) -> None:
        """Append ``violation`` (called in the child that saw it)."""
        line = (json.dumps(_record(violation)) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            return
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def read_new(self) -> list[Violation]:
        """The violations appended since the last call (whole lines only)."""
        try:
            with open(self.path, "rb") as spool:
                spool.seek(self._offset)
                data = spool.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._offset += end
        found = []
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError, TypeError):
                record = json.loads(line)
                record["stack"] = tuple(record.get("stack", ()))
                found.append(Violation(**record))
        return found

    def close(self) -> None:
        """Remove the file."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class Tally:
    """An on_violation hook keeping every violation of this process and of its forked children."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.seen: list[Violation] = []
        self.spool = ChildSpool()

    def __call__(self, violation: Violation) -> None:
        if os.getpid() == self.pid:
            self.seen.append(violation)
        else:
            self.spool.write(violation)

    def install(self) -> None:
        """Start counting."""
        on_violation(self)

    def remove(self) -> None:
        """Stop counting; in the process that made it, remove the spool file too."""
        remove_violation_hook(self)
        if os.getpid() == self.pid:
            self.spool.close()

    def collect(self) -> list[Violation]:
        """Everything seen so far: this process's, then the children's."""
        self.seen.extend(self.spool.read_new())
        return list(self.seen)


def group(violations: Sequence[Violation]) -> list[dict[str, Any]]:
    """Violations grouped by (kind, connection site, violation site), the largest group first.

    Each group: ``kind``, ``connection_site``, ``site``, ``count``, the first
    one's ``message`` and ``stack``, and the ``threads`` and ``pids`` it
    happened in (sorted).
    """
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for violation in violations:
        key = (violation.kind, violation.connection_site, violation.site)
        entry = groups.get(key)
        if entry is None:
            entry = groups[key] = {
                "kind": violation.kind,
                "connection_site": violation.connection_site,
                "site": violation.site,
                "count": 0,
                "message": violation.message,
                "threads": set(),
                "pids": set(),
                "stack": list(violation.stack),
            }
        entry["count"] += 1
        entry["threads"].add(violation.thread)
        entry["pids"].add(violation.pid)
    ordered = sorted(groups.values(), key=lambda entry: -entry["count"])  # stable: first seen
    for entry in ordered:
        entry["threads"] = sorted(entry["threads"])
        entry["pids"] = sorted(entry["pids"])
    return ordered


# -- running the program -------------------------------------------------------------------


def run(
    program: str,
    args: Sequence[str] = (),
    *,
    module: bool = False,
    mode: str | None = None,
    report: str | os.PathLike[str] | None = None,
    fail_on_violation: bool = False,
) -> int:
    """Run ``program`` (a script path, or a module name with ``module=True``) under guarddb.

    Returns the exit status (see the module docstring); prints the summary to
    stderr and writes the JSON report to ``report`` if given.  Meant to be the
    last thing a process does: the program's threads are joined and its
    ``atexit`` handlers run before the summary, as at interpreter exit.
    """
    import guarddb

    if mode is not None:
        guarddb.set_default_mode(mode)
    mode = guarddb.default_mode()
    install()
    # The summary says it all, grouped: without a handler of the program's own,
    # each violation's warning would also go to stderr as it happens.
    quiet = logging.NullHandler()
    logging.getLogger("guarddb").addHandler(quiet)
    tally = Tally()
    tally.install()
    try:
        status, kept = _run_program(program, list(args), module)
        if os.getpid() != tally.pid:
            # A forked child of the program came back through here: its
            # violations are in the spool already; the parent reports.
            return status
        status = _finish_like_python(status)
        lifecycle.check_orphans()  # the threads that ended last: their orphans count too
        violations = tally.collect()
    finally:
        tally.remove()
        logging.getLogger("guarddb").removeHandler(quiet)
    groups = group(violations)
    exit_status = status
    if fail_on_violation and violations:
        exit_status = VIOLATION_EXIT_CODE
    out = _stderr()
    out.write(summary(groups, mode, status, exit_status))
    out.writelines(line + "\n" for line in lifecycle_lines())
    if report is not None:
        data = {
            "mode": mode,
            "total": len(violations),
            "program_status": status,
            "exit_status": exit_status,
            "violations": groups,
        }
        data["open_connections"] = [
            _connection_record(info) for info in lifecycle.live_connections()
        ]
        try:
            with open(report, "w", encoding="utf-8") as file:
                json.dump(data, file, indent=2)
                file.write("\n")
        except OSError as exc:
            out.write(f"{_PROG}: cannot write the report: {exc}\n")
    out.flush()
    del kept  # the program's globals: they lived until its connections were listed
    return exit_status


def _run_program(program: str, args: list[str], module: bool) -> tuple[int, object]:
    """Run the program as ``__main__``; return its exit status and what keeps its globals alive.

    At a real exit ``__main__``'s globals live until the very end: keeping
    them (or the exception whose traceback holds them) until the summary keeps
    the program's connections open as long as they would have been.
    """
    sys.argv = [program, *args]
    try:
        if module:
            # sys.path[0] stays the working directory, as for `python -m`.
            return 0, runpy.run_module(program, run_name="__main__", alter_sys=True)
        if not os.path.exists(program):
            _stderr().write(
                f"{_PROG}: can't open file {os.path.abspath(program)!r}: "
                f"[Errno 2] No such file or directory\n"
            )
            return 2, None
        if os.path.isfile(program) and not getattr(sys.flags, "safe_path", False):
            # `python script.py` puts the script's directory first on sys.path,
            # where `python -m guarddb` put the working directory.
            here = os.path.dirname(os.path.realpath(program))
            if sys.path and sys.path[0] in ("", os.getcwd()):
                sys.path[0] = here
            else:
                sys.path.insert(0, here)
        # Absolute, as Python (>= 3.9) makes a script's __file__ and code paths.
        return 0, runpy.run_path(os.path.abspath(program), run_name="__main__")
    except SystemExit as exc:
        return _exit_status(exc.code), exc
    except BaseException as exc:
        _print_uncaught(exc)
        return (_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else 1), exc


def _exit_status(code: object) -> int:
    """The process status for ``SystemExit(code)``, printing a non-integer code as Python does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    _stderr().write(f"{code}\n")
    return 1


def _print_uncaught(exc: BaseException) -> None:
    """Print ``exc`` as Python prints an uncaught exception, without the runner's frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in _OWN_MODULES:
        tb = tb.tb_next
    if tb is None:
        # Raised before any of the program ran (no such module, ...): no traceback.
        _stderr().write(f"{_PROG}: {type(exc).__name__}: {exc}\n")
        return
    # The default hook prints the exception's own __traceback__ if it has one.
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


def _finish_like_python(status: int) -> int:
    """End the program as interpreter exit would: join its threads, run its atexit handlers.

    So that violations in threads still running and in exit handlers are
    counted.  Python itself does both again at the real exit, with nothing
    left to do (``threading._shutdown`` returns at once a second time).
    """
    try:
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
        if run_exitfuncs is not None:
            run_exitfuncs()
    except KeyboardInterrupt:
        return _INTERRUPTED
    return status


def _stderr() -> TextIO:
    stream = sys.stderr
    if stream is None or getattr(stream, "closed", False):
        stream = sys.__stderr__
    return stream  # type: ignore[return-value]


# -- what is printed -----------------------------------------------------------------------


def summary(groups: Sequence[dict[str, Any]], mode: str, status: int, exit_status: int) -> str:
    """The text printed at exit: one paragraph per group, then the exit status if changed."""
    total = sum(entry["count"] for entry in groups)
    if not total:
        return f"{_PROG}: no guard violations (mode {mode}).\n"
    places = "1 place" if len(groups) == 1 else f"{len(groups)} places"
    lines = [f"{_PROG}: {total} guard violation{'s' * (total != 1)} in {places} (mode {mode}):"]
    for entry in groups:
        count = entry["count"]
        times = "once" if count == 1 else f"{count} times"
        pids = ", ".join(str(pid) for pid in entry["pids"])
        lines += [
            f"  {entry['kind']}, {times}, in thread{'s' * (len(entry['threads']) != 1)} "
            f"{', '.join(entry['threads'])} (pid{'s' * (len(entry['pids']) != 1)} {pids})",
            f"    connection opened at {entry['connection_site']}",
            f"    refused call at      {entry['site']}",
            f"    first: {entry['message']}",
        ]
    if exit_status != status:
        lines.append(
            f"{_PROG}: --fail-on-violation: exit status {exit_status} "
            f"(the program's own was {status})"
        )
    return "\n".join(lines) + "\n"


def _connection_record(info: lifecycle.ConnectionInfo) -> dict[str, Any]:
    """A live connection for the JSON report: its fields, and whether it is an orphan."""
    record = dataclasses.asdict(info)
    record["orphan"] = info.orphan
    return record


def _describe_connection(info: lifecycle.ConnectionInfo) -> str:
    owner = info.owner_name + (" (ended: an orphan)" if info.orphan else "")
    extra = ", in a transaction" if info.in_transaction else ""
    return f"opened at {info.site}, mode {info.mode}, owner {owner}, idle {info.idle:.1f}s{extra}"


def lifecycle_lines() -> list[str]:
    """Lines on the guarded connections still open at exit.

    Orphans seen while the program ran are violations of kind ``"orphan"``,
    in the summary above.
    """
    open_now = lifecycle.live_connections()
    if not open_now:
        return []
    return [
        f"{_PROG}: {len(open_now)} guarded connection{'s' * (len(open_now) != 1)} still open:",
        *(f"  {_describe_connection(info)}" for info in open_now),
    ]
