"""Django 5.2 on guarddb (issues 6 and 14): the mysql backend with guarddb installed as MySQLdb.

Every test runs on two routes (the ``route`` fixture): ``mysqlclient``, with
``guarddb.install_as_MySQLdb()``, and ``pymysql``, with ``guarddb.pymysql.install_as_MySQLdb()``
(Django's MySQL backend then runs on PyMySQL, guarded); the plain comparisons use mysqlclient
itself, or PyMySQL's own ``pymysql.install_as_MySQLdb()``.  The project is
tests/django_project (settings from the environment variable ``GUARDDB_DJANGO``, which names the
route and the driver).  Every scenario runs in a fresh interpreter with a time limit: Django's
set-up is global to a process, and anything that forks or shares a connection may hang.

- OPTIONS reach guarddb: ``{"guard": "strict", "on_fork": ...}`` are the connection's, and the
  connection is the route's guarded class;
- a ThreadPoolExecutor running ORM queries works in strict mode (a connection per thread);
  the threads' connections left open are orphans guarddb reports, and closes if asked;
- Django's thread-sharing rule still fires first; with sharing allowed, guarddb's strict
  mode refuses the other thread (as Django's ProgrammingError), exclusive mode lets it in;
- errors arrive as Django's classes: bad SQL as with the plain driver (its very class as the
  cause), a forked child's use as django.db.utils.OperationalError caused by the route's
  ForkedConnectionError (and Django's own recovery then works), on_fork="reconnect" makes the
  child's query just work;
- Celery prefork with Django's fixup and CONN_MAX_AGE=3600: tasks' ORM writes land once and
  the parent's sessions survive; with the plain driver the module-level raw connection
  (which the fixup does not know) breaks, and with plain PyMySQL the parent's Django session
  is gone too: the fixup closes an inherited connection's descriptor before its ``close()``
  only where it has ``fileno()``, which mysqlclient's has and PyMySQL's has not;
- ``manage.py test --parallel 2`` passes, its tests running in forked workers on the clones;
  the workers close the connection they inherited: with guarddb the runner's own session
  survives, with the plain driver it is gone (2006) after the suite.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import MySQLdb
import pytest

from .broker import result_backend_for
from .celery_apps.harness import (
    TESTS_DIR,
    child_pythonpath,
    client,
    run_tasks,
    run_worker,
    unique_name,
)

pytest.importorskip("django", reason="Django is not installed (pip install 'django>=5.2,<6')")

needs_celery = pytest.mark.skipif(
    importlib.util.find_spec("celery") is None,
    reason="Celery is not installed (pip install 'celery[redis]>=5.3')",
)

PROJECT = os.path.join(TESTS_DIR, "django_project")
TIME_LIMIT = 5  # Celery's task_time_limit in the worker
RAW_ROUNDS = 20


@dataclasses.dataclass(frozen=True)
class Route:
    """The driver under Django's ``MySQLdb``, and the names its classes have."""

    name: str
    #: guarddb's connection class for this driver, by its public path.
    guarded_class: str
    #: Where guarddb's errors for this driver are public (``<module>.ForkedConnectionError``).
    guard_errors: str
    #: The module of the driver's own error classes (the cause of Django's errors).
    driver_errors: str
    #: The driver's own connection class (the plain route), by its path.
    plain_connection_class: str

    def connection_class(self, driver: str) -> str:
        """The DB-API connection class Django gets, guarded or plain."""
        return self.guarded_class if driver == "guarddb" else self.plain_connection_class


ROUTES = [
    # guarddb.install_as_MySQLdb(): mysqlclient, guarded.
    Route(
        "mysqlclient",
        "guarddb.connections.Connection",
        "guarddb.errors",
        "MySQLdb",
        "MySQLdb.connections.Connection",
    ),
    # guarddb.pymysql.install_as_MySQLdb(): PyMySQL, guarded, as PyMySQL's own function
    # would install it (plain: pymysql.install_as_MySQLdb()).
    Route(
        "pymysql",
        "guarddb.pymysql.connections.Connection",
        "guarddb.pymysql",
        "pymysql.err",
        "pymysql.connections.Connection",
    ),
]


@pytest.fixture(scope="module", params=ROUTES, ids=[r.name for r in ROUTES])
def route(request) -> Route:
    """Each test runs on both routes (grouped: a module-scoped parameter)."""
    if request.param.name == "pymysql":
        pytest.importorskip("pymysql", reason="PyMySQL is not installed (pip install pymysql)")
    return request.param


@contextlib.contextmanager
def _plain_cursor(connect_args: dict[str, Any], database: str | None = None):
    args = dict(connect_args)
    args.pop("database", None)
    args.pop("db", None)
    conn = MySQLdb.connect(**args, autocommit=True, **({"database": database} if database else {}))
    try:
        yield conn.cursor()
    finally:
        conn.close()


def django_env(
    connect_args: dict[str, Any],
    database: str,
    *,
    driver: str = "guarddb",
    route: str = "mysqlclient",
    options: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, str]:
    """The environment for a process of the project: settings, PYTHONPATH."""
    config = {
        "driver": driver,
        "route": route,
        "connect_args": connect_args,
        "name": database,
        "options": {"guard": "strict"} if options is None else options,
        **extra,
    }
    return {
        "GUARDDB_DJANGO": json.dumps(config),
        "DJANGO_SETTINGS_MODULE": "guarddb_site.settings",
        "PYTHONPATH": child_pythonpath(PROJECT, TESTS_DIR),
    }


def run_project(
    args: list[str], env: dict[str, str], timeout: float = 60, cwd: str = PROJECT
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in the project directory (or ``cwd``) with this environment and a
    time limit.

    In a process group of its own: on timeout the whole group is killed, forked children too.
    """
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GUARDDB_")
        and k not in ("PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    }
    command = [sys.executable, *args]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**clean, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"{' '.join(args)} did not finish in {timeout}s:\n{stdout}\n{stderr}"
        ) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def scenario(name: str, env: dict[str, str]) -> dict[str, Any]:
    """Run tests/django_project/scenarios.py NAME; return its JSON report."""
    done = run_project(["scenarios.py", name], env)
    assert done.returncode == 0, f"scenario {name} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def django_db(connect_args) -> Iterator[str]:
    """A database of its own with the project's tables (``manage.py migrate``), dropped after.

    Shared by both routes (the tables are the same); ``manage.py test`` migrates through each.
    """
    name = unique_name("gdj")
    with _plain_cursor(connect_args) as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        done = run_project(["manage.py", "migrate", "-v", "0"], django_env(connect_args, name))
        assert done.returncode == 0, done.stderr
        yield name
    finally:
        with _plain_cursor(connect_args) as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")


def error_type(report: dict[str, Any]) -> str:
    return report["error"]["type"]


def cause_type(report: dict[str, Any]) -> str | None:
    cause = report["error"]["cause"]
    return cause and cause["type"]


# -- OPTIONS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("on_fork", ["raise", "reconnect"])
def test_options_pass_through_to_guarddb(connect_args, django_db, route, on_fork):
    env = django_env(
        connect_args, django_db, route=route.name, options={"guard": "strict", "on_fork": on_fork}
    )
    report = scenario("options", env)
    assert report["class"] == route.guarded_class
    assert report["guard_mode"] == "strict"
    assert report["on_fork"] == on_fork
    assert report["database"] == django_db


# -- threads ----------------------------------------------------------------------------------


def test_thread_pool_orm_queries_each_thread_its_own_connection(connect_args, django_db, route):
    report = scenario("thread_pool", django_env(connect_args, django_db, route=route.name))
    results = report["results"]
    assert [r.get("error") for r in results] == [None] * 16
    for result in (r["value"] for r in results):
        assert result["rows"] == [[result["tag"], result["session"]]]
        assert result["guard_mode"] == "strict"
        assert result["connection_class"] == route.guarded_class
        assert result["session"] != report["main_session"]
        assert result["thread"] != report["main_thread"]
    # A session per work item: each opened its thread's connection and closed it after.
    assert len({r["value"]["session"] for r in results}) == 16
    # The main thread's connection is untouched by the pool's.
    assert report["main_session_after"] == report["main_session"]


def test_thread_pool_leak_is_reported_and_closed_with_close_orphans(connect_args, django_db, route):
    """The lifecycle seed: pool threads end leaving their Django connections open."""
    plain = scenario(
        "thread_pool_leak", django_env(connect_args, django_db, driver="plain", route=route.name)
    )
    assert plain["connection_class"] == route.plain_connection_class
    assert plain["after_pools"] == plain["settled"] == plain["baseline"] + 20  # leaked for good

    reported = scenario(
        "thread_pool_leak", django_env(connect_args, django_db, route=route.name, options={})
    )
    assert reported["connection_class"] == route.guarded_class
    assert reported["settled"] == reported["baseline"] + 20  # reported, not closed
    assert len(reported["orphans"]) == 20
    assert all("django/db/backends" in o["site"] for o in reported["orphans"])
    assert "has ended" in reported["orphans"][0]["message"]

    closed = scenario(
        "thread_pool_leak",
        django_env(connect_args, django_db, route=route.name, options={"close_orphans": True}),
    )
    assert closed["settled"] == closed["baseline"]  # back to the baseline within 3 s


@pytest.fixture(scope="module")
def strict_sharing(connect_args, django_db, route) -> dict[str, Any]:
    """The thread_sharing scenario's report, in strict mode (shared by three tests)."""
    return scenario("thread_sharing", django_env(connect_args, django_db, route=route.name))


def test_django_thread_sharing_rule_fires_before_guarddb(strict_sharing):
    report = strict_sharing
    refused = report["not_shared"]["error"]
    assert refused["type"] == "django.db.utils.DatabaseError"
    assert "can only be used in that same thread" in refused["args"][0]
    assert refused["cause"] is None  # Django's own check: guarddb was never reached


def test_strict_mode_refuses_a_thread_django_lets_share(strict_sharing, route):
    """inc_thread_sharing() lifts Django's rule; strict mode still allows one thread only."""
    report = strict_sharing
    assert report["guard_mode"] == "strict"
    shared = report["shared"]
    assert error_type(shared) == "django.db.utils.ProgrammingError", shared
    assert cause_type(shared) == f"{route.guard_errors}.ThreadOwnershipError"
    assert "guarddb (strict)" in shared["error"]["args"][0]
    assert "called execute()" in shared["error"]["args"][0]
    # The owner thread goes on as before, on the same session.
    assert report["main_after"] == {"value": report["main_session"]}


def test_strict_mode_refusal_through_the_orm_is_djangos_programming_error(strict_sharing, route):
    # Django's compiler closes the cursor in its ``except`` after a failed
    # execute, outside its error wrapper: that close must not raise a second,
    # bare guarddb error (any thread may close a cursor).
    shared_orm = strict_sharing["shared_orm"]
    assert error_type(shared_orm) == "django.db.utils.ProgrammingError", shared_orm["error"]
    assert cause_type(shared_orm) == f"{route.guard_errors}.ThreadOwnershipError"


def test_exclusive_mode_lets_a_thread_django_lets_share(connect_args, django_db, route):
    """Django's sanctioned sharing (one thread at a time) works in exclusive mode."""
    env = django_env(connect_args, django_db, route=route.name, options={"guard": "exclusive"})
    report = scenario("thread_sharing", env)
    assert report["guard_mode"] == "exclusive"
    assert error_type(report["not_shared"]) == "django.db.utils.DatabaseError"
    assert report["shared"] == {"value": report["main_session"]}
    assert "value" in report["shared_orm"], report["shared_orm"]
    assert report["main_after"] == {"value": report["main_session"]}


# -- errors as Django's classes ---------------------------------------------------------------


@pytest.mark.parametrize("driver", ["plain", "guarddb"])
def test_bad_sql_is_djangos_programming_error(connect_args, django_db, route, driver):
    report = scenario(
        "bad_sql", django_env(connect_args, django_db, driver=driver, route=route.name)
    )
    assert error_type(report) == "django.db.utils.ProgrammingError"
    assert report["error"]["args"][0] == 1064  # ER_PARSE_ERROR
    # The driver's very class, plain and guarded.
    assert cause_type(report) == f"{route.driver_errors}.ProgrammingError"


def test_forked_child_use_is_djangos_operational_error_and_django_recovers(
    connect_args, django_db, route
):
    env = django_env(
        connect_args, django_db, route=route.name, options={"guard": "strict", "on_fork": "raise"}
    )
    report = scenario("fork", env)
    child = report["child"]["value"]
    first = child["first"]["error"]
    assert first["type"] == "django.db.utils.OperationalError"
    assert first["args"][0] == 2006
    assert first["cause"]["type"] == f"{route.guard_errors}.ForkedConnectionError"
    assert "inherited across fork()" in first["args"][1]
    # close_if_unusable_or_obsolete() saw the error, pinged (refused), closed the inherited
    # connection (harmless in a child) and the next query opened the child's own session.
    assert child["second"]["value"] != report["main_session"]
    assert "value" in child["count"], child["count"]
    assert report["main_after"] == {"value": report["main_session"]}


def test_forked_child_reconnects_with_on_fork_reconnect_in_options(connect_args, django_db, route):
    env = django_env(
        connect_args,
        django_db,
        route=route.name,
        options={"guard": "strict", "on_fork": "reconnect"},
    )
    report = scenario("fork", env)
    child = report["child"]["value"]
    assert "value" in child["first"], child["first"]
    assert child["first"]["value"] != report["main_session"]
    assert child["second"] == child["first"]  # no error: Django kept the reconnected session
    assert report["main_after"] == {"value": report["main_session"]}


# -- Celery prefork with Django's fixup -------------------------------------------------------


def run_django_worker(
    connect_args: dict[str, Any],
    database: str,
    broker_url: str,
    state_dir: str,
    driver: str,
    route: Route,
) -> dict[str, Any]:
    """Run the project's Celery worker; send ORM tasks, then raw-connection tasks."""
    backend = result_backend_for(broker_url)
    env = django_env(
        connect_args,
        database,
        driver=driver,
        route=route.name,
        broker=broker_url,
        backend=backend,
        time_limit=TIME_LIMIT,
        state_dir=state_dir,
    )
    if driver == "guarddb":
        # The raw module-level connection takes on_fork from the process default.
        env["GUARDDB_ON_FORK"] = "reconnect"
    env["PYTHONPATH"] = child_pythonpath(PROJECT, TESTS_DIR)
    run = unique_name("run")
    with (
        run_worker("guarddb_site.celery_app", state_dir, env, cwd=PROJECT) as worker,
        client(broker_url, backend) as app,
    ):
        orm = run_tasks(
            app, worker.queue, "notes.orm_note", [(f"{run}-orm-{n}",) for n in range(6)], 20
        )
        raw = run_tasks(
            app,
            worker.queue,
            "notes.raw_note",
            [(f"{run}-raw-{n}", RAW_ROUNDS) for n in range(6)],
            TIME_LIMIT + 10,
        )
        parent = worker.state("parent.json")
        module = worker.state("module.json")
    with _plain_cursor(connect_args, database) as cursor:
        cursor.execute("SELECT tag FROM notes_note WHERE tag LIKE %s", (f"{run}-%",))
        landed = collections.Counter(tag for (tag,) in cursor.fetchall())
    return {
        "orm": orm,
        "raw": raw,
        "parent": parent,
        "module": module,
        "shutdown": worker.state("shutdown.json"),
        "landed": landed,
        "killed": worker.killed,
        "returncode": worker.returncode,
        "log": worker.log(),
    }


def assert_orm_tasks_fine(
    result: dict[str, Any], connection_class: str, *, parent_session_survives: bool = True
) -> None:
    parent = result["parent"]
    for outcome in result["orm"]:
        assert outcome.ok, (outcome.exception, outcome.traceback)
        (tag,) = outcome.args
        assert outcome.value["connection_class"] == connection_class
        assert outcome.value["rows"] == [[tag, outcome.value["pid"]]]
        assert outcome.value["connection_id"] != parent["django_connection_id"]
        assert result["landed"][tag] == 1
    at_shutdown = result["shutdown"]["django_connection_id"]
    if parent_session_survives:
        # The main process's Django session, open at fork, is the same and answers at shutdown.
        assert at_shutdown == parent["django_connection_id"]
    else:
        assert re.match(r"OperationalError: \((2006|2013),", str(at_shutdown)), at_shutdown


@needs_celery
def test_celery_django_guarddb_tasks_succeed_and_the_parent_survives(
    connect_args, django_db, route, broker_url, tmp_path
):
    result = run_django_worker(connect_args, django_db, broker_url, str(tmp_path), "guarddb", route)
    parent = result["parent"]
    # The module-level ORM query's connection was closed by the fixup at worker_init; the
    # worker_init handler's query opened the one that is open at fork.
    assert result["module"]["django_connection_id"] != parent["django_connection_id"]
    assert_orm_tasks_fine(result, route.guarded_class)
    for outcome in result["orm"]:
        assert outcome.value["guard_mode"] == "strict"
    # The raw connection the fixup knows nothing of: each child reconnects (GUARDDB_ON_FORK).
    for outcome in result["raw"]:
        assert outcome.ok, (outcome.exception, outcome.traceback)
        (tag, _) = outcome.args
        value = outcome.value
        assert value["connection_class"] == route.guarded_class
        assert value["echoes"] == [f"{tag}:{n}" for n in range(RAW_ROUNDS)]
        assert value["rows"] == [[tag, value["pid"]]]
        assert value["connection_id"] != parent["raw_connection_id"]
        assert result["landed"][tag] == 1
    assert result["shutdown"]["raw_connection_id"] == parent["raw_connection_id"]
    assert not result["killed"] and result["returncode"] == 0, result["log"]


@needs_celery
def test_celery_django_plain_driver_fixup_covers_orm_not_a_raw_connection(
    connect_args, django_db, route, broker_url, tmp_path
):
    """The plain driver: Celery's fixup closes the inherited Django connection in each child,
    so ORM tasks are fine; the module-level raw connection is shared and breaks.

    The fixup closes an inherited connection's descriptor (its ``fileno()``) before calling
    its ``close()``: mysqlclient's COM_QUIT then goes nowhere and the main process's Django
    session survives.  A PyMySQL connection has no ``fileno()``: each child's ``close()``
    sends COM_QUIT on the main process's socket, and its Django session is gone.
    """
    result = run_django_worker(connect_args, django_db, broker_url, str(tmp_path), "plain", route)
    assert_orm_tasks_fine(
        result,
        route.plain_connection_class,
        parent_session_survives=route.name == "mysqlclient",
    )
    bad = []
    errors = collections.Counter(o.exception for o in result["raw"] if not o.ok)
    if errors:
        bad.append(f"raw tasks failed: {dict(errors)}")
    for outcome in (o for o in result["raw"] if o.ok):
        tag = outcome.args[0]
        if outcome.value["echoes"] != [f"{tag}:{n}" for n in range(RAW_ROUNDS)]:
            bad.append(f"{tag} read back values of another task")
        elif outcome.value["rows"] != [[tag, outcome.value["pid"]]]:
            bad.append(f"{tag} read its row back as {outcome.value['rows']}")
    raw_at_shutdown = result["shutdown"].get("raw_connection_id")
    if raw_at_shutdown != result["parent"]["raw_connection_id"]:
        bad.append(f"the main process's raw connection at shutdown: {raw_at_shutdown}")
    print(f"plain {route.name}, raw module-level connection:", "; ".join(bad) or "nothing wrong")
    assert bad, f"the shared raw connection showed no failure:\n{result['log']}"


# -- Django's test runner ---------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["guarddb", "plain"])
def test_djangos_parallel_test_runner(connect_args, tmp_path, route, driver):
    """``manage.py test --parallel 2`` passes; each worker closes the connection it inherited
    from the runner: with guarddb the runner's session survives, with the plain driver
    (mysqlclient, or PyMySQL through its own install_as_MySQLdb()) the workers' COM_QUIT
    ends it (Django's runner does not use it again, so it still passes)."""
    name = unique_name("gdr")
    report = tmp_path / "runner.jsonl"
    env = django_env(connect_args, name, driver=driver, route=route.name)
    env["GUARDDB_RUNNER_REPORT"] = str(report)
    try:
        done = run_project(
            ["manage.py", "test", "notes", "--parallel", "2", "--noinput", "-v", "2"], env, 120
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "Ran 4 tests" in output and "\nOK" in output, output
        with _plain_cursor(connect_args) as cursor:
            cursor.execute("SHOW DATABASES LIKE %s", (f"test_{name}%",))
            assert cursor.fetchall() == ()  # the runner destroyed the test database and clones
    finally:
        with _plain_cursor(connect_args) as cursor:
            for suffix in ("", "_1", "_2"):
                cursor.execute(f"DROP DATABASE IF EXISTS test_{name}{suffix}")
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    tests = [line for line in lines if "test" in line]
    (runner,) = [line for line in lines if "runner" in line]
    assert len(tests) == 4
    for line in tests:
        # In a forked worker of the runner, on its clone of the test database.
        assert line["database"] in (f"test_{name}_1", f"test_{name}_2"), line
        assert line["pid"] != line["runner_pid"] == runner["runner"]
        assert line["connection_class"] == route.connection_class(driver), line
        assert line["guard_mode"] == ("strict" if driver == "guarddb" else None)
    if driver == "guarddb":
        assert runner["after"] == runner["before"]  # the runner's own session survived
    else:
        # What the workers' COM_QUIT on the shared socket left the runner with (measured:
        # mysqlclient's "Server has gone away", PyMySQL's "MySQL server has gone away
        # (BrokenPipeError(32, 'Broken pipe'))"; 2013 if the runner's query gets out first).
        assert re.match(r"OperationalError: \((2006|2013),", str(runner["after"])), runner


# -- pytest-django under pytest --guarddb=strict ---------------------------------------------

#: A Django project's test module, as a project would write it for pytest-django: Django's
#: TestCase and TransactionTestCase, the ``db`` marker, a ``live_server`` test whose view
#: queries the database, and a test with a genuine sharing bug whose error is swallowed.
PYTEST_DJANGO_TESTS = '''
"""The project's tests under pytest-django (run by tests/test_django.py)."""
import json
import os
import threading
import time
import urllib.request

import pytest
from django.db import DatabaseError, connection
from django.test import TestCase, TransactionTestCase

from notes.models import Note


def note(tag):
    return Note.objects.create(tag=tag, pid=os.getpid(), connection_id=0)


def server_sessions():
    with connection.cursor() as cursor:
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST")
        return {row[0] for row in cursor.fetchall()}


class NoteTests(TestCase):
    def test_create_and_read(self):
        note("a")
        self.assertEqual(list(Note.objects.values_list("tag", flat=True)), ["a"])


class CommittedNoteTests(TransactionTestCase):
    def test_commit_and_count(self):
        note("b")
        self.assertEqual(Note.objects.filter(tag="b").count(), 1)


@pytest.mark.django_db
def test_db_marker():
    note("c")
    assert Note.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_live_server_view_queries_the_database(live_server):
    note("seen-by-the-server")  # committed: the server's thread has a session of its own
    with urllib.request.urlopen(live_server.url + "/notes/", timeout=30) as response:
        served = json.load(response)
    assert served["tags"] == ["seen-by-the-server"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        (mine,) = cursor.fetchone()
    assert served["session"] != mine
    assert served["thread"] != threading.current_thread().name
    assert str(served["guard_mode"]) == os.environ["EXPECTED_MODE"]
    # Django closes the request thread's connection as the request ends (the server
    # ends the session a moment after its COM_QUIT: a deadline, not an event).
    deadline = time.monotonic() + 10
    while served["session"] in server_sessions():
        assert time.monotonic() < deadline, "the request thread's session stayed open"
        time.sleep(0.01)
    print("SERVED", json.dumps(served))


@pytest.mark.django_db
def test_sharing_bug_swallowed():
    """A cursor of the test's thread used by a worker thread, its error swallowed."""
    note("d")
    counts = []
    with connection.cursor() as cursor:

        def count():
            try:
                cursor.execute("SELECT COUNT(*) FROM notes_note")
                counts.append(cursor.fetchone()[0])
            except DatabaseError:
                counts.append(None)  # degrade gracefully: the error never reaches the test

        worker = threading.Thread(target=count, name="report-worker")
        worker.start()
        worker.join(30)
    assert counts in ([1], [None])
'''

#: The tests' outcomes in pytest's short summary (``-rA``).
_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED) \S*test_project\.py::(\S+)", re.M)


def run_pytest_django(
    tmp_path: Any, connect_args: dict[str, Any], route: Route, *options: str, mode: str
) -> tuple[dict[str, str], str]:
    """pytest (with pytest-django and guarddb's plugin) on PYTEST_DJANGO_TESTS, on a test
    database of its own that pytest-django creates and destroys; (outcome per test, output)."""
    from .helpers import PLUGIN_ARGS

    suite = tmp_path / "suite"
    suite.mkdir(parents=True)
    (suite / "test_project.py").write_text(PYTEST_DJANGO_TESTS)
    (suite / "pytest.ini").write_text("[pytest]\nDJANGO_SETTINGS_MODULE = guarddb_site.settings\n")
    name = unique_name("gdpd")
    # The plain driver in the settings: guarddb only as the plugin installs it.
    env = django_env(connect_args, name, driver="plain", route=route.name)
    del env["DJANGO_SETTINGS_MODULE"]  # from pytest.ini, as a project has it
    env["EXPECTED_MODE"] = mode
    args = ["-m", "pytest", *PLUGIN_ARGS, "-p", "no:cacheprovider", "-rA", "-s", *options]
    try:
        done = run_project(args, env, 120, cwd=str(suite))
    finally:
        with _plain_cursor(connect_args) as cursor:
            cursor.execute("SHOW DATABASES LIKE %s", (f"test_{name}",))
            left = cursor.fetchall()
            cursor.execute(f"DROP DATABASE IF EXISTS test_{name}")
    output = done.stdout + done.stderr
    assert left == (), f"pytest-django left its test database:\n{output}"
    return {test: outcome for outcome, test in _OUTCOME.findall(done.stdout)}, output


PYTEST_DJANGO_TEST_NAMES = [
    "NoteTests::test_create_and_read",
    "CommittedNoteTests::test_commit_and_count",
    "test_db_marker",
    "test_live_server_view_queries_the_database",
    "test_sharing_bug_swallowed",
]


def test_pytest_django_suite_under_pytest_guarddb_strict(connect_args, route, tmp_path):
    """pytest-django needs nothing of guarddb: the plugin installs guarddb (tryfirst) before
    pytest-django loads the settings and Django's backend imports the driver; every test
    runs in the main thread on one connection, the live server's request threads each open
    their own, owned by them and closed by Django at the request's end (on MySQL Django
    shares no connection with the server thread; it does for in-memory SQLite only)."""
    pytest.importorskip("pytest_django", reason="pip install 'pytest-django>=4.9'")
    if route.name == "mysqlclient":
        # Without --guarddb every test passes, the sharing bug's included: only the plugin
        # fails it.  (Not on PyMySQL's route: PyMySQL's own install_as_MySQLdb() leaves
        # `MySQLdb.converters` to whatever mysqlclient module is imported already, and the
        # plugin, loaded but off, has imported mysqlclient with the guarddb package: Django
        # then escapes with mysqlclient's converters, "Variable 'autocommit' can't be set
        # to the value of '\x00'".  With --guarddb the plugin's pymysql is guarddb's,
        # whose install_as_MySQLdb() installs PyMySQL's submodules too.)
        plain, output = run_pytest_django(tmp_path / "plain", connect_args, route, mode="None")
        assert plain == dict.fromkeys(PYTEST_DJANGO_TEST_NAMES, "PASSED"), output

    strict, output = run_pytest_django(
        tmp_path / "strict", connect_args, route, "--guarddb=strict", mode="strict"
    )
    assert strict == {
        **dict.fromkeys(PYTEST_DJANGO_TEST_NAMES, "PASSED"),
        "test_sharing_bug_swallowed": "FAILED",
    }, output
    assert (
        "guarddb: installed as MySQLdb and pymysql, default mode strict (from --guarddb)" in output
    )
    assert "settings: guarddb_site.settings (from ini)" in output  # pytest-django's header
    # The sharing bug, reported as for any test: the worker thread, the refused call.
    assert "guarddb: 1 guard violation during this test, which would have passed" in output
    assert "[1] ThreadOwnershipError, once, in thread report-worker" in output
    assert "test_project.py::test_sharing_bug_swallowed (1)" in output
    assert "outside any test" not in output  # nothing at set-up, teardown or in leftovers
    served = json.loads(re.search(r"^.*SERVED (\{.*\})$", output, re.M).group(1))
    assert served["thread"].startswith("Thread-")  # a request thread of the live server
