"""One run of a scenario in a child process: the parent's side and the child's.

:func:`run` runs a scenario against its plain driver (``import MySQLdb``, or
``import pymysql`` for a PyMySQL scenario) or guarddb (``import guarddb as
MySQLdb``, ``import guarddb.pymysql as pymysql``, with the scenario's guarddb
connect keywords) in a child process with a time limit, and classifies what happened
(:func:`guarddb.tools.demo.framework.classify`).  The child never takes its
caller down: a segfault, an abort or a hang is an
:class:`~guarddb.tools.demo.framework.Outcome` like any other.

The child is ``python -m guarddb.tools.demo --child NAME DRIVER JSON`` (JSON:
the connect arguments; ``--options JSON``: guarddb's connect keywords;
``--broker URL``), which runs :func:`main` here; a gevent scenario's child
runs ``gevent.monkey.patch_all()`` first, then that module.  It prints one line,
:data:`~guarddb.tools.demo.framework.RESULT_MARK` followed by a JSON report:
for every worker (thread, forked process, Celery task) its count of correct
results, wrong rows and exceptions by ``"ClassName(errno)"``, and how it ended;
the sessions a scenario left open on the server; notes for people.  A "plain"
child imports the guarddb package (to run this module) but opens no guarded
connection, so guarddb's fork handler is never installed there.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import guarddb

from . import catalog
from .catalog import SCENARIOS, missing_requirement
from .framework import DRIVERS, RESULT_MARK, SKIPPED, Context, Outcome, Recorder, classify

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

    "plain" is the scenario's driver as it is (mysqlclient, or PyMySQL), "guarddb"
    guarddb's face for it (``guarddb``, or ``guarddb.pymysql``).

    The child gets ``timeout`` seconds, plus the scenario's ``extra_time``, in
    all; it stops waiting for its workers a little earlier so that it can still
    say which ones hung.  Whatever is left of its process group at the end is
    killed.  ``python`` is the interpreter to run it with (default: this one);
    guarddb's source directory is put on its ``PYTHONPATH``.  ``options`` are
    guarddb's connect keywords (default: the scenario's own; only for
    "guarddb").  A scenario that needs a broker uses ``broker_url``, else one
    that :func:`guarddb.tools.broker.find_broker` finds or starts for this run.
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
        from ..broker import NoBroker, find_broker

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
    if SCENARIOS[name].gevent:  # patched before anything else, then the same module
        start = [python or sys.executable, "-c", _GEVENT_CHILD]
    else:
        start = [python or sys.executable, "-m", "guarddb.tools.demo"]
    command = [
        *start,
        "--deadline",
        f"{deadline:g}",
        "--options",
        json.dumps(options),
    ]
    if broker_url:
        command += ["--broker", broker_url]
    command += ["--child", name, driver, json.dumps(connect_args)]
    env = dict(os.environ)
    source = os.path.dirname(os.path.dirname(os.path.abspath(guarddb.__file__)))
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


#: The child of a gevent scenario: ``python -m guarddb.tools.demo`` once gevent has patched
#: the standard library, before anything else is imported (without gevent, the child says
#: what is missing, as any child does).
_GEVENT_CHILD = """\
try:
    from gevent import monkey
except ImportError:
    pass
else:
    monkey.patch_all()
import runpy
runpy.run_module("guarddb.tools.demo", run_name="__main__", alter_sys=True)
"""


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


# -- the child side --------------------------------------------------------------------------


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
    library = SCENARIOS[name].driver_library
    db = importlib.import_module(library.plain if driver == "plain" else library.guarded)
    guard_error = None if driver == "plain" else guarddb.GuardError
    rec = Recorder(guard_error)
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
            catalog.body(name)(ctx)
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
        library=library.name,
        version=library.version(),
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


def main(argv: list[str] | None = None) -> int:
    """``python -m guarddb.tools.demo``: the child of one scenario run (see :func:`run`)."""
    parser = argparse.ArgumentParser(
        prog="python -m guarddb.tools.demo",
        description="Run one guarddb failure scenario in this process (used by run()).",
    )
    parser.add_argument(
        "--child",
        nargs=3,
        metavar=("NAME", "DRIVER", "JSON"),
        required=True,
        help="scenario name, driver (plain|guarddb: the scenario's library, plain or guarded), "
        "connect arguments as JSON",
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
