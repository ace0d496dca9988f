"""Hypothesis: random interleavings of threads and a fork on one guarddb.pymysql connection.

Every call either returns exactly its own rows or raises the documented
GuardError, and the owner's session survives.  Threads take turns (one step
at a time, each in its own thread); a ``hold`` step keeps one thread inside a
call on the connection while the others go on; cursor 1 is unbuffered
(SSCursor), so unread rows hold the connection for the thread that executed
them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guarddb.pymysql
from guarddb.pymysql import (
    ConcurrentUseError,
    ForkedConnectionError,
    PendingResultError,
    ThreadOwnershipError,
)

from .helpers import ChildError, in_forked_child, wait_until

ACTORS = ("A", "B", "C")  # A opens the connection: the owner in strict mode
CURSORS = (0, 1)  # 0: buffered, 1: unbuffered
UNBUFFERED = 1
LOCK = "guarddb-pymysql-hypothesis"

steps = st.one_of(
    st.tuples(
        st.just("execute"), st.sampled_from(ACTORS), st.sampled_from(CURSORS), st.integers(0, 10**6)
    ),
    st.tuples(st.just("fetch"), st.sampled_from(ACTORS), st.sampled_from(CURSORS)),
    st.tuples(st.just("close"), st.sampled_from(ACTORS), st.sampled_from(CURSORS)),
    st.tuples(st.just("commit"), st.sampled_from(ACTORS)),
    st.tuples(st.just("hold"), st.sampled_from(ACTORS)),
    st.tuples(
        st.just("release"),
    ),
    st.tuples(
        st.just("fork"), st.sampled_from(["execute", "fetch", "close"]), st.sampled_from(CURSORS)
    ),
)


@dataclass
class CursorModel:
    executor: str | None = None
    value: int | None = None
    unread: bool = False
    closed: bool = False


@dataclass
class Model:
    mode: str
    holder: str | None = None  # inside a held call
    pending: str | None = None  # executed the unbuffered cursor's unread rows
    cursors: dict[int, CursorModel] = field(
        default_factory=lambda: {k: CursorModel() for k in CURSORS}
    )

    def refusal(self, actor: str, user: int | None) -> type | None:
        """The GuardError for a statement by ``actor`` on cursor ``user`` (None: connection)."""
        if self.mode == "strict" and actor != "A":
            return PendingResultError if self.pending else ThreadOwnershipError
        if self.holder is not None and self.holder != actor:
            return ConcurrentUseError
        if self.pending is not None and (actor != self.pending or user != UNBUFFERED):
            return PendingResultError  # another thread's rows, or another cursor of its own
        return None

    def foreign_rows(self) -> type:
        return ThreadOwnershipError if self.mode == "strict" else ConcurrentUseError


class Actors:
    """One single-thread executor per actor: steps run in that thread, one at a time."""

    def __init__(self) -> None:
        self.pools = {
            name: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
            for name in ACTORS
        }
        self.ident = {name: self.run(name, threading.get_ident) for name in ACTORS}

    def submit(self, actor: str, fn: Any) -> concurrent.futures.Future:
        return self.pools[actor].submit(fn)

    def run(self, actor: str, fn: Any) -> Any:
        return self.submit(actor, fn).result(timeout=10)

    def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def actors():
    pool = Actors()
    yield pool
    pool.shutdown()


def outcome(actors: Actors, actor: str, fn: Any) -> tuple[str, Any]:
    def call():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PyMySQL's "left incomplete", as it says it
                return ("ok", fn())
        except Exception as exc:
            return ("error", exc)

    return actors.run(actor, call)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mode=st.sampled_from(["exclusive", "strict"]), program=st.lists(steps, max_size=14))
def test_random_interleavings(actors, connect_args, mode, program):
    conn = actors.run("A", lambda: guarddb.pymysql.connect(guard=mode, **connect_args))
    lock_holder = pymysql.connect(**connect_args)
    cursors = {0: conn.cursor(), UNBUFFERED: conn.cursor(guarddb.pymysql.cursors.SSCursor)}
    model = Model(mode)
    try:
        session = actors.run("A", lambda: _session(conn))
        blocked: concurrent.futures.Future | None = None
        for step in program:
            blocked = _play(step, conn, cursors, model, actors, lock_holder, blocked)
        if blocked is not None:
            _release(lock_holder, blocked)
        if model.pending is not None:  # its rows read out by the thread they belong to
            assert outcome(actors, model.pending, cursors[UNBUFFERED].fetchall)[0] == "ok"
            model.pending = None
        actors.run("A", conn.adopt) if mode == "strict" else None
        assert actors.run("A", lambda: _session(conn)) == session  # the owner's session survived
    finally:
        lock_holder.close()  # ends any held call, so every actor is free again
        if model.pending is not None:  # a failed example: its rows' thread closes
            outcome(actors, model.pending, conn.close)
        actors.run("A", lambda: _quiet_close(conn))


def _session(conn) -> tuple:
    cursor = conn.cursor()
    cursor.execute("SELECT CONNECTION_ID(), 1")
    return cursor.fetchall()


def _quiet_close(conn) -> None:
    with contextlib.suppress(pymysql.err.Error):
        conn.close()


def _release(lock_holder, blocked: concurrent.futures.Future) -> None:
    lock_holder.cursor().execute("SELECT RELEASE_LOCK(%s)", (LOCK,))
    assert blocked.result(timeout=30) == ((1,),)


def _play(step, conn, cursors, model: Model, actors: Actors, lock_holder, blocked):
    kind = step[0]
    if kind == "hold":
        actor = step[1]
        if model.holder is not None or model.refusal(actor, None) is not None:
            return blocked
        lock_holder.cursor().execute("SELECT GET_LOCK(%s, 10)", (LOCK,))

        def hold():
            cursor = conn.cursor()
            cursor.execute("SELECT GET_LOCK(%s, 60)", (LOCK,))
            rows = cursor.fetchall()
            cursor.execute("SELECT RELEASE_LOCK(%s)", (LOCK,))
            return rows

        blocked = actors.submit(actor, hold)
        wait_until(lambda: int(conn._guard.slot.busy) == actors.ident[actor])
        model.holder = actor
        return blocked
    if kind == "release":
        if blocked is not None:
            _release(lock_holder, blocked)
            model.holder = None
        return None
    if kind == "fork":
        _play_fork(step, conn, cursors, model)
        return blocked

    actor = step[1]
    if actor == model.holder:
        return blocked  # that thread is inside its held call: it takes no other step
    if kind == "commit":
        _expect(outcome(actors, actor, conn.commit), model.refusal(actor, None), None)
        return blocked

    k = step[2]
    cursor, state = cursors[k], model.cursors[k]
    if kind == "execute":
        value = step[3]
        result = outcome(actors, actor, lambda: cursor.execute("SELECT %s", (value,)))
        if state.closed:
            assert result[0] == "error" and isinstance(result[1], pymysql.err.ProgrammingError)
            assert not isinstance(result[1], guarddb.pymysql.GuardError)
            return blocked
        refusal = model.refusal(actor, k)
        _expect(result, refusal, 2**64 - 1 if k == UNBUFFERED else 1)  # as PyMySQL counts
        if refusal is None:
            state.executor, state.value, state.unread = actor, value, True
            if k == UNBUFFERED:
                model.pending = actor
    elif kind == "fetch":
        if state.closed or state.executor is None:
            return blocked  # PyMySQL's own misuse errors: covered elsewhere
        result = outcome(actors, actor, cursor.fetchall)
        if actor != state.executor:
            _expect(result, model.foreign_rows(), None)
        elif k == UNBUFFERED:
            _expect(result, None, [(state.value,)] if state.unread else [])
            state.unread = False
            model.pending = None  # read out: the connection is free
        else:
            _expect(result, None, ((state.value,),) if state.unread else ())
            state.unread = False
    elif kind == "close":
        if state.closed:
            return blocked
        result = outcome(actors, actor, cursor.close)  # any thread may close, even in strict
        if k == UNBUFFERED and model.pending is not None and actor != model.pending:
            _expect(result, PendingResultError, None)  # another thread reads those very rows
            return blocked
        _expect(result, None, None)
        state.closed = True
        if k == UNBUFFERED:
            model.pending = None
    return blocked


def _play_fork(step, conn, cursors, model: Model) -> None:
    _, op, k = step
    cursor, state = cursors[k], model.cursors[k]

    def in_child():
        if op == "close":
            cursor.close()
            conn.close()
            return "closed"
        if op == "fetch":
            return cursor.fetchall()
        return cursor.execute("SELECT 1")

    try:  # forked from the test's own thread, while the actors may be inside calls
        result = ("ok", in_forked_child(in_child))
    except ChildError as error:
        result = ("error", error.name)
    if op == "close":
        assert result == ("ok", "closed")
    elif op == "fetch" and state.executor is None:
        assert result[0] == "error"  # whatever PyMySQL says of an unused cursor
    elif op == "execute" and state.closed:
        assert result == ("error", "ProgrammingError")
    else:
        assert result == ("error", ForkedConnectionError.__name__)


def _expect(result: tuple[str, Any], refusal: type | None, rows: Any) -> None:
    status, value = result
    if refusal is not None:
        assert status == "error" and type(value) is refusal, value
        return
    assert status == "ok", value
    if rows is not None:
        assert value == rows
