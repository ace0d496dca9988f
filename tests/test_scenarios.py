"""The demo's failure scenarios, each in a subprocess with a time limit, and the demo itself.

With guarddb each must end in its documented outcome (its GuardError, "reported", or
correct), never a signal, a hang or wrong rows, under whichever mysqlclient runs the
tests (2.2 segfaults on the shared cursor without the guard), in every guarddb variant
(on_fork="reconnect", close_orphans=True, ...).  Plain mysqlclient's outcome is asserted
where it is deterministic, so these tests would fail without guarddb.  The command line
(``python -m guarddb demo``) is run for real: progress on stderr, the table on stdout,
colour only on a terminal.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pty
import re
import select
import subprocess
import sys
from typing import Any
from urllib.parse import quote, urlencode

import pytest

import guarddb
from guarddb.tools.demo import catalog, command, framework, leaks, process
from guarddb.tools.demo.catalog import SCENARIOS
from guarddb.tools.demo.framework import SKIPPED, Outcome
from guarddb.tools.server import ENV_DSN

from .helpers import hiding_driver

#: Generous: a run's own time limit is what counts; this only stops a stuck test.
TIMEOUT = 60
ANSI = re.compile(r"\x1b\[")

#: Where the thread pool's application opens its connections: the site guarddb must report.
LEAK_SITE = "demo_app.py:" + str(
    next(
        number
        for number, line in enumerate(leaks._THREAD_POOL_APP.splitlines(), 1)
        if "db.connect(" in line
    )
)

VARIANTS = [
    pytest.param(name, index, id=f"{name}-{variant.label.replace(' ', '-')}")
    for name, scenario in SCENARIOS.items()
    for index, variant in enumerate(scenario.variants)
]


@pytest.fixture
def run_scenario(connect_args, request):
    """``run_scenario(name, driver, options=None)``: one run, with what the scenario needs."""

    def run(name: str, driver: str, options: dict[str, Any] | None = None) -> Outcome:
        scenario = SCENARIOS[name]
        for module, how in scenario.requires:
            pytest.importorskip(module, reason=f"{module} is not installed ({how})")
        broker_url = request.getfixturevalue("broker_url") if scenario.broker else None
        outcome = process.run(
            name, driver, connect_args, timeout=TIMEOUT, options=options, broker_url=broker_url
        )
        assert outcome.kind != SKIPPED, outcome
        return outcome

    return run


def notes(outcome: Outcome) -> list[str]:
    assert outcome.report is not None, outcome
    return list(outcome.report["notes"])


@pytest.mark.parametrize(("name", "index"), VARIANTS)
def test_guarded_scenario_ends_in_its_documented_outcome(run_scenario, name, index):
    variant = SCENARIOS[name].variants[index]
    outcome = run_scenario(name, "guarddb", dict(variant.options))
    assert outcome.kind not in ("signal", "hang", "wrong rows"), outcome
    assert catalog.matches(name, outcome, variant.expected), (variant.expected, outcome)


def test_plain_sscursor_scenario_is_out_of_sync(connect_args):
    outcome = process.run("sscursor_pending", "plain", connect_args, timeout=20)
    assert outcome.kind == "commands out of sync", outcome


def test_plain_fork_close_scenario_loses_the_parent_session(connect_args):
    outcome = process.run("fork_child_close", "plain", connect_args, timeout=20)
    assert outcome.kind == "lost connection", outcome


def test_plain_shared_cursor_scenario_goes_wrong(connect_args):
    outcome = process.run("shared_cursor", "plain", connect_args, timeout=20)
    assert outcome.kind not in ("correct", "clean error"), outcome


# -- PyMySQL: plain PyMySQL against guarddb.pymysql ----------------------------------------


def test_pymysql_rows_stand_beside_mysqlclient_s():
    names = list(SCENARIOS)
    for name in ("shared_cursor", "fork_shared", "fork_child_close"):
        twin = SCENARIOS[f"{name}_pymysql"]
        assert names.index(twin.name) == names.index(name) + 1
        assert (twin.library, SCENARIOS[name].library) == ("pymysql", "mysqlclient")
        assert twin.expected_guarded == SCENARIOS[name].expected_guarded
        assert twin.label(None).startswith("plain PyMySQL ")
        assert twin.label(twin.variants[0]) == "guarddb.pymysql"


def test_plain_pymysql_shared_cursor_goes_wrong(connect_args):
    """InterfaceError(0, ''), "Packet sequence number wrong" and other threads' rows."""
    outcome = process.run("shared_cursor_pymysql", "plain", connect_args, timeout=20)
    assert outcome.report["library"] == "PyMySQL", outcome.report
    assert outcome.kind in framework.BAD_KINDS, outcome
    assert outcome.guard_errors == (), outcome


def test_plain_pymysql_fork_shared_is_stopped_at_its_time_limit(connect_args):
    """Children on the parent's socket: they hang or read each other's rows; the run ends."""
    outcome = process.run("fork_shared_pymysql", "plain", connect_args, timeout=8)
    assert outcome.kind in framework.BAD_KINDS, outcome
    assert outcome.elapsed < 8 + 10, outcome  # the child's time limit, and its clean-up


def test_plain_pymysql_fork_close_loses_the_parent_session(connect_args):
    """The child's close() sends COM_QUIT on the parent's socket: the parent's session ends."""
    outcome = process.run("fork_child_close_pymysql", "plain", connect_args, timeout=20)
    assert outcome.kind == "lost connection", outcome
    after_close = outcome.report["workers"]["parent after child (close)"]
    assert after_close["correct"] == 0, outcome
    lost = [key for key in after_close["errors"] if re.fullmatch(r"\w+\((2006|2013)\)", key)]
    assert lost, outcome


# -- greenlets sharing a cursor ------------------------------------------------------------


def greenlet_counts(outcome: Outcome) -> tuple[int, int]:
    """Answers right and wrong over the 8 greenlets of greenlets_shared_cursor."""
    workers = outcome.report["workers"]
    assert sorted(workers) == [f"greenlet {n}" for n in range(1, 9)], workers
    assert all(stats["status"] == "done" for stats in workers.values()), workers
    return (
        sum(stats["correct"] for stats in workers.values()),
        sum(stats["wrong"] for stats in workers.values()),
    )


def test_plain_greenlets_shared_cursor_hands_every_greenlet_anothers_rows(run_scenario):
    """Each greenlet yields between execute and fetch: every fetch is another's, no error."""
    outcome = run_scenario("greenlets_shared_cursor", "plain")
    assert outcome.kind == "wrong rows" and outcome.errors == {}, outcome
    assert greenlet_counts(outcome) == (0, 400), outcome


def test_greenlets_shared_cursor_exclusive_refuses_every_fetch_of_anothers_rows(run_scenario):
    outcome = run_scenario("greenlets_shared_cursor", "guarddb", {})
    assert outcome.kind == "clean error", outcome
    assert set(outcome.errors) == {"ConcurrentUseError"}, outcome
    right, wrong = greenlet_counts(outcome)
    assert wrong == 0 and right + outcome.errors["ConcurrentUseError"] == 400, outcome


def test_greenlets_shared_cursor_strict_refuses_every_greenlet_but_the_owner(run_scenario):
    outcome = run_scenario("greenlets_shared_cursor", "guarddb", {"guard": "strict"})
    assert outcome.errors == {"ThreadOwnershipError": 400}, outcome
    assert greenlet_counts(outcome) == (0, 0)


def test_greenlets_shared_cursor_mutex_gives_each_greenlet_its_own_rows(run_scenario):
    outcome = run_scenario("greenlets_shared_cursor", "guarddb", {"guard": "mutex"})
    assert outcome.kind == "correct" and outcome.errors == {}, outcome
    assert greenlet_counts(outcome) == (400, 0)


def test_the_demo_skips_the_greenlet_scenario_without_gevent(connect_args):
    """gevent made unimportable (None in sys.modules): skipped, saying why; exit status 0."""
    code = (
        "import sys\n"
        "sys.modules['gevent'] = None\n"
        "from guarddb.tools.cli import main\n"
        "sys.exit(main(['demo', 'greenlets_shared_cursor']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=5 * TIMEOUT,
        env=demo_env(connect_args),
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "[1/4] greenlets_shared_cursor with plain mysqlclient" in done.stderr
    assert "skipped: gevent is not installed (pip install 'gevent>=24'" in done.stderr
    assert "skipped greenlets_shared_cursor: gevent is not installed" in done.stdout


# -- Celery prefork ------------------------------------------------------------------------


def test_celery_prefork_on_fork_raise_fails_every_task_cleanly(run_scenario):
    """Every task: ForkedConnectionError (2006); no row lands; the main process's session lives."""
    outcome = run_scenario("celery_prefork", "guarddb", {"on_fork": "raise"})
    assert outcome.kind == "clean error", outcome
    assert outcome.errors == {"ForkedConnectionError(2006)": 8}, outcome
    assert outcome.guard_errors == ("ForkedConnectionError",)
    said = notes(outcome)
    assert "no row landed" in said, outcome
    assert "the worker's main process's own session intact at shutdown" in said, outcome


def test_celery_prefork_on_fork_reconnect_gets_every_task_right(run_scenario):
    """Every task right, on a session of its own child; each row lands once."""
    outcome = run_scenario("celery_prefork", "guarddb", {"on_fork": "reconnect"})
    assert outcome.kind == "correct", outcome
    workers = outcome.report["workers"]
    tasks = {name: stats for name, stats in workers.items() if name.startswith("task-")}
    assert len(tasks) == 8
    assert all(stats["correct"] == 1 and not stats["errors"] for stats in tasks.values()), tasks
    said = notes(outcome)
    assert "all 8 tasks right" in said and "every row landed once" in said, outcome
    assert any(note.startswith("each pool child on a session of its own") for note in said)
    assert "the worker's main process's own session intact at shutdown" in said, outcome


def test_plain_celery_prefork_goes_wrong(run_scenario):
    """Two children on the main process's socket: wrong rows, errors or hangs."""
    outcome = run_scenario("celery_prefork", "plain")
    assert outcome.kind not in ("correct", "clean error", "reported"), outcome


# -- the thread pool that leaks connections -----------------------------------------------


def test_thread_pool_leak_plain_leaves_every_session_open_unreported(run_scenario):
    outcome = run_scenario("thread_pool_leak", "plain")
    assert outcome.kind == "sessions left open", outcome
    assert outcome.report["left_open"] == {"count": 8, "reported": 0}, outcome


def test_thread_pool_leak_guarddb_reports_each_orphan_with_its_site(run_scenario):
    outcome = run_scenario("thread_pool_leak", "guarddb", {})
    assert outcome.kind == "reported", outcome
    assert outcome.report["left_open"] == {"count": 8, "reported": 8}, outcome
    assert f"8 orphans reported, each with its site ({LEAK_SITE})" in notes(outcome)


def test_thread_pool_leak_close_orphans_closes_every_session(run_scenario):
    outcome = run_scenario("thread_pool_leak", "guarddb", {"close_orphans": True})
    assert outcome.kind == "correct", outcome
    assert outcome.report["left_open"] == {"count": 0, "reported": 0}, outcome
    said = notes(outcome)
    assert f"8 orphans reported, each with its site ({LEAK_SITE})" in said
    closed = [note for note in said if "the 8 sessions closed" in note]
    assert closed, outcome
    # Back to the baseline (or below it, if an earlier test's sessions were still going).
    before, after = map(int, re.search(r"(\d+) before, (\d+) after", closed[0]).groups())
    assert after <= before, closed


# -- the idle pool -------------------------------------------------------------------------


def test_idle_pool_plain_keeps_the_idle_sessions(run_scenario):
    outcome = run_scenario("idle_pool", "plain")
    assert outcome.kind == "sessions left open", outcome
    assert outcome.report["left_open"] == {"count": 10, "reported": 0}, outcome


def test_idle_pool_max_idle_closes_them_and_the_next_checkout_works(run_scenario):
    outcome = run_scenario("idle_pool", "guarddb", {"max_idle": 2})
    assert outcome.kind == "correct", outcome
    assert outcome.report["left_open"] == {"count": 0, "reported": 0}, outcome
    later = outcome.report["workers"]["later checkout"]
    assert later["correct"] == 1 and later["errors"] == {}, later
    said = notes(outcome)
    assert any(note.startswith("the pool's 10 idle sessions closed") for note in said), said
    assert any("got a fresh session, with no error reaching" in note for note in said), said


# -- classification of the new kinds -------------------------------------------------------


def report(**extra: Any) -> dict[str, Any]:
    return {"workers": {"thread 1": {"correct": 1, "status": "done"}}, **extra}


def test_sessions_left_open_unless_guarddb_reported_every_one():
    assert framework.classify(report(left_open={"count": 3}), 0, False).kind == (
        "sessions left open"
    )
    partly = report(left_open={"count": 3, "reported": 2})
    assert framework.classify(partly, 0, False).kind == "sessions left open"
    every = report(left_open={"count": 3, "reported": 3}, notes=["3 orphans reported"])
    outcome = framework.classify(every, 0, False)
    assert outcome.kind == "reported" and outcome.detail == "3 orphans reported"
    assert framework.classify(report(left_open={"count": 0}), 0, False).kind == "correct"


def test_a_skipped_report_is_a_skipped_outcome():
    outcome = framework.classify({"skipped": "celery is not installed"}, 0, False)
    assert (outcome.kind, outcome.detail) == (SKIPPED, "celery is not installed")
    assert not catalog.matches("celery_prefork", outcome)


# -- the command line ----------------------------------------------------------------------


def dsn_of(connect_args: dict[str, Any]) -> str:
    """A GUARDDB_TEST_DSN naming the server that ``connect_args`` reach."""
    if "unix_socket" in connect_args:
        query = {"user": connect_args.get("user", "root"), "db": connect_args["database"]}
        if connect_args.get("password"):
            query["password"] = connect_args["password"]
        return f"unix://{quote(connect_args['unix_socket'])}?{urlencode(query)}"
    credentials = quote(connect_args.get("user", "root"), safe="")
    if connect_args.get("password"):
        credentials += ":" + quote(connect_args["password"], safe="")
    return (
        f"mysql://{credentials}@{connect_args['host']}:{connect_args.get('port', 3306)}"
        f"/{connect_args['database']}"
    )


def demo_env(connect_args: dict[str, Any], **extra: str) -> dict[str, str]:
    """The environment of ``python -m guarddb demo`` on the tests' server, this guarddb."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(guarddb.__file__)))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    env[ENV_DSN] = dsn_of(connect_args)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def run_demo(connect_args: dict[str, Any], *args: str) -> subprocess.CompletedProcess:
    """``python -m guarddb demo ARGS`` with its stdout and stderr piped (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "guarddb", "demo", *args],
        capture_output=True,
        text=True,
        timeout=5 * TIMEOUT,
        env=demo_env(connect_args),
        check=False,
    )


def run_demo_on_a_terminal(connect_args: dict[str, Any], *args: str, **env: str) -> str:
    """``python -m guarddb demo ARGS`` with its stdout on a pseudo-terminal; that output."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "guarddb", "demo", *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=subprocess.DEVNULL,
        env=demo_env(connect_args, TERM="xterm", **env),
    )
    os.close(terminal)
    output = bytearray()
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 5 * TIMEOUT)
            if not ready:
                raise AssertionError(f"no output from the demo: {output.decode(errors='replace')}")
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the demo ended and closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        assert process.wait(timeout=TIMEOUT) == 0, output.decode(errors="replace")
    return output.decode(errors="replace")


def test_demo_prints_progress_then_the_table_without_colour_when_piped(connect_args):
    done = run_demo(connect_args, "sscursor_pending", "thread_pool_leak")
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert [line.split(" ... ")[0] for line in progress] == [
        "[1/5] sscursor_pending with plain mysqlclient " + command._plain_version(),
        "[2/5] sscursor_pending with guarddb",
        "[3/5] thread_pool_leak with plain mysqlclient " + command._plain_version(),
        "[4/5] thread_pool_leak with guarddb",
        "[5/5] thread_pool_leak with guarddb close_orphans=True",
    ]
    assert progress[0].split(" ... ")[1].startswith("commands out of sync (")
    assert progress[1].split(" ... ")[1].startswith("clean error, as expected (")
    assert progress[3].split(" ... ")[1].startswith("reported, as expected (")
    assert progress[4].split(" ... ")[1].startswith("correct, as expected (")
    for name in ("sscursor_pending", "thread_pool_leak"):
        assert f"| {name} " in done.stdout
    assert "with close_orphans=True:" in done.stdout
    assert "guarddb gave the expected outcome in all 2 scenarios that ran." in done.stdout
    assert not ANSI.search(done.stdout) and not ANSI.search(done.stderr)


def test_demo_markdown_table(connect_args):
    done = run_demo(connect_args, "--markdown", "sscursor_pending")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| scenario | plain mysqlclient ")
    assert lines[1] == "|---|---|---|"
    assert lines[2].startswith("| **sscursor_pending**<br>SSCursor with rows unread")
    assert "**clean error (as expected)**<br>PendingResultError x1" in lines[2]
    assert not ANSI.search(done.stdout)


def test_demo_colours_only_a_terminal_and_never_with_no_color(connect_args):
    coloured = run_demo_on_a_terminal(connect_args, "sscursor_pending")
    assert "\x1b[32mclean error (as expected)\x1b[0m" in coloured
    assert "\x1b[1;31mcommands out of sync\x1b[0m" in coloured
    plain = run_demo_on_a_terminal(connect_args, "sscursor_pending", NO_COLOR="1")
    assert "clean error (as expected)" in plain and not ANSI.search(plain)


def test_demo_shows_pymysql_beside_mysqlclient(connect_args):
    done = run_demo(connect_args, "--markdown", "fork_child_close", "fork_child_close_pymysql")
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    pymysql_version = command._plain_version("pymysql")
    progress = [line.split(" ... ")[0] for line in done.stderr.splitlines() if line[:1] == "["]
    assert progress == [
        "[1/4] fork_child_close with plain mysqlclient " + command._plain_version(),
        "[2/4] fork_child_close with guarddb",
        "[3/4] fork_child_close_pymysql with plain PyMySQL " + pymysql_version,
        "[4/4] fork_child_close_pymysql with guarddb.pymysql",
    ]
    lines = done.stdout.splitlines()
    assert lines[0] == (
        f"| scenario | plain mysqlclient {command._plain_version()} / PyMySQL {pymysql_version} "
        f"| guarddb {guarddb.__version__} |"
    )
    assert lines[3].startswith("| **fork_child_close_pymysql**<br>the same on PyMySQL: ")
    assert "| **lost connection**<br>" in lines[3]
    assert "| **correct (as expected)**<br>4 of 4 results correct |" in lines[3]


def test_the_demo_without_mysqlclient_runs_pymysql_s_rows(connect_args, tmp_path):
    """mysqlclient not installed (hidden in every process): its rows are skipped, saying so."""
    env = demo_env(connect_args)
    env["PYTHONPATH"] = os.pathsep.join([hiding_driver(tmp_path, "MySQLdb"), env["PYTHONPATH"]])
    done = subprocess.run(
        [sys.executable, "-m", "guarddb", "demo", "fork_child_close", "fork_child_close_pymysql"],
        capture_output=True,
        text=True,
        timeout=5 * TIMEOUT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "[1/4] fork_child_close with plain mysqlclient ... skipped: mysqlclient is not " in (
        done.stderr
    )
    assert "(pip install 'guarddb[mysqlclient]', or guarddb's test extra)" in done.stderr
    assert "[4/4] fork_child_close_pymysql with guarddb.pymysql ... correct, as expected" in (
        done.stderr
    )
    assert f"| plain PyMySQL {command._plain_version('pymysql')} " in done.stdout
    assert "guarddb gave the expected outcome in the one scenario that ran." in done.stdout
    assert "skipped fork_child_close: mysqlclient is not installed" in done.stdout


def test_demo_refuses_an_unknown_scenario(connect_args):
    done = run_demo(connect_args, "no_such_scenario")
    assert done.returncode == 2 and "unknown scenario no_such_scenario" in done.stderr


def test_the_demo_skips_what_it_cannot_run_and_says_why(connect_args):
    """Celery and SQLAlchemy made unimportable (None in sys.modules): skipped, exit status 0."""
    code = (
        "import sys\n"
        "sys.modules['celery'] = sys.modules['sqlalchemy'] = None\n"
        "from guarddb.tools.cli import main\n"
        "sys.exit(main(['demo', 'celery_prefork', 'idle_pool', 'sscursor_pending']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=5 * TIMEOUT,
        env=demo_env(connect_args),
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "[3/7] celery_prefork with plain mysqlclient" in done.stderr
    assert "skipped: celery is not installed (pip install" in done.stderr
    assert "skipped: sqlalchemy is not installed (pip install" in done.stderr
    assert "guarddb gave the expected outcome in the one scenario that ran." in done.stdout
    assert "skipped celery_prefork: celery is not installed" in done.stdout
    assert "skipped idle_pool: sqlalchemy is not installed" in done.stdout


def test_a_skipped_scenario_does_not_fail_the_demo():
    """The exit status: skipped runs do not count; an unexpected guarddb outcome does."""
    scenario = SCENARIOS["celery_prefork"]
    skipped = command._Result(scenario, Outcome(SKIPPED, "no Celery broker: nothing answers"))
    for variant in scenario.variants:
        skipped.guarded.append((variant, Outcome(SKIPPED, "no Celery broker: nothing answers")))
    out = io.StringIO()
    assert command._summary([skipped], 1.0, out) == 0
    assert "skipped celery_prefork: no Celery broker: nothing answers" in out.getvalue()
    table = io.StringIO()
    command._print_table([skipped], table, color=False)
    assert "| celery_prefork" in table.getvalue() and "skipped" in table.getvalue()

    leak = SCENARIOS["thread_pool_leak"]
    wrong = command._Result(leak, Outcome("sessions left open", "8 sessions"))
    wrong.guarded.append((leak.variants[0], Outcome("sessions left open", "8 sessions")))
    wrong.guarded.append((leak.variants[1], Outcome("correct", "closed")))
    out = io.StringIO()
    assert command._summary([skipped, wrong], 1.0, out) == 1
    assert "in 1 of 2 runs: thread_pool_leak (guarddb)" in out.getvalue()


def test_missing_requirements_are_named():
    for name, scenario in SCENARIOS.items():
        missing = [m for m, _ in scenario.requires if importlib.util.find_spec(m) is None]
        reason = catalog.missing_requirement(name)
        assert (reason is None) == (not missing), (name, reason)
