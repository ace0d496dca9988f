"""on_violation hooks and the "guarddb" logger see every violation, even a swallowed one."""

from __future__ import annotations

import contextlib
import logging
import os
import threading

import pytest

import guarddb
from guarddb import ConcurrentUseError, ThreadOwnershipError

from .helpers import Blocked, ChildError, in_forked_child, in_thread


@pytest.fixture
def seen():
    """Violations reported while the test runs."""
    reported: list[guarddb.Violation] = []

    def hook(violation: guarddb.Violation) -> None:
        if violation.kind != "orphan":  # left by other tests' threads: tests/test_lifecycle.py
            reported.append(violation)

    guarddb.on_violation(hook)
    yield reported
    guarddb.remove_violation_hook(hook)


def test_a_swallowed_violation_is_still_reported_with_both_sites(connect, seen):
    conn = connect(guard="strict")  # the connection's site: the connect fixture's line
    cursor = conn.cursor()

    def misuse():
        with contextlib.suppress(guarddb.GuardError):  # application code that hides the bug
            cursor.execute("SELECT 1")  # the violation's site: this line

    in_thread(misuse, name="Sneaky")
    (violation,) = seen
    assert violation.kind == "ThreadOwnershipError"
    assert isinstance(violation.error, ThreadOwnershipError)
    assert violation.message == violation.error.args[0]
    assert violation.connection_site.startswith(conn._guard.site)
    assert violation.site.endswith(f"test_violations.py:{misuse.__code__.co_firstlineno + 2}")
    assert violation.thread == "Sneaky" and violation.mode == "strict"
    assert any("cursor.execute" in frame for frame in violation.stack)
    assert not any("/guarddb/" in frame for frame in violation.stack)


def test_each_kind_of_violation_is_reported(connect, seen):
    conn = connect()
    blocked = Blocked(conn, connect())
    try:
        with pytest.raises(ConcurrentUseError):
            conn.cursor().execute("SELECT 1")
    finally:
        blocked.release()
    ss = conn.cursor(guarddb.cursors.SSCursor)
    ss.execute("SELECT 1 UNION SELECT 2")
    with pytest.raises(guarddb.PendingResultError):
        conn.cursor().execute("SELECT 1")
    ss.fetchall()
    buffered = conn.cursor()
    buffered.execute("SELECT 1")
    with pytest.raises(ConcurrentUseError):
        in_thread(buffered.fetchall)
    with pytest.raises(ChildError):
        in_forked_child(lambda: conn.ping())  # reported in the child, not here
    assert [v.kind for v in seen] == [
        "ConcurrentUseError",
        "PendingResultError",
        "ConcurrentUseError",
    ]


def test_violation_in_a_forked_child_reaches_the_child_s_hooks(connect, seen):
    conn = connect()

    def child():
        with contextlib.suppress(guarddb.ForkedConnectionError):
            conn.commit()
        with contextlib.suppress(guarddb.ForkedConnectionError):
            conn.ping()  # a pool's liveness probe: the 2006 it gets is no violation
        return [(v.kind, v.pid) for v in seen]

    ((kind, pid),) = in_forked_child(child)
    assert kind == "ForkedConnectionError" and pid != os.getpid()


def test_refusals_guarddb_handles_itself_are_not_violations(connect, seen):
    conn = connect()
    cursor = conn.cursor()
    blocked = Blocked(conn, connect())
    try:
        cursor.close()  # another thread is inside: closed on the client side, quietly
    finally:
        blocked.release()
    assert seen == []
    assert cursor.connection is None


def test_mutex_waits_and_lock_timeouts_are_not_violations(connect, seen):
    conn = connect(guard="mutex", mutex_timeout=0.05)
    blocked = Blocked(conn, connect())
    try:
        with pytest.raises(guarddb.LockTimeoutError):
            conn.cursor().execute("SELECT 1")
    finally:
        blocked.release()
    assert seen == []


def test_violations_are_logged_on_the_guarddb_logger(connect, caplog):
    conn = connect(guard="strict")
    with caplog.at_level(logging.WARNING, logger="guarddb"), pytest.raises(ThreadOwnershipError):
        in_thread(conn.ping)
    (record,) = [r for r in caplog.records if r.name == "guarddb"]
    assert "ThreadOwnershipError" in record.getMessage()
    assert "at " + in_thread.__code__.co_filename in record.getMessage()  # the calling line


def test_a_failing_hook_never_breaks_the_call_and_is_logged(connect, caplog):
    def broken(_violation):
        raise RuntimeError("hook bug")

    guarddb.on_violation(broken)
    try:
        conn = connect(guard="strict")
        # The guard's error reaches the caller, not the hook's.
        with caplog.at_level(logging.ERROR, logger="guarddb"), pytest.raises(ThreadOwnershipError):
            in_thread(conn.ping)
        assert any("hook" in r.getMessage() and r.exc_info for r in caplog.records)
    finally:
        guarddb.remove_violation_hook(broken)


def test_hooks_run_in_the_violating_thread_and_can_be_removed(connect):
    threads = []
    hook = guarddb.on_violation(lambda v: threads.append(threading.current_thread().name))
    conn = connect(guard="strict")
    with pytest.raises(ThreadOwnershipError):
        in_thread(conn.ping, name="Violator")
    guarddb.remove_violation_hook(hook)
    guarddb.remove_violation_hook(hook)  # twice: ignored
    with pytest.raises(ThreadOwnershipError):
        in_thread(conn.ping, name="Violator")
    assert threads == ["Violator"]
    with pytest.raises(TypeError, match="callable"):
        guarddb.on_violation("not a function")
