"""Process pools with a connection opened in the parent: on_fork="raise" and "reconnect".

multiprocessing (fork, forkserver), concurrent.futures.ProcessPoolExecutor, billiard
(Celery's fork of multiprocessing).  Each scenario runs in a fresh interpreter
(tests/mp_worker.py) with a time limit, its whole process group killed on timeout: a pool
that hangs fails its test, not the session.  Plain os.fork() is tests/test_fork.py's; here
only what it lacks (reconnect).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .helpers import child_pythonpath, in_forked_child

TESTS = Path(__file__).resolve().parent
#: Seconds a whole scenario may take before it counts as hung.
SCENARIO_TIMEOUT = 90.0
#: The pid guarddb's messages name as the process that used the connection.
MESSAGE_PID = re.compile(r"guarddb: process (\d+) ")

needs_forkserver = pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="the forkserver start method is not available on this platform",
)


def run_scenario(
    connect_args: dict[str, Any], scenario: str, on_fork: str, **env: str
) -> dict[str, Any]:
    """Run one tests/mp_worker.py scenario in a fresh interpreter; return what it printed."""
    environment = {
        **os.environ,
        # tests/ too: the forkserver of Python 3.11 imports its preload modules before it
        # applies the parent's sys.path, and skips one it cannot import without a word.
        "PYTHONPATH": child_pythonpath(str(TESTS)),
        "GUARDDB_TEST_CONNECT_ARGS": json.dumps(connect_args),
    }
    environment.pop("GUARDDB_ON_FORK", None)  # only what the test gives
    environment.update(env)
    # A session of its own: on a hang the pool's workers and the forkserver die too.
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "mp_worker.py"), scenario, on_fork],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=SCENARIO_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{scenario} ({on_fork}) hung for {SCENARIO_TIMEOUT}s:\n{err[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything left behind
    assert process.returncode == 0, f"{scenario} ({on_fork}) failed:\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def assert_forked_error(error: Any, parent_pid: int, refusal: str = "inherited across fork()"):
    """A ForkedConnectionError that came back intact from a child; returns the child's pid."""
    assert isinstance(error, dict), error
    assert error["error"] == "ForkedConnectionError", error
    assert error["module"] == "guarddb.errors"
    assert error["forked"] and error["operational"], error  # GuardError and OperationalError
    assert error["args0"] == 2006
    assert error["repickles"]
    assert refusal in error["message"], error["message"]
    child = int(MESSAGE_PID.search(error["message"]).group(1))
    assert child != parent_pid
    return child


def assert_parent_intact(result: dict[str, Any]) -> None:
    """The parent's session answered the same CONNECTION_ID() after the children ran."""
    assert isinstance(result["parent_session"], int)
    assert result["parent_session_after"] == result["parent_session"]


def assert_all_refused(result: dict[str, Any], workers: int = 2) -> None:
    """Every child got ForkedConnectionError, at least ``workers`` distinct children."""
    children = {assert_forked_error(e, result["parent_pid"]) for e in result["per_task"]}
    assert len(children) >= workers, children
    assert_parent_intact(result)


def assert_own_sessions(
    answers: list[dict[str, Any]], parent_session: int, parent_pid: int, workers: int = 2
) -> dict[int, int]:
    """Each child got its own answer from a session of its own: returns pid -> session."""
    sessions: dict[int, set[int]] = {}
    for n, answer in enumerate(answers):
        assert isinstance(answer, dict) and "error" not in answer, answer
        assert answer["echo"] == answer["n"] == n  # the child's own answer, not a sibling's
        assert answer["pid"] != parent_pid
        assert answer["session"] != parent_session
        sessions.setdefault(answer["pid"], set()).add(answer["session"])
    assert len(sessions) >= workers, sessions  # the barrier made every worker take part
    # A worker keeps the one session it opened; no two children share one.
    assert all(len(each) == 1 for each in sessions.values()), sessions
    by_pid = {pid: next(iter(each)) for pid, each in sessions.items()}
    assert len(set(by_pid.values())) == len(by_pid), by_pid
    return by_pid


def _billiard() -> None:
    pytest.importorskip("billiard", reason="billiard (Celery's multiprocessing) is not installed")


# -- fork: multiprocessing.Pool, ProcessPoolExecutor, billiard.Pool ---------------------


POOLS = [
    pytest.param("mp_fork_pool", id="multiprocessing.Pool"),
    pytest.param("executor_fork", id="ProcessPoolExecutor"),
    pytest.param("billiard_fork_pool", id="billiard.Pool"),
]


@pytest.mark.parametrize("scenario", POOLS)
def test_fork_pool_children_get_forked_connection_error(connect_args, scenario):
    if scenario.startswith("billiard"):
        _billiard()
    result = run_scenario(connect_args, scenario, "default")  # on_fork="raise" by default
    assert_all_refused(result)
    # Raised in the task and shipped by the pool's own error path, the child's traceback too.
    assert_forked_error(result["one"], result["parent_pid"])
    assert result["one"]["cause"].endswith("RemoteTraceback")  # _RemoteTraceback (futures)


@pytest.mark.parametrize(
    ("scenario", "on_fork", "env"),
    [
        pytest.param("mp_fork_pool", "reconnect", {}, id="multiprocessing.Pool"),
        pytest.param(
            "executor_fork", "env", {"GUARDDB_ON_FORK": "reconnect"}, id="ProcessPoolExecutor"
        ),
        pytest.param("billiard_fork_pool", "set_defaults", {}, id="billiard.Pool"),
    ],
)
def test_fork_pool_children_reconnect(connect_args, scenario, on_fork, env):
    if scenario.startswith("billiard"):
        _billiard()
    result = run_scenario(connect_args, scenario, on_fork, **env)
    workers = assert_own_sessions(
        result["per_task"], result["parent_session"], result["parent_pid"]
    )
    assert result["one"]["echo"] == 100
    assert result["one"]["session"] == workers[result["one"]["pid"]]
    assert_parent_intact(result)


# -- fork: Process -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp", "billiard"], ids=["multiprocessing", "billiard"])
def test_fork_process_children_get_the_error_and_close_harmlessly(connect_args, kind):
    if kind == "billiard":
        _billiard()
    result = run_scenario(connect_args, f"{kind}_fork_process", "raise")
    assert_all_refused(result)
    assert result["close"] == [None, None]  # closing the inherited connection: no error
    assert result["exitcodes"] == [0, 0]


@pytest.mark.parametrize("kind", ["mp", "billiard"], ids=["multiprocessing", "billiard"])
def test_fork_process_children_reconnect(connect_args, kind):
    if kind == "billiard":
        _billiard()
    result = run_scenario(connect_args, f"{kind}_fork_process", "reconnect")
    assert_own_sessions(result["per_task"], result["parent_session"], result["parent_pid"])
    assert result["close"] == [None, None]  # each closed its own new session
    assert result["exitcodes"] == [0, 0]
    assert_parent_intact(result)


# -- os.fork with reconnect (the rest of os.fork is tests/test_fork.py's) ----------------


def _session(conn) -> tuple[int, int]:
    cursor = conn.cursor()
    cursor.execute("SELECT CONNECTION_ID(), 6 * 7")
    ((number, answer),) = cursor.fetchall()
    return int(number), int(answer)


def test_os_fork_children_reconnect_each_to_a_session_of_their_own(connect):
    conn = connect(on_fork="reconnect", autocommit=True)
    parent = _session(conn)
    first = in_forked_child(lambda: [os.getpid(), *_session(conn), *_session(conn)])
    second = in_forked_child(lambda: [os.getpid(), *_session(conn)])
    assert first[1:3] == first[3:5]  # the child keeps the session it opened
    assert first[2] == second[2] == 42
    assert len({parent[0], first[1], second[1]}) == 3
    assert _session(conn) == parent


def test_os_fork_child_that_reconnects_and_exits_leaves_the_parent_alone(connect_args):
    # GUARDDB_ON_FORK, read at import; the child exits through the interpreter's shutdown.
    result = run_scenario(connect_args, "os_fork_exit", "env", GUARDDB_ON_FORK="reconnect")
    (answer,) = result["per_task"]
    assert answer["echo"] == 7 and answer["session"] != result["parent_session"], answer
    assert answer["pid"] != result["parent_pid"]
    assert result["child_exit_status"] == 0
    assert_parent_intact(result)


# -- forkserver ----------------------------------------------------------------------------


@needs_forkserver
def test_forkserver_children_do_not_inherit_and_open_their_own(connect_args):
    result = run_scenario(connect_args, "forkserver_own", "reconnect")
    assert not any(answer.pop("inherited") for answer in result["per_task"])
    assert_own_sessions(result["per_task"], result["parent_session"], result["parent_pid"])
    assert_parent_intact(result)


FORKSERVER_POOLS = [
    pytest.param("forkserver_preloaded", id="multiprocessing.Pool"),
    pytest.param("executor_forkserver_preloaded", id="ProcessPoolExecutor"),
]


def _forkserver_session_intact(result: dict[str, Any]) -> int:
    """The forkserver's session (opened at preload) is still there, idle; its pid."""
    (forkserver,) = result["preloaded_pids"]  # one forkserver made every child
    assert forkserver != result["parent_pid"]
    assert forkserver not in result["pids"]
    assert result["forkserver_session_after"] == ["Sleep"]
    assert_parent_intact(result)
    return int(forkserver)


@needs_forkserver
@pytest.mark.parametrize("scenario", FORKSERVER_POOLS)
def test_forkserver_preloaded_connection_raises_in_every_child(connect_args, scenario):
    result = run_scenario(connect_args, scenario, "default")
    forkserver = _forkserver_session_intact(result)
    children = {assert_forked_error(e, forkserver) for e in result["per_task"]}
    assert children <= set(result["pids"]) and len(children) >= 2
    # The message names the forkserver as the process that opened the connection.
    assert all(f"by process {forkserver}" in e["message"] for e in result["per_task"])


@needs_forkserver
@pytest.mark.parametrize("scenario", FORKSERVER_POOLS)
def test_forkserver_preloaded_connection_reconnects_in_every_child(connect_args, scenario):
    result = run_scenario(connect_args, scenario, "reconnect")
    _forkserver_session_intact(result)
    assert_own_sessions(result["per_task"], result["forkserver_session"], result["parent_pid"])
    assert result["parent_session"] not in {a["session"] for a in result["per_task"]}


# -- what reconnect refuses --------------------------------------------------------------


def test_reconnect_is_refused_for_an_open_transaction_or_unread_rows(connect_args):
    result = run_scenario(connect_args, "refused_then_reconnect", "reconnect")
    parent = result["parent_pid"]
    for error in result["in_transaction"]:
        assert_forked_error(error, parent, refusal="a transaction was open")
    assert result["rows_in_transaction"] == 1  # the parent's transaction, untouched
    assert_own_sessions(result["after_rollback"], result["parent_session"], parent)
    for error in result["unread_result"]:
        assert_forked_error(error, parent, refusal="unread")
    assert result["unread_rows"] == [1, 2]  # the parent reads its rows intact
    assert_parent_intact(result)


# -- plain mysqlclient, side by side -----------------------------------------------------


def test_children_closing_the_inherited_connection(connect_args):
    # A pool initializer that closes the inherited connection (Django's close_all() after
    # fork): plain mysqlclient sends COM_QUIT on the parent's socket.
    plain = run_scenario(connect_args, "close_in_children", "plain")
    assert plain["parent_session_after"]["args0"] in (2006, 2013), plain
    guarded = run_scenario(connect_args, "close_in_children", "guarddb")
    assert len(guarded["children"]) >= 1
    assert_parent_intact(guarded)
