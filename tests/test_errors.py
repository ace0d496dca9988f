"""The error contract: classes, codes frameworks read, messages, pickling."""

from __future__ import annotations

import pickle

import MySQLdb
import pytest

import guarddb
from guarddb import (
    ConcurrentUseError,
    ForkedConnectionError,
    GuardError,
    PendingResultError,
    ThreadOwnershipError,
)

from .helpers import ChildError, in_forked_child, in_thread

# The codes SQLAlchemy's mysqldb dialect reads as "disconnected".
DISCONNECT_CODES = {2006, 2013, 2014, 2045, 2055, 1927, 4031}
THREAD_ERRORS = [ThreadOwnershipError, ConcurrentUseError, PendingResultError]


@pytest.mark.parametrize("cls", THREAD_ERRORS)
def test_thread_errors_are_programming_errors(cls):
    assert issubclass(cls, GuardError)
    assert issubclass(cls, MySQLdb.ProgrammingError)
    assert not issubclass(cls, MySQLdb.OperationalError)


def test_forked_error_is_an_operational_error_with_the_gone_code():
    assert issubclass(ForkedConnectionError, GuardError)
    assert issubclass(ForkedConnectionError, MySQLdb.OperationalError)


def test_exception_classes_are_mysqldbs_own():
    for name in (
        "Warning",
        "Error",
        "InterfaceError",
        "DatabaseError",
        "DataError",
        "OperationalError",
        "IntegrityError",
        "InternalError",
        "ProgrammingError",
        "NotSupportedError",
        "MySQLError",
    ):
        assert getattr(guarddb, name) is getattr(MySQLdb, name), name


def _strict_refusal(connect):
    conn = connect(guard="strict")
    with pytest.raises(ThreadOwnershipError) as info:
        in_thread(lambda: conn.cursor().execute("SELECT 1"), name="Intruder")
    return info.value


def test_thread_error_carries_no_disconnect_code(connect):
    error = _strict_refusal(connect)
    assert len(error.args) == 1 and isinstance(error.args[0], str)
    assert error.args[0] not in DISCONNECT_CODES


def test_message_says_what_who_where_and_what_to_do(connect):
    message = str(_strict_refusal(connect))
    assert "Intruder" in message  # who called
    assert "execute()" in message  # what
    assert "belongs to thread 'MainThread'" in message  # who owns it
    assert "conftest.py:" in message  # where it was opened
    assert "open one connection per thread" in message  # what to do


def test_forked_error_has_the_gone_code_and_names_the_parent(connect):
    conn = connect()
    with pytest.raises(ChildError) as info:
        in_forked_child(lambda: conn.commit())
    code, message = info.value.child_args
    assert code == "2006"
    import os

    assert f"by process {os.getpid()}" in message


@pytest.mark.parametrize(
    "error",
    [
        ThreadOwnershipError("message"),
        ConcurrentUseError("message"),
        PendingResultError("message"),
        ForkedConnectionError(2006, "message"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.args == error.args


def test_a_real_refusal_pickles(connect):
    error = _strict_refusal(connect)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ThreadOwnershipError and copy.args == error.args


def test_message_names_a_connection_call(connect):
    conn = connect(guard="strict")
    with pytest.raises(ThreadOwnershipError, match=r"called commit\(\) on"):
        in_thread(conn.commit)
    with pytest.raises(ThreadOwnershipError, match=r"called fetchall\(\) on"):
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        in_thread(cursor.fetchall)
