"""Celery's gevent pool running Django ORM tasks (issue 13): a connection leaked per greenlet.

``celery worker -P gevent -c 8`` patches itself with gevent before anything else and runs
every task in a greenlet of its own; Django keeps a connection per greenlet under the patch
(its connections are thread-local, and greenlets are the threads then).  With
``CELERY_DB_REUSE_MAX`` (connections kept across tasks, as a prefork child keeps its one)
nothing closes a task greenlet's connection when the greenlet ends: one session leaks per
task.  The tasks keep their connections referenced, as Django's reference cycles do until a
full garbage collection, so that nothing closes them at a moment nobody chooses.

guarddb's lifecycle sees each owner greenlet end: it reports every leaked connection as an
orphan (an ``on_violation`` report of kind "orphan", which the worker writes to a file, and
a warning on the "guarddb" logger in the worker's log), naming the task's greenlet; with
``close_orphans=True`` in the database's OPTIONS it closes them, and the database's session
count returns to where it was before the tasks.  The worker runs in a subprocess with time
limits (tests/celery_apps/harness.py); the sessions are counted from this process.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import re
import time
from typing import Any

import pytest

from .broker import result_backend_for
from .celery_apps.harness import client, run_tasks, run_worker, unique_name
from .test_django import PROJECT, TIME_LIMIT, _plain_cursor, django_db, django_env

pytest.importorskip("gevent", reason="gevent is not installed (pip install 'gevent>=24')")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("celery") is None,
    reason="Celery is not installed (pip install 'celery[redis]>=5.3')",
)

__all__ = ["django_db"]  # the fixture: a database of its own with the project's tables

#: Tasks sent, to a pool of CONCURRENCY greenlets at a time.
TASKS = 16
CONCURRENCY = 8
#: Seconds to wait for the orphans to be reported, or closed, after the last task.
SETTLE = 15.0
ORPHAN = re.compile(
    r"MySQL connection (\d+) \(.*?\) opened at .*? its owner, (?:thread|greenlet) '[^']*' "
    r"\(id (\d+)"
)


def sessions_in(connect_args: dict[str, Any], database: str) -> int:
    """The server's sessions on ``database`` now (this process's counter is on none)."""
    with _plain_cursor(connect_args) as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (database,)
        )
        return int(cursor.fetchone()[0])


def orphan_reports(state_dir: str) -> list[dict[str, Any]]:
    """The worker's guarddb violations of kind "orphan", as it wrote them."""
    from .celery_apps.state import read_json

    directory = os.path.join(state_dir, "violations")
    if not os.path.isdir(directory):
        return []
    names = [name for name in os.listdir(directory) if name.endswith(".json")]
    reports = [read_json(directory, name) for name in names]
    return [report for report in reports if report and report["kind"] == "orphan"]


def run_gevent_worker(
    connect_args: dict[str, Any],
    database: str,
    broker_url: str,
    state_dir: str,
    options: dict[str, Any],
    settled: Any,
) -> dict[str, Any]:
    """Run the project's worker with a gevent pool; TASKS ORM tasks; wait until ``settled``.

    ``settled(orphans, sessions)`` says when what the test waits for has happened (the
    orphans reported, the sessions back at the baseline); past SETTLE seconds the test goes
    on with what it has.
    """
    backend = result_backend_for(broker_url)
    env = django_env(
        connect_args,
        database,
        options=options,
        broker=broker_url,
        backend=backend,
        time_limit=TIME_LIMIT,
        state_dir=state_dir,
        db_reuse_max=1000,
        record_violations=True,
    )
    run = unique_name("gev")
    with (
        run_worker(
            "guarddb_site.celery_app",
            state_dir,
            env,
            cwd=PROJECT,
            pool="gevent",
            concurrency=CONCURRENCY,
        ) as worker,
        client(broker_url, backend) as app,
    ):
        baseline = sessions_in(connect_args, database)
        outcomes = run_tasks(
            app,
            worker.queue,
            "notes.orm_greenlet_note",
            [(f"{run}-{n}",) for n in range(TASKS)],
            30,
        )
        deadline = time.monotonic() + SETTLE
        while True:
            orphans = orphan_reports(state_dir)
            sessions = sessions_in(connect_args, database)
            if settled(orphans, sessions - baseline) or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling files and the server: nothing signals either
        log = worker.log(limit=200_000)
    with _plain_cursor(connect_args, database) as cursor:
        cursor.execute("SELECT tag FROM notes_note WHERE tag LIKE %s", (f"{run}-%",))
        landed = collections.Counter(tag for (tag,) in cursor.fetchall())
    return {
        "outcomes": outcomes,
        "baseline": baseline,
        "sessions": sessions,
        "orphans": orphans,
        "landed": landed,
        "log": log,
        "killed": worker.killed,
        "returncode": worker.returncode,
    }


def assert_tasks_ran_each_in_a_greenlet_of_its_own(result: dict[str, Any]) -> None:
    for outcome in result["outcomes"]:
        assert outcome.ok, (outcome.exception, outcome.traceback, result["log"][-4000:])
        (tag,) = outcome.args
        assert outcome.value["rows"] == [[tag, outcome.value["pid"]]]
        assert result["landed"][tag] == 1
    values = [outcome.value for outcome in result["outcomes"]]
    assert len({value["pid"] for value in values}) == 1  # one process: the gevent pool's
    assert len({value["ident"] for value in values}) == TASKS  # a greenlet per task
    assert len({value["connection_id"] for value in values}) == TASKS  # a session per greenlet
    assert not result["killed"] and result["returncode"] == 0, result["log"][-4000:]


def orphaned(result: dict[str, Any]) -> dict[int, int]:
    """The reported orphans: the session of each, and guarddb's identity of its owner."""
    found = {}
    for report in result["orphans"]:
        match = ORPHAN.search(report["message"])
        assert match, report
        found[int(match.group(1))] = int(match.group(2))
    return found


def tasks_sessions(result: dict[str, Any]) -> dict[int, int]:
    """Each task's session, and the identity of the greenlet that ran the task."""
    return {o.value["connection_id"]: o.value["ident"] for o in result["outcomes"]}


def test_gevent_pool_django_tasks_each_leak_a_connection_guarddb_reports_each(
    connect_args, django_db, broker_url, tmp_path
):
    result = run_gevent_worker(
        connect_args,
        django_db,
        broker_url,
        str(tmp_path),
        {"guard": "strict"},
        settled=lambda orphans, extra: len(orphans) >= TASKS,
    )
    assert_tasks_ran_each_in_a_greenlet_of_its_own(result)
    for outcome in result["outcomes"]:
        assert outcome.value["guard_mode"] == "strict"  # each greenlet owns its connection
    # Every task greenlet's session, reported once, as left by that very greenlet.
    assert len(result["orphans"]) == TASKS, result["orphans"]
    assert orphaned(result) == tasks_sessions(result)
    for report in result["orphans"]:
        assert "django/db/backends" in report["connection_site"], report
        assert "has ended" in report["message"] and "close_orphans=True" in report["message"]
    assert result["log"].count("guarddb violation (orphan)") == TASKS, result["log"][-4000:]
    # Reported, not closed: the leak is real, every session still on the server.
    assert result["sessions"] - result["baseline"] == TASKS, result


def test_gevent_pool_close_orphans_brings_the_sessions_back_to_the_baseline(
    connect_args, django_db, broker_url, tmp_path
):
    result = run_gevent_worker(
        connect_args,
        django_db,
        broker_url,
        str(tmp_path),
        {"guard": "strict", "close_orphans": True},
        settled=lambda orphans, extra: len(orphans) >= TASKS and extra <= 0,
    )
    assert_tasks_ran_each_in_a_greenlet_of_its_own(result)
    assert orphaned(result) == tasks_sessions(result)
    # The baseline: the worker's main Django connection and the tasks module's raw one.
    assert result["sessions"] == result["baseline"], result
