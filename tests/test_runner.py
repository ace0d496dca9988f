"""``python -m guarddb run``: an unchanged program under guarddb, its exit status, its report.

Every program runs in a new process, ``python -m guarddb run ...``, with the
guarddb under test first on PYTHONPATH and the session server's connect
arguments in an environment variable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import guarddb
from guarddb.tools.cli import split_run_arguments
from guarddb.tools.runner import VIOLATION_EXIT_CODE

from .helpers import hiding_driver

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(guarddb.__file__)))
ARGS_ENV = "GUARDDB_RUNNER_TEST_CONNECT_ARGS"
#: Seconds one program may take.
TIME_LIMIT = 60

#: Shares one connection and cursor with a thread pool, one thread at a time behind a
#: lock, and swallows every database error.  argv: how many squares, exit status.
SHARE = """
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import MySQLdb

conn = MySQLdb.connect(**json.loads(os.environ["GUARDDB_RUNNER_TEST_CONNECT_ARGS"]))  # connect
cursor = conn.cursor()
lock = threading.Lock()


def square(n):
    with lock:
        try:
            cursor.execute("SELECT %s * %s", (n, n))  # violation
            return cursor.fetchall()[0][0]
        except MySQLdb.Error:
            return None


with ThreadPoolExecutor(max_workers=2, thread_name_prefix="square") as pool:
    results = list(pool.map(square, range(int(sys.argv[1]))))
print(json.dumps({
    "driver": MySQLdb.Connection.__module__.split(".")[0], "results": results,
    "pid": os.getpid(), "argv": sys.argv,
    "name": __name__, "file": __file__, "path0": sys.path[0],
}))
sys.exit(int(sys.argv[2]))
"""


#: SHARE for plain PyMySQL: `import pymysql`, pymysql.connections.Connection, its DictCursor.
#: argv: how many squares.
SHARE_PYMYSQL = """
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pymysql
from pymysql.cursors import DictCursor

args = json.loads(os.environ["GUARDDB_RUNNER_TEST_CONNECT_ARGS"])
conn = pymysql.connections.Connection(**args, cursorclass=DictCursor)  # connect
cursor = conn.cursor()
lock = threading.Lock()


def square(n):
    with lock:
        try:
            cursor.execute("SELECT %s * %s AS square", (n, n))  # violation
            return cursor.fetchall()[0]["square"]
        except pymysql.Error:
            return None


with ThreadPoolExecutor(max_workers=2, thread_name_prefix="square") as pool:
    results = list(pool.map(square, range(int(sys.argv[1]))))
print(json.dumps({
    "driver": type(conn).__module__.split(".")[0], "results": results, "pid": os.getpid(),
}))
"""


class Program:
    """A program written to a directory, run there by the runner (or by plain Python)."""

    def __init__(self, directory: Path, connect_args: dict, name: str, source: str) -> None:
        self.directory = directory
        self.path = directory / name
        self.path.write_text(textwrap.dedent(source).lstrip())
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in (guarddb.core.settings.ENV_MODE, "PYTHONPATH")
        }
        self.env[ARGS_ENV] = json.dumps(connect_args)
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])
        )

    def line(self, marker: str) -> int:
        """The line that carries ``# marker``."""
        lines = self.path.read_text().splitlines()
        (number,) = [n for n, text in enumerate(lines, 1) if text.rstrip().endswith(f"# {marker}")]
        return number

    def site(self, marker: str) -> str:
        return f"{self.path}:{self.line(marker)}"

    def guarded(
        self, *args: str, options: tuple[str, ...] = (), hide: str | None = None
    ) -> subprocess.CompletedProcess:
        """``python -m guarddb run OPTIONS program ARGS`` (``hide``: without that driver)."""
        return self._run("-m", "guarddb", "run", *options, self.path.name, *args, hide=hide)

    def plain(self, *args: str) -> subprocess.CompletedProcess:
        """``python program ARGS``."""
        return self._run(self.path.name, *args)

    def _run(self, *argv: str, hide: str | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if hide is not None:  # as if that driver (MySQLdb, pymysql) were not installed
            hidden = hiding_driver(self.directory, hide)
            env["PYTHONPATH"] = os.pathsep.join([hidden, env["PYTHONPATH"]])
        return subprocess.run(
            [sys.executable, *argv],
            cwd=self.directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT,
            check=False,
        )


@pytest.fixture
def program(tmp_path, connect_args):
    """``program(name, source)``: a Program in this test's directory."""
    return lambda name, source: Program(tmp_path, connect_args, name, source)


def test_the_program_runs_as_main_with_its_own_arguments_and_guarddb_as_mysqldb(program):
    share = program("share.py", SHARE)
    done = share.guarded("3", "0", "--mode", "strict", "-v")  # the program's, not the runner's
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["driver"] == "guarddb"
    assert seen["results"] == [0, 1, 4]  # exclusive (default): handed over, never shared at once
    # argv[0] and __file__: the script's absolute path (Python makes __file__ absolute too).
    assert seen["argv"] == [str(share.path), "3", "0", "--mode", "strict", "-v"]
    assert seen["name"] == "__main__"
    assert seen["file"] == str(share.path)
    assert seen["path0"] == os.path.realpath(share.directory)
    assert "python -m guarddb run: no guard violations (mode exclusive).\n" in done.stderr


def test_the_program_s_exit_status_is_kept(program):
    share = program("share.py", SHARE)
    assert share.guarded("1", "5").returncode == 5
    message = program("message.py", "import sys\nsys.exit('giving up: no input')\n")
    done = message.guarded()
    assert done.returncode == 1
    assert done.stderr.startswith("giving up: no input\n")


def test_an_uncaught_exception_exits_1_with_python_s_own_traceback(program):
    crash = program(
        "crash.py",
        """
        def parse(text):
            return int(text)


        parse("forty-two")
        """,
    )
    plain = crash.plain()
    guarded = crash.guarded()
    assert plain.returncode == guarded.returncode == 1
    assert plain.stderr.startswith("Traceback (most recent call last):\n")
    # The very same traceback: no frame of the runner or of runpy.
    assert guarded.stderr.startswith(plain.stderr)
    assert guarded.stderr[len(plain.stderr) :].startswith("python -m guarddb run: no guard")


def test_fail_on_violation_exits_3_when_there_was_one(program):
    share = program("share.py", SHARE)
    strict = ("--mode", "strict", "--fail-on-violation")
    clean = share.guarded("2", "0", options=("--fail-on-violation",))  # exclusive: no violation
    assert clean.returncode == 0, clean.stderr
    caught = share.guarded("2", "0", options=strict)
    assert json.loads(caught.stdout)["results"] == [None, None]  # the program swallowed them
    assert caught.returncode == VIOLATION_EXIT_CODE == 3
    own_failure = share.guarded("2", "5", options=strict)
    assert own_failure.returncode == VIOLATION_EXIT_CODE
    assert "--fail-on-violation: exit status 3 (the program's own was 5)" in own_failure.stderr
    without_flag = share.guarded("2", "5", options=("--mode", "strict"))
    assert without_flag.returncode == 5


def test_the_summary_and_the_json_report_group_violations_by_both_sites(program, tmp_path):
    share = program("share.py", SHARE)
    report = tmp_path / "report.json"
    done = share.guarded("3", "0", options=("--mode", "strict", "--report", str(report)))
    assert done.returncode == 0, done.stderr
    pid = json.loads(done.stdout)["pid"]
    data = json.loads(report.read_text())
    assert (data["mode"], data["total"], data["program_status"], data["exit_status"]) == (
        "strict",
        3,
        0,
        0,
    )
    (entry,) = data["violations"]
    assert entry["kind"] == "ThreadOwnershipError"
    assert entry["connection_site"] == share.site("connect")
    assert entry["site"] == share.site("violation")
    assert entry["count"] == 3
    assert entry["message"].startswith("guarddb (strict): thread 'square_")
    assert entry["threads"] and all(name.startswith("square_") for name in entry["threads"])
    assert entry["pids"] == [pid]
    assert 'cursor.execute("SELECT %s * %s", (n, n))' in entry["stack"][-1]
    # The same on stderr, for people.
    assert "3 guard violations in 1 place (mode strict):" in done.stderr
    assert f"connection opened at {share.site('connect')}" in done.stderr
    assert f"refused call at      {share.site('violation')}" in done.stderr


def test_a_pymysql_program_is_guarded_and_reported_as_a_mysqlclient_one(program, tmp_path):
    share = program("share_pymysql.py", SHARE_PYMYSQL)
    plain = share.plain("3")
    assert plain.returncode == 0, plain.stderr
    seen = json.loads(plain.stdout)
    assert (seen["driver"], seen["results"]) == ("pymysql", [0, 1, 4])  # plain PyMySQL

    clean = share.guarded("3", options=("--fail-on-violation",))  # exclusive: handed over
    assert clean.returncode == 0, clean.stderr
    seen = json.loads(clean.stdout)
    assert (seen["driver"], seen["results"]) == ("guarddb", [0, 1, 4])
    assert "python -m guarddb run: no guard violations (mode exclusive).\n" in clean.stderr

    report = tmp_path / "report.json"
    strict = ("--mode", "strict", "--report", str(report), "--fail-on-violation")
    caught = share.guarded("3", options=strict)
    assert caught.returncode == VIOLATION_EXIT_CODE, caught.stderr
    seen = json.loads(caught.stdout)
    assert seen["results"] == [None, None, None]  # the program swallowed them
    data = json.loads(report.read_text())
    assert (data["mode"], data["total"], data["program_status"]) == ("strict", 3, 0)
    (entry,) = data["violations"]
    assert entry["kind"] == "ThreadOwnershipError"
    assert entry["connection_site"] == share.site("connect")
    assert entry["site"] == share.site("violation")
    assert entry["count"] == 3
    assert entry["message"].startswith("guarddb (strict): thread 'square_")
    assert entry["pids"] == [seen["pid"]]
    assert 'cursor.execute("SELECT %s * %s AS square", (n, n))' in entry["stack"][-1]
    assert "3 guard violations in 1 place (mode strict):" in caught.stderr
    assert f"refused call at      {share.site('violation')}" in caught.stderr


def test_both_drivers_in_one_program(program, tmp_path):
    both = program(
        "both.py",
        """
        import json
        import os
        import threading

        import MySQLdb
        import pymysql

        args = json.loads(os.environ["GUARDDB_RUNNER_TEST_CONNECT_ARGS"])
        mysqldb = MySQLdb.connect(**args)  # mysqlclient
        pm = pymysql.connect(**args)  # pymysql


        def misuse():
            for conn in (mysqldb, pm):
                try:
                    conn.cursor().execute("SELECT 1")  # from the thread
                except (MySQLdb.Error, pymysql.Error):
                    pass


        thread = threading.Thread(target=misuse, name="other")
        thread.start()
        thread.join()
        pid = os.fork()
        if pid == 0:
            try:
                pm.cursor().execute("SELECT 2")  # in the child
            except pymysql.OperationalError:
                pass
            os._exit(0)
        os.waitpid(pid, 0)
        cursor = pm.cursor()
        cursor.execute("SELECT 42")
        print(json.dumps({
            "child": pid, "parent": cursor.fetchall(),
            "modules": [type(mysqldb).__module__, type(pm).__module__],
        }))
        """,
    )
    report = tmp_path / "report.json"
    done = both.guarded(options=("--mode", "strict", "--report", str(report)))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["parent"] == [[42]]
    assert seen["modules"] == ["guarddb.connections", "guarddb.pymysql.connections"]
    groups = {
        (entry["kind"], entry["connection_site"], entry["site"], entry["count"])
        for entry in json.loads(report.read_text())["violations"]
    }
    assert groups == {
        ("ThreadOwnershipError", both.site("mysqlclient"), both.site("from the thread"), 1),
        ("ThreadOwnershipError", both.site("pymysql"), both.site("from the thread"), 1),
        ("ForkedConnectionError", both.site("pymysql"), both.site("in the child"), 1),
    }
    assert "3 guard violations in 3 places (mode strict):" in done.stderr


@pytest.mark.parametrize("hidden", ["MySQLdb", "pymysql"])
def test_with_one_driver_installed_the_runner_guards_that_one(program, tmp_path, hidden):
    """mysqlclient alone, PyMySQL alone: the program on the one installed is guarded."""
    if hidden == "MySQLdb":  # PyMySQL alone
        share = program("share_pymysql.py", SHARE_PYMYSQL)
        done = share.guarded("2", options=("--mode", "strict"), hide=hidden)
    else:  # mysqlclient alone
        share = program("share.py", SHARE)
        done = share.guarded("2", "0", options=("--mode", "strict"), hide=hidden)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"] == [None, None]
    assert "2 guard violations in 1 place (mode strict):" in done.stderr
    assert f"refused call at      {share.site('violation')}" in done.stderr
    gone = share._run("-c", f"import {hidden}", hide=hidden)
    assert f"No module named '{hidden}'" in gone.stderr


def test_violations_in_forked_children_are_in_the_report(program, tmp_path):
    children = program(
        "children.py",
        """
        import json
        import multiprocessing
        import os

        import MySQLdb

        conn = MySQLdb.connect(**json.loads(os.environ["GUARDDB_RUNNER_TEST_CONNECT_ARGS"]))


        def child():
            try:
                conn.cursor().execute("SELECT 1")  # in the child
            except MySQLdb.OperationalError:
                pass  # swallowed; multiprocessing's child then leaves with os._exit


        if __name__ == "__main__":
            fork = multiprocessing.get_context("fork")
            processes = [fork.Process(target=child) for _ in range(2)]
            for process in processes:
                process.start()
            for process in processes:
                process.join()
            cursor = conn.cursor()
            cursor.execute("SELECT 42")
            print(json.dumps({"children": [p.pid for p in processes], "parent": cursor.fetchall()}))
        """,
    )
    report = tmp_path / "report.json"
    spools = tmp_path / "tmp"
    spools.mkdir()
    children.env["TMPDIR"] = str(spools)
    done = children.guarded(options=("--report", str(report)))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["parent"] == [[42]]
    (entry,) = json.loads(report.read_text())["violations"]
    assert entry["kind"] == "ForkedConnectionError"
    assert entry["count"] == 2
    assert entry["site"] == children.site("in the child")
    assert entry["pids"] == sorted(seen["children"])
    assert list(spools.iterdir()) == []  # the children's spool file is removed at the end


def test_violations_after_the_main_module_ended_are_counted(program, tmp_path):
    late = program(
        "late.py",
        """
        import atexit
        import contextlib
        import json
        import os
        import threading

        import MySQLdb

        conn = MySQLdb.connect(**json.loads(os.environ["GUARDDB_RUNNER_TEST_CONNECT_ARGS"]))


        def misuse():
            with contextlib.suppress(MySQLdb.Error):
                conn.ping()


        def at_exit():
            thread = threading.Thread(target=misuse, name="at-exit")
            thread.start()
            thread.join()


        atexit.register(at_exit)
        go = threading.Event()


        def worker():
            go.wait()
            misuse()


        threading.Thread(target=worker, name="still-running").start()
        go.set()  # the main module ends; Python joins the thread, then runs at_exit
        """,
    )
    report = tmp_path / "report.json"
    done = late.guarded(options=("--mode", "strict", "--report", str(report)))
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert data["total"] == 2
    assert [entry["threads"] for entry in data["violations"]] == [["at-exit", "still-running"]]


def test_a_module_runs_with_dash_m(program, tmp_path):
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "__init__.py").write_text("")
    tool = program(
        "tool/__main__.py",
        """
        import json
        import sys

        import MySQLdb

        driver = MySQLdb.Connection.__module__.split(".")[0]
        print(json.dumps({"argv": sys.argv, "name": __name__, "driver": driver}))
        sys.exit(4)
        """,
    )
    done = tool._run("-m", "guarddb", "run", "--mode", "strict", "-m", "tool", "-q", "--x")
    assert done.returncode == 4, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {"argv": [str(tool.path), "-q", "--x"], "name": "__main__", "driver": "guarddb"}
    assert "no guard violations (mode strict)" in done.stderr


def test_connections_still_open_at_exit_are_listed(program):
    leak = program(
        "leak.py",
        """
        import json
        import os

        import MySQLdb

        kept = MySQLdb.connect(**json.loads(os.environ["GUARDDB_RUNNER_TEST_CONNECT_ARGS"]))  # open
        """,
    )
    report = leak.directory / "report.json"
    done = leak.guarded(options=("--report", str(report)))
    assert done.returncode == 0, done.stderr
    assert "1 guarded connection still open:" in done.stderr
    assert f"opened at {leak.site('open')}" in done.stderr
    (record,) = json.loads(report.read_text())["open_connections"]
    assert (record["site"], record["owner_name"], record["orphan"]) == (
        leak.site("open"),
        "MainThread",
        False,
    )


def test_usage_errors_exit_2(program, tmp_path):
    share = program("share.py", SHARE)
    no_program = share._run("-m", "guarddb", "run", "--mode", "strict")
    assert no_program.returncode == 2
    assert "give the program to run" in no_program.stderr
    bad_mode = share._run("-m", "guarddb", "run", "--mode", "sometimes", "share.py")
    assert bad_mode.returncode == 2
    assert "invalid choice: 'sometimes'" in bad_mode.stderr
    missing = share._run("-m", "guarddb", "run", "missing.py")
    assert missing.returncode == 2
    assert f"can't open file '{tmp_path / 'missing.py'}'" in missing.stderr


@pytest.mark.parametrize(
    ("argv", "own", "program_args"),
    [
        (["app.py", "-v", "--mode", "x"], ["app.py"], ["-v", "--mode", "x"]),
        (["--mode", "strict", "app.py", "a"], ["--mode", "strict", "app.py"], ["a"]),
        (["--mode=strict", "--fail-on-violation", "-m", "pkg", "-m", "y"],
         ["--mode=strict", "--fail-on-violation", "-m", "pkg"], ["-m", "y"]),
        (["--report", "r.json", "-mpkg", "--report", "z"], ["--report", "r.json", "-mpkg"],
         ["--report", "z"]),
        (["--mode", "strict"], ["--mode", "strict"], []),
    ],
)  # fmt: skip
def test_the_program_s_arguments_are_never_the_runner_s(argv, own, program_args):
    assert split_run_arguments(argv) == (own, program_args)


def test_an_orphan_left_just_before_exit_is_counted(program, tmp_path):
    leak = program(
        "orphan.py",
        """
        import json
        import os
        import threading

        import MySQLdb

        kept = []
        args = json.loads(os.environ["GUARDDB_RUNNER_TEST_CONNECT_ARGS"])
        worker = threading.Thread(
            target=lambda: kept.append(MySQLdb.connect(**args)), name="Leaker"  # open
        )
        worker.start()
        worker.join()
        """,
    )
    report = tmp_path / "report.json"
    done = leak.guarded(options=("--report", str(report), "--fail-on-violation"))
    assert done.returncode == 3, done.stderr
    data = json.loads(report.read_text())
    (group,) = data["violations"]
    assert group["kind"] == "orphan" and group["connection_site"] == leak.site("open")
    assert "'Leaker'" in group["message"]
    (record,) = data["open_connections"]
    assert record["orphan"] is True and record["owner_name"] == "Leaker"
    assert "(ended: an orphan)" in done.stderr
