"""The pytest plugin: a guard violation fails its test even when the code under test swallowed it.

Each scenario is a small test suite run by pytester in a fresh pytest process,
against the session's MariaDB (its connect arguments go through an environment
variable).  The plugin is loaded through its pytest11 entry point when guarddb
is installed, else with ``-p guarddb.tools.pytest_plugin`` (PYTHONPATH=src).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import textwrap

import pytest

import guarddb
import guarddb.tools.pytest_plugin

from .helpers import PLUGIN_ARGS, hiding_driver, pytest11_entry_points

pytest_plugins = ["pytester"]

#: The package root of the guarddb under test: first on the inner runs' PYTHONPATH.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(guarddb.__file__)))
ARGS_ENV = "GUARDDB_PLUGIN_TEST_CONNECT_ARGS"
#: Seconds one inner pytest run may take.
INNER_TIMEOUT = 120

#: The application under test: one connection and one cursor shared by a thread pool,
#: "safely" behind a lock, every database error swallowed.
APP = '''
"""A small app that shares one connection with a thread pool and hides its errors."""
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import MySQLdb

CONNECT_ARGS = json.loads(os.environ["GUARDDB_PLUGIN_TEST_CONNECT_ARGS"])


def squares(count, db=MySQLdb, **guard):
    conn = db.connect(**CONNECT_ARGS, **guard)  # connect-site
    cursor = conn.cursor()
    lock = threading.Lock()  # one thread at a time: "safe" sharing

    def square(n):
        with lock:
            try:
                cursor.execute("SELECT %s * %s", (n, n))  # violation-site
                return cursor.fetchall()[0][0]
            except db.Error:
                return None  # degrade gracefully: the error never reaches a test

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="square") as pool:
        results = list(pool.map(square, range(count)))
    conn.close()
    return results
'''

#: Passes with plain mysqlclient and with guarddb alike: only the plugin can fail it.
TEST_APP = """
import os

import MySQLdb

import app


def test_squares():
    results = app.squares(5)
    assert len(results) == 5
    assert all(result in (n * n, None) for n, result in enumerate(results))


def test_driver():
    assert MySQLdb.Connection.__module__.split(".")[0] == os.environ["EXPECTED_DRIVER"]
"""


#: The same application on PyMySQL, written for plain PyMySQL: `import pymysql`, its
#: DictCursor, pymysql.connections.Connection.
PYMYSQL_APP = '''
"""The app on PyMySQL: one connection shared by a thread pool, errors swallowed; and a clean one."""
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pymysql
from pymysql.cursors import DictCursor

CONNECT_ARGS = json.loads(os.environ["GUARDDB_PLUGIN_TEST_CONNECT_ARGS"])


def squares(count):
    conn = pymysql.connect(**CONNECT_ARGS, cursorclass=DictCursor)  # connect-site
    cursor = conn.cursor()
    lock = threading.Lock()  # one thread at a time: "safe" sharing

    def square(n):
        with lock:
            try:
                cursor.execute("SELECT %s * %s AS square", (n, n))  # violation-site
                return cursor.fetchall()[0]["square"]
            except pymysql.Error:
                return None  # degrade gracefully: the error never reaches a test

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="square") as pool:
        results = list(pool.map(square, range(count)))
    conn.close()
    return results


def squares_each_its_own(count):
    """Clean: each thread opens, uses and closes a connection of its own."""

    def square(n):
        conn = pymysql.connections.Connection(**CONNECT_ARGS)
        try:
            with conn.cursor(DictCursor) as cursor:
                cursor.execute("SELECT %s * %s AS square", (n, n))
                return cursor.fetchone()["square"]
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="own") as pool:
        return list(pool.map(square, range(count)))
'''

#: Passes with plain PyMySQL and with guarddb.pymysql alike: only the plugin can fail it.
TEST_PYMYSQL_APP = """
import os

import pymysql

import pmapp


def test_squares():
    results = pmapp.squares(5)
    assert len(results) == 5
    assert all(result in (n * n, None) for n, result in enumerate(results))


def test_each_thread_its_own_connection():
    assert pmapp.squares_each_its_own(5) == [0, 1, 4, 9, 16]


def test_driver():
    connection_class = pymysql.connections.Connection
    assert connection_class.__module__.split(".")[0] == os.environ["EXPECTED_DRIVER"]
"""


class Suite:
    """A directory with app.py, and pytest run on it in a new process."""

    def __init__(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pytester = pytester
        self.monkeypatch = monkeypatch
        self.path = pytester.path
        self.app = pytester.makepyfile(app=APP)
        self.connect_line = self.line("app.py", "connect-site")
        self.violation_line = self.line("app.py", "violation-site")

    def write(self, **files: str) -> None:
        """Write test modules (dedented)."""
        self.pytester.makepyfile(**files)

    def line(self, name: str, marker: str) -> int:
        """The line of file ``name`` that carries ``# marker``."""
        text = (self.path / name).read_text()
        (number,) = [n for n, line in enumerate(text.splitlines(), 1) if f"# {marker}" in line]
        return number

    def run(self, *args: str, **env: str) -> pytest.RunResult:
        """``pytest ARGS`` with these environment variables added."""
        with self.monkeypatch.context() as scoped:
            for name, value in env.items():
                scoped.setenv(name, value)
            return self.pytester.runpytest_subprocess(
                *PLUGIN_ARGS, "-p", "no:cacheprovider", *args, timeout=INNER_TIMEOUT
            )


@pytest.fixture
def suite(pytester, connect_args, monkeypatch):
    """A Suite whose runs reach the session's server and import the guarddb under test."""
    for variable in (
        guarddb.core.settings.ENV_MODE,
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
        "PYTEST_ADDOPTS",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(ARGS_ENV, json.dumps(connect_args))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    )
    return Suite(pytester, monkeypatch)


def _header(result: pytest.RunResult) -> str:
    (line,) = [text for text in result.outlines if text.startswith("guarddb: installed")]
    return line


def _without(suite: Suite, module: str) -> dict[str, str]:
    """The environment of a run in which ``module`` (MySQLdb, pymysql) cannot be imported."""
    hidden = hiding_driver(suite.path, module)
    return {"PYTHONPATH": os.pathsep.join([hidden, os.environ["PYTHONPATH"]])}


def test_swallowed_sharing_passes_plain_and_fails_strict_naming_both_sites(suite):
    suite.write(test_app=TEST_APP)

    plain = suite.run(EXPECTED_DRIVER="MySQLdb")  # the plugin is loaded, but not asked
    plain.assert_outcomes(passed=2)
    assert not any(line.startswith("guarddb") for line in plain.outlines)

    strict = suite.run("--guarddb=strict", EXPECTED_DRIVER="guarddb")
    strict.assert_outcomes(passed=1, failed=1)
    out = strict.stdout.str()
    assert "guarddb: 5 guard violations during this test, which would have passed" in out
    assert re.search(r"ThreadOwnershipError, 5 times, in threads? square_\d", out)
    # Both sites: where the connection was opened, where the pool thread used it.
    assert f"connection opened at: {suite.app}:{suite.connect_line}" in out
    assert f"violating call at:    {suite.app}:{suite.violation_line}" in out
    # The violating stack, down to the application's own line.
    stack = out[out.index("stack of the first") : out.index("Captured log call")]
    assert re.search(
        rf'File "{re.escape(str(suite.app))}", line {suite.violation_line}, in square', stack
    )
    assert 'cursor.execute("SELECT %s * %s", (n, n))' in stack
    assert os.path.join(PACKAGE_ROOT, "guarddb") not in stack  # guarddb's own frames left out
    # The session's summary names the test.
    assert "test_app.py::test_squares (5)" in out


def test_a_pymysql_suite_s_swallowed_sharing_fails_strict_and_a_clean_one_passes(suite):
    suite.write(pmapp=PYMYSQL_APP, test_pmapp=TEST_PYMYSQL_APP)
    app = suite.path / "pmapp.py"
    connect_line, violation_line = (
        suite.line("pmapp.py", marker) for marker in ("connect-site", "violation-site")
    )

    plain = suite.run(EXPECTED_DRIVER="pymysql")  # plain PyMySQL: every test passes
    plain.assert_outcomes(passed=3)

    strict = suite.run("--guarddb=strict", EXPECTED_DRIVER="guarddb")
    strict.assert_outcomes(passed=2, failed=1)  # the clean code passes, guarded
    assert _header(strict) == (
        "guarddb: installed as MySQLdb and pymysql, default mode strict (from --guarddb)"
    )
    out = strict.stdout.str()
    assert "guarddb: 5 guard violations during this test, which would have passed" in out
    assert re.search(r"\[1\] ThreadOwnershipError, 5 times, in threads? square_\d", out)
    assert f"connection opened at: {app}:{connect_line}" in out
    assert f"violating call at:    {app}:{violation_line}" in out
    stack = out[out.index("stack of the first") : out.index("Captured log call")]
    assert re.search(rf'File "{re.escape(str(app))}", line {violation_line}, in square', stack)
    assert os.path.join(PACKAGE_ROOT, "guarddb") not in stack
    assert "test_pmapp.py::test_squares (5)" in out
    assert "test_each_thread_its_own_connection" not in out  # passed, nothing to report


def test_both_drivers_in_one_suite(suite):
    suite.write(
        pmapp=PYMYSQL_APP,
        test_both="""
        import MySQLdb
        import pymysql

        import app
        import pmapp


        def test_each_violation_is_its_driver_s(guarddb_violations):
            assert app.squares(2) == [None, None]
            assert pmapp.squares(3) == [None, None, None]
            by_file = {app.__file__: [], pmapp.__file__: []}
            for violation in guarddb_violations:
                assert violation.kind == "ThreadOwnershipError"
                by_file[violation.connection_site.rsplit(":", 1)[0]].append(violation.error)
            assert len(by_file[app.__file__]) == 2 and len(by_file[pmapp.__file__]) == 3
            for error in by_file[app.__file__]:
                assert isinstance(error, MySQLdb.ProgrammingError)
                assert not isinstance(error, pymysql.err.ProgrammingError)
            for error in by_file[pmapp.__file__]:
                assert isinstance(error, pymysql.err.ProgrammingError)
                assert not isinstance(error, MySQLdb.ProgrammingError)


        def test_both_fail_the_test():
            app.squares(2)
            pmapp.squares(3)
        """,
    )
    result = suite.run("--guarddb=strict")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_both_fail_the_test _*",
            "guarddb: 5 guard violations during this test, which would have passed*",
            "[[]1[]] ThreadOwnershipError, 3 times, in thread* square_*",
            f"    connection opened at: {suite.path / 'pmapp.py'}:"
            f"{suite.line('pmapp.py', 'connect-site')}",
            "[[]2[]] ThreadOwnershipError, 2 times, in thread* square_*",
            f"    connection opened at: {suite.app}:{suite.connect_line}",
        ],
        consecutive=False,
    )


@pytest.mark.parametrize("hidden", ["MySQLdb", "pymysql"])
def test_with_one_driver_installed_the_plugin_guards_that_one(suite, hidden):
    """mysqlclient alone, PyMySQL alone: the one installed is guarded, the other left alone."""
    if hidden == "MySQLdb":  # PyMySQL alone
        suite.write(pmapp=PYMYSQL_APP, test_pmapp=TEST_PYMYSQL_APP)
        installed, left_alone = "pymysql", "MySQLdb left alone: mysqlclient is not installed"
        outcomes = {"passed": 2, "failed": 1}
    else:  # mysqlclient alone
        suite.write(test_app=TEST_APP)
        installed, left_alone = "MySQLdb", "pymysql left alone: PyMySQL is not installed"
        outcomes = {"passed": 1, "failed": 1}
    result = suite.run("--guarddb=strict", EXPECTED_DRIVER="guarddb", **_without(suite, hidden))
    result.assert_outcomes(**outcomes)
    assert _header(result) == (
        f"guarddb: installed as {installed}, default mode strict (from --guarddb)"
    )
    result.stdout.fnmatch_lines([f"guarddb: {left_alone} (No module named '{hidden}')"])
    assert "guarddb: 5 guard violations during this test, which would have passed" in (
        result.stdout.str()
    )


def test_marker_sets_the_mode_of_one_test(suite):
    suite.write(
        test_marker="""
        import guarddb
        import pytest

        import app


        @pytest.mark.guarddb(mode="strict")
        def test_marked_strict():
            assert guarddb.default_mode() == "strict"
            assert len(app.squares(3)) == 3


        def test_unmarked_runs_in_the_session_mode():
            assert guarddb.default_mode() == "exclusive"
            assert app.squares(3) == [0, 1, 4]  # handing over one at a time is fine here


        @pytest.mark.guarddb(mode="no-such-mode")
        def test_bad_mode():
            pass
        """
    )
    result = suite.run("--guarddb=exclusive")
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at setup of test_bad_mode _*",
            "@pytest.mark.guarddb: guard='no-such-mode' is not a guarddb mode*",
            "*_ test_marked_strict _*",
            "guarddb: 3 guard violations during this test, which would have passed*",
        ],
        consecutive=False,
    )


def test_with_the_plugin_off_only_the_marker_and_the_fixture_watch(suite):
    suite.write(
        test_off="""
        import MySQLdb
        import guarddb
        import pytest

        import app


        def test_nothing_installed():
            assert MySQLdb.Connection.__module__.split(".")[0] == "MySQLdb"
            assert guarddb.default_mode() == "exclusive"


        def test_unwatched_swallowed_violations_pass():
            assert app.squares(2, db=guarddb, guard="strict") == [None, None]


        @pytest.mark.guarddb
        def test_bare_marker_watches_in_strict_mode():
            assert guarddb.default_mode() == "strict"
            app.squares(2, db=guarddb)


        def test_fixture_works_too(guarddb_violations):
            app.squares(2, db=guarddb, guard="strict")
            assert [v.kind for v in guarddb_violations] == ["ThreadOwnershipError"] * 2
        """
    )
    result = suite.run()
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_bare_marker_watches_in_strict_mode _*",
            "guarddb: 2 guard violations during this test, which would have passed*",
        ]
    )


def test_with_the_plugin_off_pymysql_s_own_install_as_mysqldb_works(suite):
    """A PyMySQL project in a venv that has mysqlclient too (Django's PyMySQL route).

    Loading the plugin must not import mysqlclient: PyMySQL's install_as_MySQLdb()
    replaces the MySQLdb module only, and an imported mysqlclient's submodules
    (MySQLdb.converters, MySQLdb.constants) would stay in its place.
    """
    suite.write(
        conftest="""
        import sys

        BEFORE = sorted(m for m in sys.modules if m.split(".")[0] == "MySQLdb")

        import pymysql

        pymysql.install_as_MySQLdb()
        """,
        test_pymysql_as_mysqldb="""
        import json
        import os

        import MySQLdb
        import MySQLdb.converters
        import pymysql
        from MySQLdb.constants import CLIENT

        import conftest


        def test_mysqldb_is_pymysql_throughout():
            assert conftest.BEFORE == []
            assert MySQLdb is pymysql
            assert MySQLdb.converters is pymysql.converters
            assert CLIENT is pymysql.constants.CLIENT
            args = json.loads(os.environ["GUARDDB_PLUGIN_TEST_CONNECT_ARGS"])
            conn = MySQLdb.connect(**args, conv=MySQLdb.converters.conversions.copy())
            cursor = conn.cursor()
            cursor.execute("SELECT CAST(1.5 AS DECIMAL(3, 1)), DATE('2026-12-01')")
            assert [type(value).__name__ for value in cursor.fetchone()] == ["Decimal", "date"]
            conn.close()
        """,
    )
    result = suite.run()
    result.assert_outcomes(passed=1)


def test_the_fixture_takes_responsibility_for_the_test_s_violations(suite):
    suite.write(
        test_fixture=f"""
        import MySQLdb

        import app


        def test_inspects_its_violations(guarddb_violations):
            assert app.squares(3) == [None, None, None]
            assert len(guarddb_violations) == 3
            first = guarddb_violations[0]
            assert first.kind == "ThreadOwnershipError"
            assert first.connection_site.endswith("app.py:{suite.connect_line}")
            assert first.site.endswith("app.py:{suite.violation_line}")
            assert first.thread.startswith("square")
            assert isinstance(first.error, MySQLdb.ProgrammingError)
            assert any("cursor.execute" in frame for frame in first.stack)


        def test_empty_without_violations(guarddb_violations):
            assert guarddb_violations == []


        def test_own_failure_keeps_its_report_and_shows_the_violations():
            app.squares(1)
            assert False, "the test's own failure"
        """
    )
    result = suite.run("--guarddb=strict")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E       AssertionError: the test's own failure",
            "*- Captured guarddb violations call -*",
            "guarddb: 1 guard violation during this test:",
        ],
        consecutive=False,
    )


def test_setup_teardown_forked_children_and_collection_are_watched(suite):
    suite.write(
        test_phases="""
        import os

        import MySQLdb
        import pytest

        import app


        @pytest.fixture
        def bad_setup():
            app.squares(1)


        @pytest.fixture
        def bad_teardown():
            yield
            app.squares(1)


        def test_setup_violation(bad_setup):
            pass


        def test_teardown_violation(bad_teardown):
            pass


        def test_forked_child_swallows_its_error():
            conn = MySQLdb.connect(**app.CONNECT_ARGS)
            pid = os.fork()
            if pid == 0:
                try:
                    conn.cursor().execute("SELECT 1")  # fork-site
                except MySQLdb.OperationalError:
                    pass
                os._exit(0)
            os.waitpid(pid, 0)
            conn.cursor().execute("SELECT 1")  # the parent's connection is fine
            conn.close()


        def test_the_fixture_sees_forked_children_at_once(guarddb_violations):
            conn = MySQLdb.connect(**app.CONNECT_ARGS)
            pid = os.fork()
            if pid == 0:
                try:
                    conn.cursor().execute("SELECT 2")  # the child's statement
                except MySQLdb.OperationalError:
                    pass
                os._exit(0)
            os.waitpid(pid, 0)
            assert [(v.kind, v.pid) for v in guarddb_violations] == [
                ("ForkedConnectionError", pid)
            ]
            (violation,) = guarddb_violations
            assert violation.site.startswith(__file__ + ":")
            assert violation.stack[-1].rstrip().endswith("# the child's statement")
            conn.close()
        """,
        test_collection="""
        import app

        app.squares(1)  # at import: outside any test


        def test_nothing():
            pass
        """,
    )
    result = suite.run("--guarddb=strict")
    result.assert_outcomes(passed=3, failed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_setup_violation*",
            "guarddb: 1 guard violation during the setup of this test, which would have passed*",
            "*ERROR at teardown of test_teardown_violation*",
            "guarddb: 1 guard violation during its teardown, which would have passed*",
            "*_ test_forked_child_swallows_its_error _*",
            "[[]1[]] ForkedConnectionError, once, in thread MainThread (pid *",
            "*= guarddb =*",
            "guarddb: 1 guard violation outside any test*",
        ],
        consecutive=False,
    )
    fork_site = next(
        n for n, text in enumerate(result.stdout.lines) if "ForkedConnectionError, once" in text
    )
    assert result.stdout.lines[fork_site + 2].endswith(
        f"test_phases.py:{suite.line('test_phases.py', 'fork-site')}"
    )


def test_ini_option_and_environment_turn_it_on(suite):
    suite.write(test_app=TEST_APP)
    suite.pytester.makeini("[pytest]\nguarddb = strict\n")
    by_ini = suite.run(EXPECTED_DRIVER="guarddb")
    by_ini.assert_outcomes(passed=1, failed=1)
    assert _header(by_ini).endswith("default mode strict (from the ini option guarddb)")

    (suite.path / "tox.ini").unlink()
    by_env = suite.run(EXPECTED_DRIVER="guarddb", GUARDDB_MODE="strict")
    by_env.assert_outcomes(passed=1, failed=1)
    assert _header(by_env).endswith("default mode strict (from GUARDDB_MODE)")


def test_command_line_over_environment_over_ini_and_bad_modes(suite):
    suite.write(test_app=TEST_APP)
    suite.pytester.makeini("[pytest]\nguarddb = strict\n")
    option_wins = suite.run("--guarddb=exclusive", EXPECTED_DRIVER="guarddb", GUARDDB_MODE="strict")
    option_wins.assert_outcomes(passed=2)
    assert _header(option_wins).endswith("default mode exclusive (from --guarddb)")

    env_wins = suite.run(EXPECTED_DRIVER="guarddb", GUARDDB_MODE="exclusive")
    env_wins.assert_outcomes(passed=2)
    assert _header(env_wins).endswith("default mode exclusive (from GUARDDB_MODE)")

    bad = suite.run("--guarddb=sometimes")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--guarddb='sometimes' is not a guarddb mode*"])


def test_the_pytest11_entry_point_is_registered(pytester, monkeypatch):
    try:
        importlib.metadata.distribution("guarddb")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "guarddb is not installed as a distribution (PYTHONPATH=src): its pytest11 "
            "entry point exists only once it is installed (CI installs the wheel)"
        )
    entries = [entry for entry in pytest11_entry_points() if entry.name == "guarddb"]
    assert [entry.value for entry in entries] == ["guarddb.tools.pytest_plugin"]
    assert entries[0].load() is guarddb.tools.pytest_plugin
    # And pytest loads it by itself: its option is there without -p.
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    result = pytester.runpytest_subprocess("--help", timeout=INNER_TIMEOUT)
    result.stdout.fnmatch_lines(["*--guarddb=MODE*"])


def test_report_format_groups_and_keeps_the_first_stack():
    stack = ('  File "/app/x.py", line 3, in f\n    cursor.execute(q)\n',)
    make = guarddb.Violation
    violations = [
        make(
            "ThreadOwnershipError", "first", "/app/x.py:1", "/app/x.py:3", "strict", "T1", 7, stack
        ),
        make("ThreadOwnershipError", "second", "/app/x.py:1", "/app/x.py:3", "strict", "T2", 7),
        make("ForkedConnectionError", "child", "/app/x.py:1", "/app/x.py:9", "exclusive", "M", 8),
    ]
    text = guarddb.tools.pytest_plugin.format_violations(violations, "call", failing=True)
    assert text.splitlines()[0].startswith("guarddb: 3 guard violations during this test, which")
    assert text.index("[1] ThreadOwnershipError, 2 times, in threads T1, T2 (pid 7)") < text.index(
        "[2] ForkedConnectionError, once, in thread M (pid 8)"
    )
    assert "    first\n" in text and "second" not in text
    assert textwrap.indent(stack[0].rstrip(), "    ") in text


def test_a_forked_child_s_violation_outside_watched_tests_is_no_later_test_s(suite):
    # With the plugin off, once a test has asked for the fixture, a test that forks (and
    # is not watched) leaves its child's violation in the spool the children write to; a
    # later test that asks for the fixture must not find it among its own.
    suite.write(
        test_fork_then_fixture=f"""
        import json
        import os

        import guarddb


        def test_first_watched(guarddb_violations):
            assert list(guarddb_violations) == []


        def test_a_fork_outside_any_watch():
            conn = guarddb.connect(**json.loads(os.environ["{ARGS_ENV}"]))
            pid = os.fork()
            if pid == 0:
                try:
                    conn.cursor().execute("SELECT 1")  # ForkedConnectionError, reported
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            conn.close()


        def test_later(guarddb_violations):
            assert list(guarddb_violations) == []
        """
    )
    suite.run().assert_outcomes(passed=3)
