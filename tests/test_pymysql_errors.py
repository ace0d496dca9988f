"""guarddb.pymysql's errors: PyMySQL's classes, the codes frameworks read, messages, pickling,
and every refusal reported as a violation."""

from __future__ import annotations

import contextlib
import os
import pickle

import pymysql
import pytest

import guarddb.core.errors
import guarddb.pymysql
from guarddb.pymysql import (
    ConcurrentUseError,
    ForkedConnectionError,
    GuardError,
    IdleClosedError,
    LockTimeoutError,
    PendingResultError,
    ThreadOwnershipError,
)

from .helpers import ChildError, in_forked_child, in_thread

# The codes SQLAlchemy's mysql dialects read as "disconnected".
DISCONNECT_CODES = {2006, 2013, 2014, 2045, 2055, 1927, 4031}
THREAD_ERRORS = [ThreadOwnershipError, ConcurrentUseError, PendingResultError]
GONE_ERRORS = [ForkedConnectionError, IdleClosedError]
ALL_ERRORS = [*THREAD_ERRORS, *GONE_ERRORS, LockTimeoutError]


@pytest.mark.parametrize("cls", THREAD_ERRORS)
def test_thread_errors_are_pymysql_programming_errors(cls):
    assert issubclass(cls, GuardError)
    assert issubclass(cls, getattr(guarddb.core.errors, cls.__name__))  # the neutral kind
    assert issubclass(cls, pymysql.err.ProgrammingError)
    assert not issubclass(cls, pymysql.err.OperationalError)


@pytest.mark.parametrize("cls", [*GONE_ERRORS, LockTimeoutError])
def test_fork_idle_and_timeout_errors_are_pymysql_operational_errors(cls):
    assert issubclass(cls, GuardError)
    assert issubclass(cls, getattr(guarddb.core.errors, cls.__name__))
    assert issubclass(cls, pymysql.err.OperationalError)


@pytest.mark.parametrize("cls", ALL_ERRORS)
def test_the_classes_name_their_public_module(cls):
    assert cls.__module__ == "guarddb.pymysql"
    assert getattr(guarddb.pymysql, cls.__name__) is cls
    assert cls.__doc__ == getattr(guarddb.core.errors, cls.__name__).__doc__


def test_they_are_not_mysqlclient_s():
    # guarddb's mysqlclient flavour derives from MySQLdb's classes, this one from PyMySQL's.
    for cls in ALL_ERRORS:
        assert all(base.__module__.split(".")[0] != "MySQLdb" for base in cls.__mro__)


@pytest.mark.parametrize(
    "error",
    [
        ThreadOwnershipError("message"),
        ConcurrentUseError("message"),
        PendingResultError("message"),
        ForkedConnectionError(2006, "message"),
        IdleClosedError(2006, "message"),
        LockTimeoutError("message"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.args == error.args


def _strict_refusal(pymysql_connect):
    conn = pymysql_connect(guard="strict")
    with pytest.raises(ThreadOwnershipError) as info:
        in_thread(lambda: conn.cursor().execute("SELECT 1"), name="Intruder")
    return info.value


def test_thread_error_carries_no_disconnect_code(pymysql_connect):
    error = _strict_refusal(pymysql_connect)
    assert len(error.args) == 1 and isinstance(error.args[0], str)
    assert error.args[0] not in DISCONNECT_CODES
    # SQLAlchemy's pymysql dialect also reads these words as a disconnect.
    assert "already closed" not in str(error).lower()
    assert "connection was killed" not in str(error).lower()


def test_message_says_what_who_where_and_what_to_do(pymysql_connect):
    message = str(_strict_refusal(pymysql_connect))
    assert "Intruder" in message  # who called
    assert "execute()" in message  # what
    assert "belongs to thread 'MainThread'" in message  # who owns it
    assert "conftest.py:" in message  # where it was opened
    assert "open one connection per thread" in message  # what to do


def test_message_names_a_connection_call(pymysql_connect):
    conn = pymysql_connect(guard="strict")
    with pytest.raises(ThreadOwnershipError, match=r"called commit\(\) on"):
        in_thread(conn.commit)
    with pytest.raises(ThreadOwnershipError, match=r"called kill\(\) on"):
        in_thread(lambda: conn.kill(1))
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    with pytest.raises(ThreadOwnershipError, match=r"called fetchall\(\) on"):
        in_thread(cursor.fetchall)


def test_forked_error_has_the_gone_code_and_names_the_parent(pymysql_connect):
    conn = pymysql_connect()
    with pytest.raises(ChildError) as info:
        in_forked_child(lambda: conn.commit())
    code, message = info.value.child_args
    assert code == "2006"
    assert f"by process {os.getpid()}" in message


def test_a_real_refusal_pickles(pymysql_connect):
    error = _strict_refusal(pymysql_connect)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ThreadOwnershipError and copy.args == error.args


@pytest.fixture
def seen():
    """Violations reported while the test runs."""
    reported: list[guarddb.pymysql.Violation] = []

    def hook(violation: guarddb.pymysql.Violation) -> None:
        if violation.kind != "orphan":  # left by other tests' threads
            reported.append(violation)

    guarddb.pymysql.on_violation(hook)
    yield reported
    guarddb.pymysql.remove_violation_hook(hook)


def test_a_swallowed_violation_is_still_reported_with_both_sites(pymysql_connect, seen):
    conn = pymysql_connect(guard="strict")  # the connection's site: the fixture's line
    cursor = conn.cursor()

    def misuse():
        with contextlib.suppress(guarddb.pymysql.GuardError):  # code that hides the bug
            cursor.execute("SELECT 1")  # the violation's site: this line

    in_thread(misuse, name="Sneaky")
    (violation,) = seen
    assert violation.kind == "ThreadOwnershipError"
    assert isinstance(violation.error, ThreadOwnershipError)
    assert violation.message == violation.error.args[0]
    assert violation.connection_site.startswith(conn._guard.site)
    assert violation.site.endswith(f"test_pymysql_errors.py:{misuse.__code__.co_firstlineno + 2}")
    assert violation.thread == "Sneaky" and violation.mode == "strict"
    assert any("cursor.execute" in frame for frame in violation.stack)
    assert not any("/guarddb/" in frame for frame in violation.stack)
    assert not any("/pymysql/" in frame for frame in violation.stack)


def test_fetch_pending_and_fork_refusals_are_violations(pymysql_connect, seen):
    conn = pymysql_connect()
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    with contextlib.suppress(GuardError):
        in_thread(cursor.fetchone)
    ss = conn.cursor(guarddb.pymysql.cursors.SSCursor)
    ss.execute("SELECT 1 UNION SELECT 2")
    with contextlib.suppress(GuardError):
        cursor.execute("SELECT 2")
    ss.close()  # a close is never one
    assert [v.kind for v in seen] == ["ConcurrentUseError", "PendingResultError"]
