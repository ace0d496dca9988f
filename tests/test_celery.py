"""Celery prefork workers and a module-level connection opened before the pool forks (issue 6).

Each test runs a real worker (``celery worker --pool=prefork --concurrency=2``) on a real
broker (see tests/broker.py) in a subprocess, with the app in tests/celery_apps/worker_app.py:
its module opens one MySQL connection at import, in the main process, and every pool child
inherits it.  Each task inserts a row naming itself, echoes some values and reads its row back.

- plain mysqlclient: the children share the parent's socket; the test records what goes
  wrong (errors, wrong rows, hung tasks killed at the time limit, the parent's session lost);
- guarddb, ``on_fork="raise"``: every task fails cleanly with ForkedConnectionError, no row
  lands, and the parent's session is untouched;
- guarddb, ``on_fork="reconnect"``: every task succeeds on a session of its own child, each
  row lands once, and the parent's session is untouched.
"""

from __future__ import annotations

import collections
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import MySQLdb
import pytest

from .broker import result_backend_for
from .celery_apps.harness import (
    TESTS_DIR,
    TaskOutcome,
    child_pythonpath,
    client,
    run_tasks,
    run_worker,
    unique_name,
)

pytest.importorskip("celery", reason="Celery is not installed (pip install 'celery[redis]>=5.3')")

TASKS = 8
ROUNDS = 200  # round trips per task: enough for two children on one socket to collide
TIME_LIMIT = 15  # the worker's task_time_limit: a task stuck on a stolen reply is killed


@dataclass
class Run:
    """Everything one worker run produced."""

    outcomes: list[TaskOutcome]
    parent: dict[str, Any]
    parent_in_processlist: bool
    shutdown: dict[str, Any] | None
    rows: list[tuple[str, int, int]]
    killed: bool
    returncode: int | None
    log: str


@contextlib.contextmanager
def _plain(connect_args: dict[str, Any]):
    conn = MySQLdb.connect(**connect_args, autocommit=True)
    try:
        yield conn.cursor()
    finally:
        conn.close()


def run_seed(
    driver: str, on_fork: str | None, connect_args: dict[str, Any], broker_url: str, state_dir: str
) -> Run:
    """Run the worker with ``driver`` and send it TASKS tasks; return what happened."""
    table = unique_name("celery_rows")
    with _plain(connect_args) as cursor:
        cursor.execute(
            f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(64) NOT NULL,"
            " pid INT NOT NULL, connection_id BIGINT NOT NULL)"
        )
    backend = result_backend_for(broker_url)
    config = {
        "driver": driver,
        "on_fork": on_fork,
        "connect_args": connect_args,
        "table": table,
        "broker": broker_url,
        "backend": backend,
        "state_dir": state_dir,
        "time_limit": TIME_LIMIT,
    }
    env = {"GUARDDB_CELERY_WORKER": json.dumps(config), "PYTHONPATH": child_pythonpath(TESTS_DIR)}
    try:
        with (
            run_worker("celery_apps.worker_app", state_dir, env) as worker,
            client(broker_url, backend) as app,
        ):
            outcomes = run_tasks(
                app,
                worker.queue,
                "guarddb_test.record",
                [(f"task-{n}", ROUNDS) for n in range(TASKS)],
                timeout=TIME_LIMIT + 10,
            )
            parent = worker.state("parent.json")
            with _plain(connect_args) as cursor:
                cursor.execute(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s",
                    (parent["connection_id"],),
                )
                in_processlist = cursor.fetchone()[0] == 1
        with _plain(connect_args) as cursor:
            cursor.execute(f"SELECT tag, pid, connection_id FROM {table} ORDER BY id")
            rows = [(tag, int(pid), int(cid)) for tag, pid, cid in cursor.fetchall()]
    finally:
        with _plain(connect_args) as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
    return Run(
        outcomes,
        parent,
        in_processlist,
        worker.state("shutdown.json"),
        rows,
        worker.killed,
        worker.returncode,
        worker.log(),
    )


def expected_echoes(tag: str) -> list[str]:
    return [f"{tag}:{n}" for n in range(ROUNDS)]


def parent_session_problem(run: Run) -> str | None:
    """What went wrong with the worker main process's own session, or None if it survived."""
    shutdown = run.shutdown
    if shutdown is None:
        return "worker_shutdown never ran in the main process"
    if "connection_id" not in shutdown and "error" not in shutdown:
        return "the main process hung on its query at shutdown (worker killed)"
    if "error" in shutdown:
        return f"the main process's query at shutdown raised {shutdown['error']}"
    if shutdown["connection_id"] != run.parent["connection_id"] or shutdown["answer"] != 42:
        return (
            f"the main process's session changed or answered wrong at shutdown: {shutdown} "
            f"(it was connection {run.parent['connection_id']})"
        )
    return None


def wrong_answer(outcome: TaskOutcome) -> str | None:
    """How a successful task's values differ from its own, or None if they are right."""
    tag = outcome.args[0]
    value = outcome.value
    expected = expected_echoes(tag)
    if value["echoes"] != expected:
        pairs = enumerate(zip(value["echoes"], expected))
        n = next((n for n, (got, want) in pairs if got != want), len(expected) - 1)
        return f"{tag} read back {value['echoes'][n]!r} for its own {expected[n]!r}"
    if value["rows"] != [[tag, value["pid"], value["connection_id"]]]:
        return f"{tag} read its row back as {value['rows']}"
    return None


def test_plain_mysqlclient_children_share_the_parents_session(connect_args, broker_url, tmp_path):
    """The seed, unguarded: the bad outcomes are observed (which ones varies from run to run)."""
    run = run_seed("plain", None, connect_args, broker_url, str(tmp_path))
    bad = []
    errors = collections.Counter(o.exception for o in run.outcomes if not o.ok and o.exception)
    if errors:
        bad.append(f"tasks failed: {dict(errors)}")
    unanswered = [o.args[0] for o in run.outcomes if o.state == "NO RESULT IN TIME"]
    if unanswered:
        bad.append(f"no result in time for {unanswered}")
    wrong = [w for o in run.outcomes if o.ok and (w := wrong_answer(o))]
    if wrong:
        bad.append(f"wrong rows: {wrong}")
    tags = collections.Counter(tag for tag, _, _ in run.rows)
    if any(count != 1 for count in tags.values()):
        bad.append(f"rows landed more than once: {dict(tags)}")
    problem = parent_session_problem(run)
    if problem:
        bad.append(problem)
    if run.killed:
        bad.append("the worker did not stop on SIGTERM and was killed")
    in_parent_session = [
        o.args[0]
        for o in run.outcomes
        if o.ok and o.value["connection_id"] == run.parent["connection_id"]
    ]
    print(
        "plain mysqlclient:",
        "; ".join(bad) or "nothing visibly wrong",
        f"| tasks that ran in the parent's session: {in_parent_session}",
    )
    assert bad, (
        "plain mysqlclient showed none of the failures this test expects: "
        f"{[(o.args[0], o.state) for o in run.outcomes]}, parent at shutdown {run.shutdown}, "
        f"tasks that ran in the parent's session {in_parent_session}\n{run.log}"
    )


def test_guarddb_raise_every_task_fails_cleanly_and_the_parent_survives(
    connect_args, broker_url, tmp_path
):
    """on_fork="raise": ForkedConnectionError in every task, no row, the parent untouched."""
    import guarddb

    run = run_seed("guarddb", "raise", connect_args, broker_url, str(tmp_path))
    assert [o.state for o in run.outcomes] == ["FAILURE"] * TASKS, run.log
    for outcome in run.outcomes:
        assert outcome.extra["exception_type"] == "ForkedConnectionError", outcome.exception
        assert isinstance(outcome.extra["exception"], guarddb.ForkedConnectionError)
        assert "ForkedConnectionError" in outcome.traceback
        assert "inherited across fork()" in outcome.traceback
    assert run.rows == []
    assert parent_session_problem(run) is None, run.log
    assert run.parent_in_processlist
    assert not run.killed and run.returncode == 0, run.log


def test_guarddb_reconnect_every_task_succeeds_on_its_own_session(
    connect_args, broker_url, tmp_path
):
    """on_fork="reconnect": each child opens its own session once; rows land once each."""
    run = run_seed("guarddb", "reconnect", connect_args, broker_url, str(tmp_path))
    assert [o.state for o in run.outcomes] == ["SUCCESS"] * TASKS, [
        (o.args[0], o.exception, o.traceback) for o in run.outcomes if not o.ok
    ]
    sessions_of_child: dict[int, set[int]] = collections.defaultdict(set)
    for outcome in run.outcomes:
        assert wrong_answer(outcome) is None
        value = outcome.value
        assert value["pid"] != run.parent["pid"]
        assert value["connection_id"] != run.parent["connection_id"]
        assert value["autocommit"] is True  # restored on the new session
        sessions_of_child[value["pid"]].add(value["connection_id"])
    # One fresh session per child, reused by its later tasks: a reconnect happens once.
    assert all(len(ids) == 1 for ids in sessions_of_child.values()), sessions_of_child
    assert sorted(tag for tag, _, _ in run.rows) == sorted(f"task-{n}" for n in range(TASKS))
    assert all(cid != run.parent["connection_id"] for _, _, cid in run.rows)
    assert parent_session_problem(run) is None, run.log
    assert run.parent_in_processlist
    assert not run.killed and run.returncode == 0, run.log


@pytest.fixture(autouse=True)
def _celery_needs_no_django_settings(monkeypatch):
    # Celery installs its Django fixup when DJANGO_SETTINGS_MODULE is set: not wanted here.
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
