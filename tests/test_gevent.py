"""gevent: greenlets are the application's threads (README "gevent").

Monkey patching is process-wide, so each scenario runs in a fresh interpreter
(tests/gevent_scenarios.py) with a time limit, its process group killed on timeout: a hub
that hangs (a greenlet blocking the OS thread its siblings need) fails one test, not the
session.  Most run in both import orders: gevent patched before ``import guarddb``, and
after it.

Nothing here asserts a duration.  Cooperative statements are shown to overlap by what the
server sees (10 sessions inside ``SLEEP()`` at once); that a wait does not block the OS
thread, by another greenlet making progress meanwhile (which no greenlet can while the
OS thread is blocked).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .helpers import child_pythonpath

TESTS = Path(__file__).resolve().parent
#: Seconds a whole scenario may take before it counts as hung.
SCENARIO_TIMEOUT = 60.0
#: gevent patched before ``import guarddb``, and after it.
ORDERS = ("before", "after")

needs_gevent = pytest.mark.skipif(
    importlib.util.find_spec("gevent") is None, reason="gevent is not installed"
)


def run_scenario(
    connect_args: dict[str, Any], name: str, order: str, keywords: Any = None, **env: str
) -> Any:
    """Run one tests/gevent_scenarios.py scenario in a fresh interpreter; return its JSON."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GUARDDB_")},  # only ours
        "PYTHONPATH": child_pythonpath(),
        "GUARDDB_TEST_CONNECT_ARGS": json.dumps(connect_args),
        **env,
    }
    command = [sys.executable, str(TESTS / "gevent_scenarios.py"), name, order]
    if keywords is not None:
        command.append(json.dumps(keywords))
    process = subprocess.Popen(
        command,
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
        pytest.fail(f"{name} ({order}) hung for {SCENARIO_TIMEOUT}s:\n{err[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything left behind
    assert process.returncode == 0, f"{name} ({order}) failed:\n{err[-3000:]}"
    assert "Exception ignored" not in err, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def greenlet_named(name: str) -> str:
    """How guarddb's messages name a running greenlet."""
    return rf"greenlet '{re.escape(name)}' \(id \d+\)"


# -- 1. every mode across greenlets, both import orders ------------------------------------


@needs_gevent
@pytest.mark.parametrize("order", ORDERS)
def test_exclusive_greenlets_sharing_a_cursor_get_an_error_never_wrong_rows(connect_args, order):
    # Plain mysqlclient hands every fetch another greenlet's rows, silently (DESIGN.md).
    seen = run_scenario(connect_args, "exclusive_shared_cursor", order)
    assert seen["wrong"] == 0
    assert seen["errors"], "no greenlet was refused"
    assert seen["right"] + len(seen["errors"]) == 8 * 5
    for refusal in seen["errors"]:
        assert refusal["type"] == "ConcurrentUseError", refusal
        assert re.match(
            r"guarddb \(exclusive\): greenlet 'Greenlet-\d+' \(id \d+\) called fetchall\(\) "
            r".*executed by greenlet 'Greenlet-\d+' \(id \d+\)",
            refusal["message"],
        ), refusal["message"]


@needs_gevent
@pytest.mark.parametrize("order", ORDERS)
def test_strict_lets_the_owner_greenlet_in_refuses_the_others_and_adopt_hands_over(
    connect_args, order
):
    seen = run_scenario(connect_args, "strict_owner", order)
    assert seen["owner_first"] == [[1]]
    refused = seen["intruder"]
    assert refused["type"] == "ThreadOwnershipError", refused
    assert re.search(
        rf"{greenlet_named('the-intruder')} called execute\(\).*which belongs to "
        rf"{greenlet_named('the-owner')}\.",
        refused["message"],
    ), refused["message"]
    assert seen["owner_after_refusal"] == [[2]]  # the owner itself, after the refusal
    assert seen["adopter"] == [[4]]  # adopt() made another greenlet the owner
    handed = seen["old_owner"]
    assert handed["type"] == "ThreadOwnershipError", handed
    # The adopter has ended since: nobody owns the connection now (a greenlet's id is
    # never given again, but a thread's is: strict mode treats both alike).
    assert re.search(
        r"which belonged to greenlet 'the-adopter' \(id \d+\), which ended: no thread owns "
        r"it now",
        handed["message"],
    ), handed["message"]


@needs_gevent
def test_the_main_greenlet_keeps_what_the_main_thread_owned_before_the_patch(connect_args):
    seen = run_scenario(connect_args, "main_greenlet_keeps_owner", "none")
    assert seen["greenlets"] is True
    assert seen["main"] == [[1]]
    assert seen["other"]["type"] == "ThreadOwnershipError"
    assert "which belongs to thread 'MainThread'" in seen["other"]["message"]


@needs_gevent
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    ("cursor", "cooperative"),
    [("Cursor", False), ("SSCursor", False), ("Cursor", True)],
    ids=["buffered", "unbuffered", "buffered-cooperative"],
)
def test_mutex_greenlets_sharing_a_cursor_each_get_their_own_rows(
    connect_args, order, cursor, cooperative
):
    seen = run_scenario(
        connect_args,
        "mutex_shared_cursor",
        order,
        {"cursor": cursor, "cooperative": cooperative},
    )
    assert seen["errors"] == []
    assert seen["wrong"] == 0
    assert seen["right"] == 8 * 40
    if cursor == "SSCursor" or cooperative:
        # The one inside yields while it holds the connection (unread rows, or a
        # statement waiting for the server): the others waited, by yielding too.
        # (A buffered statement never yields inside the guard: nobody has to wait.)
        assert seen["waits"] > 0


# -- 2. a dead greenlet's id() ------------------------------------------------------------


@needs_gevent
@pytest.mark.parametrize("order", ORDERS)
def test_a_new_greenlet_with_a_dead_owners_id_inherits_nothing(connect_args, order):
    seen = run_scenario(connect_args, "dead_greenlet_id_reused", order)
    assert seen["found"], f"no greenlet got the dead one's id() in {seen['attempts']} tries"
    assert seen["same_id"] is True
    refused = seen["refused"]
    assert refused["type"] == "ThreadOwnershipError", refused
    assert re.search(rf"{greenlet_named('same-id')} called execute\(\)", refused["message"])
    orphans = [v for v in seen["violations"] if v["kind"] == "orphan"]
    assert len(orphans) == 1, seen["violations"]
    assert "'dead-owner'" in orphans[0]["message"]
    # Reported while a greenlet with the same id() was running.
    assert seen["twin_alive_at_report"] is True


# -- 3. mutex: unbuffered results, timeouts, transactions ---------------------------------


@needs_gevent
@pytest.mark.parametrize("order", ORDERS)
def test_mutex_a_writer_greenlet_waits_for_a_readers_unbuffered_rows(connect_args, order):
    seen = run_scenario(connect_args, "mutex_sscursor_writer_waits", order)
    assert seen["writer"] == [[42]]  # waited: no PendingResultError, no 2014
    assert seen["log"] == ["reader read out", "writer executed"]
    assert seen["reader_rows"] == list(range(1, 201))
    assert seen["waits"] >= 1


@needs_gevent
@pytest.mark.parametrize("order", ORDERS)
def test_mutex_timeout_is_honoured_by_a_waiting_greenlet_without_blocking_the_hub(
    connect_args, order
):
    seen = run_scenario(connect_args, "mutex_timeout_greenlet", order, {"timeout": 0.3})
    waited = seen["waiter"]
    assert waited["type"] == "LockTimeoutError", waited
    assert re.match(
        rf"guarddb \(mutex\): {greenlet_named('Greenlet-1')} waited 0.3s .* held by "
        rf"{greenlet_named('Greenlet-0')}",
        waited["message"],
    ), waited["message"]
    # Another greenlet ran while it waited: the OS thread was not blocked.
    assert seen["ticks_during_wait"] > 0
    assert seen["after"] == [[7]]


@needs_gevent
@pytest.mark.parametrize("order", ORDERS)
def test_mutex_transaction_scope_keeps_a_greenlets_transaction_whole(connect_args, order):
    seen = run_scenario(connect_args, "mutex_transaction_scope", order, {"greenlets": 4})
    log = [tuple(entry) for entry in seen["log"]]
    assert len(log) == 4 * 3
    for start in range(0, len(log), 3):  # begin()..commit() of one greenlet, uninterrupted
        who = log[start][0]
        assert log[start : start + 3] == [(who, "insert 1"), (who, "insert 2"), (who, "commit")]
    assert sorted({who for who, _ in log}) == [0, 1, 2, 3]
    assert seen["rows"] == [[n, step] for n in range(4) for step in (1, 2)]
    assert seen["waits"] > 0


# -- 4. threads and greenlets on one connection ---------------------------------------------


@needs_gevent
@pytest.mark.parametrize("order", ORDERS)
def test_mutex_os_threads_and_greenlets_share_one_connection(connect_args, order):
    seen = run_scenario(
        connect_args,
        "threads_and_greenlets",
        order,
        {"threads": 2, "greenlets": 4, "rounds": 30},
    )
    assert seen["os_threads"] == 2  # really other OS threads
    assert seen["errors"] == []
    assert seen["wrong"] == 0
    assert seen["right"] == (2 + 4) * 30


# -- 5. orphans of ended greenlets --------------------------------------------------------


@needs_gevent
@pytest.mark.parametrize("order", [*ORDERS, "after_thread"])
@pytest.mark.parametrize("close_orphans", [False, True], ids=["reported", "closed"])
def test_orphans_of_ended_greenlets_are_reported_and_closed(connect_args, order, close_orphans):
    seen = run_scenario(
        connect_args, "greenlet_orphans", order, {"close_orphans": close_orphans, "count": 3}
    )
    assert seen["open_after_leak"] == 3
    orphans = [v["message"] for v in seen["violations"] if v["kind"] == "orphan"]
    assert len(orphans) == 3, seen["violations"]
    for n in range(3):
        assert sum(f"'leaker-{n}'" in message for message in orphans) == 1, orphans
    # Greenlets kept running while guarddb's lifecycle thread waited and judged.
    assert seen["ticks_while_judged"] > 0
    if close_orphans:
        assert seen["open_after_close"] == 0  # the server's session count is back
        assert not any(seen["closed"])
    else:
        assert sorted(i["owner_name"] for i in seen["live"]) == [f"leaker-{n}" for n in range(3)]
        assert all(i["orphan"] for i in seen["live"])


# -- 6. names -------------------------------------------------------------------------------


@needs_gevent
@pytest.mark.parametrize("order", ORDERS)
def test_live_connections_and_violations_name_the_greenlet(connect_args, order):
    seen = run_scenario(connect_args, "greenlet_names", order)
    assert seen["live"] == [{"owner_name": "owner-greenlet", "owner_alive": True}]
    assert seen["violations"] == [{"kind": "ThreadOwnershipError", "thread": "intruder-greenlet"}]
    assert re.search(
        rf"{greenlet_named('intruder-greenlet')} called execute\(\).*which belongs to "
        rf"{greenlet_named('owner-greenlet')}\.",
        seen["refused"]["message"],
    )


# -- 7. cooperative=True --------------------------------------------------------------------


@needs_gevent
@pytest.mark.parametrize(
    ("order", "how"),
    [("before", "keyword"), ("after", "keyword"), ("before", "set_defaults"), ("before", "env")],
)
def test_cooperative_greenlets_wait_for_the_server_at_the_same_time(connect_args, order, how):
    env = {"GUARDDB_COOPERATIVE": "1"} if how == "env" else {}
    seen = run_scenario(
        connect_args, "cooperative_overlap", order, {"how": how, "seconds": 1.5}, **env
    )
    assert seen["settings"] == [True] * 10
    assert seen["most_at_once"] == 10  # the server ran all ten SLEEP()s at once
    assert seen["results"] == [[[0]]] * 10


@needs_gevent
def test_without_cooperative_a_statement_blocks_the_hub(connect_args):
    seen = run_scenario(
        connect_args, "cooperative_overlap", "before", {"how": "off", "seconds": 0.2}
    )
    assert seen["settings"] == [False] * 10
    # The watcher greenlet cannot even run while a statement blocks the hub.
    assert seen["most_at_once"] <= 1
    assert seen["results"] == [[[0]]] * 10


@needs_gevent
def test_cooperative_statements_give_what_they_give_without_it(connect_args):
    seen = run_scenario(connect_args, "cooperative_same_results", "before")
    off, on = seen["off"], seen["on"]
    assert (off.pop("cooperative"), on.pop("cooperative")) == (False, True)
    assert on == off
    assert off["select"][0] == [[1, "a", None, "Decimal('2.5')"]]
    assert off["syntax_error"]["type"] == "ProgrammingError"
    assert off["syntax_error"]["args0"] == 1064
    assert off["sscursor"] == [[n, n * n] for n in range(1, 301)]
    assert off["multi"] == [[[1]], [[2, 3]], [["x"]]]
    assert off["executemany"] == off["executemany_rowcount"] == 25
    assert off["inserted"] == [[n, f"v{n}"] for n in range(25)]
    assert off["callproc"][:2] == [[[42]], [[22]]]


@needs_gevent
def test_a_session_killed_mid_wait_fails_as_it_does_without_cooperative(connect_args):
    seen = run_scenario(connect_args, "cooperative_kill", "before")
    off, on = seen["off"], seen["on"]
    assert off["killed"] == on["killed"] == [True]
    assert off["got"]["type"] == "OperationalError", off["got"]
    assert on["got"] == off["got"]


@needs_gevent
@pytest.mark.parametrize("order", ORDERS)
def test_cooperative_exclusive_refuses_a_greenlet_while_another_waits_inside(connect_args, order):
    seen = run_scenario(connect_args, "cooperative_guarded", order, {"mode": "exclusive"})
    assert seen["cooperative"] is True
    assert seen["inside_when_b_runs"] is True  # A yielded while inside its statement
    refused = seen["b"]
    assert refused["type"] == "ConcurrentUseError", refused
    assert re.search(
        rf"{greenlet_named('Greenlet-1')} called execute\(\).* while "
        rf"{greenlet_named('Greenlet-0')} was inside a call on it",
        refused["message"],
    ), refused["message"]
    assert seen["a"] == [[0, "a"]]
    assert seen["log"] == ["a executes", "b executes", "b refused", "a returned"]


@needs_gevent
@pytest.mark.parametrize("order", ORDERS)
def test_cooperative_mutex_a_greenlet_waits_while_another_waits_inside(connect_args, order):
    seen = run_scenario(connect_args, "cooperative_guarded", order, {"mode": "mutex"})
    assert seen["inside_when_b_runs"] is True
    assert seen["a"] == [[0, "a"]]
    assert seen["b"] == [["b"]]
    # B went in only once A had its answer: never both inside.
    assert seen["log"] == ["a executes", "b executes", "a returned", "b returned"]
    assert seen["waits"] == 1


@needs_gevent
@pytest.mark.parametrize("how", ["keyword", "set_defaults", "env"])
def test_cooperative_is_turned_on_by_keyword_default_or_environment(connect_args, how):
    env = {"GUARDDB_COOPERATIVE": "1"} if how == "env" else {}
    seen = run_scenario(connect_args, "cooperative_settings", "before", {"how": how}, **env)
    assert seen == {
        "setting": True,
        "class": True,
        "explicit_off": False,  # an explicit keyword wins over the default
        "explicit_off_class": False,
    }


@pytest.mark.parametrize("driver", ["mysqldb", "pymysql"])
@pytest.mark.parametrize("how", ["hidden", "blocked"])
def test_cooperative_without_gevent_is_an_import_error_at_connect(connect_args, how, driver):
    seen = run_scenario(
        connect_args, "no_gevent_cooperative", "none", {"how": how, "driver": driver}
    )
    assert seen["gevent_importable"] is False
    refused = seen["cooperative"]
    assert isinstance(refused, dict), refused
    assert refused["type"] in ("ImportError", "ModuleNotFoundError"), refused
    assert "gevent" in refused["message"]
    assert seen["off"] == [[1]]


# -- 7c. cooperative=True where gevent patched nothing; PyMySQL ------------------------------


@needs_gevent
@pytest.mark.parametrize(
    ("order", "how"),
    [("none", "keyword"), ("before", "keyword"), ("none", "set_defaults"), ("none", "env")],
)
def test_pymysql_cooperative_greenlets_wait_for_the_server_at_the_same_time(
    connect_args, order, how
):
    env = {"GUARDDB_COOPERATIVE": "1"} if how == "env" else {}
    seen = run_scenario(connect_args, "pymysql_cooperative_overlap", order, {"how": how}, **env)
    assert seen["settings"] == [True] * 10
    assert seen["green_sockets"] == [True] * 10
    assert seen["most_at_once"] == 10  # the server ran all ten SLEEP()s at once
    assert seen["results"] == [[[0]]] * 10


@needs_gevent
def test_pymysql_without_cooperative_or_the_patch_a_statement_blocks_the_hub(connect_args):
    seen = run_scenario(connect_args, "pymysql_cooperative_overlap", "none", {"how": "off"})
    assert seen["settings"] == [False] * 10
    assert seen["green_sockets"] == [False] * 10
    assert seen["most_at_once"] <= 1
    assert seen["results"] == [[[0]]] * 10


@needs_gevent
@pytest.mark.parametrize("driver", ["mysqldb", "pymysql"])
def test_cooperative_unpatched_exclusive_refuses_a_greenlet_while_another_waits_inside(
    connect_args, driver
):
    # Without the patch, every greenlet runs in the main thread: a cooperative statement
    # yields inside the guard all the same, so greenlets must be told apart.
    seen = run_scenario(connect_args, "cooperative_unpatched_guarded", "none", {"driver": driver})
    assert seen["inside_when_b_runs"] is True
    refused = seen["b"]
    assert refused["type"] == "ConcurrentUseError", refused
    assert seen["a"] == [[0, "a"]]
    assert seen["log"] == ["a executes", "b executes", "b refused", "a returned"]


@needs_gevent
@pytest.mark.parametrize("driver", ["mysqldb", "pymysql"])
def test_cooperative_unpatched_mutex_a_greenlet_waits_while_another_waits_inside(
    connect_args, driver
):
    seen = run_scenario(
        connect_args,
        "cooperative_unpatched_guarded",
        "none",
        {"driver": driver, "mode": "mutex"},
    )
    assert seen["inside_when_b_runs"] is True
    assert seen["a"] == [[0, "a"]]
    assert seen["b"] == [["b"]]
    assert seen["log"] == ["a executes", "b executes", "a returned", "b returned"]
    assert seen["waits"] == 1


@needs_gevent
def test_pymysql_cooperative_tls_context_is_gevents(connect_args):
    seen = run_scenario(connect_args, "pymysql_cooperative_tls", "none")
    # The socket PyMySQL would wrap for TLS: the standard library's, or gevent's.
    assert seen == {"tls_False": "ssl", "tls_True": "gevent.ssl"}


# -- 8. a program without gevent --------------------------------------------------------------


def test_guarddb_never_imports_gevent_itself(connect_args):
    seen = run_scenario(connect_args, "never_imports_gevent", "none")
    assert seen["rows"] == [[1], [2]]
    assert seen["greenlets"] is False
    assert seen["live"] == ["MainThread"]
    assert seen["gevent_modules"] == []
