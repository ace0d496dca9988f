"""Hypothesis: random interleavings of several threads and a fork on one connection.

Every call either returns exactly its own rows or raises the documented
GuardError, and the owner's session survives.  Threads take turns (one
step at a time, each in its own thread), and a ``hold`` step keeps one
thread inside a call on the connection while the others go on, so both
overlapping and non-overlapping sharing are drawn.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

import MySQLdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guarddb
from guarddb import ConcurrentUseError, ForkedConnectionError, ThreadOwnershipError

from .helpers import ChildError, in_forked_child, wait_until

ACTORS = ("A", "B", "C")  # A opens the connection: the owner in strict mode
CURSORS = (0, 1)

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
    holder: str | None = None
    cursors: dict[int, CursorModel] = field(
        default_factory=lambda: {k: CursorModel() for k in CURSORS}
    )

    def refusal(self, actor: str) -> type | None:
        """The GuardError a call by ``actor`` must get on the connection, if any."""
        if self.mode == "strict" and actor != "A":
            return ThreadOwnershipError
        if self.holder is not None and self.holder != actor:
            return ConcurrentUseError
        return None


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
    conn = actors.run("A", lambda: guarddb.connect(guard=mode, **connect_args))
    lock_holder = MySQLdb.connect(**connect_args)
    try:
        cursors = {k: conn.cursor() for k in CURSORS}
        session = actors.run("A", lambda: _session(conn))
        model = Model(mode)
        blocked: concurrent.futures.Future | None = None
        for step in program:
            blocked = _play(step, conn, cursors, model, actors, lock_holder, blocked)
        if blocked is not None:
            _release(lock_holder, blocked)
        actors.run("A", conn.adopt) if mode == "strict" else None
        assert actors.run("A", lambda: _session(conn)) == session  # the owner's session survived
    finally:
        lock_holder.close()  # ends any held call, so every actor is free again
        actors.run("A", lambda: _quiet_close(conn))


def _session(conn) -> tuple:
    cursor = conn.cursor()
    cursor.execute("SELECT CONNECTION_ID(), 1")
    return cursor.fetchall()


def _quiet_close(conn) -> None:
    with contextlib.suppress(MySQLdb.Error):
        conn.close()


def _release(lock_holder, blocked: concurrent.futures.Future) -> None:
    lock_holder.cursor().execute("SELECT RELEASE_LOCK('guarddb-hypothesis')")
    assert blocked.result(timeout=30) == ((1,),)


def _play(step, conn, cursors, model: Model, actors: Actors, lock_holder, blocked):
    kind = step[0]
    if kind == "hold":
        actor = step[1]
        if model.holder is not None or model.refusal(actor) is not None:
            return blocked
        lock_holder.cursor().execute("SELECT GET_LOCK('guarddb-hypothesis', 10)")

        def hold():
            cursor = conn.cursor()
            cursor.execute("SELECT GET_LOCK('guarddb-hypothesis', 60)")
            rows = cursor.fetchall()
            cursor.execute("SELECT RELEASE_LOCK('guarddb-hypothesis')")
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
    expected_refusal = model.refusal(actor)
    if kind == "commit":
        result = outcome(actors, actor, conn.commit)
        _expect(result, expected_refusal, None)
        return blocked

    k = step[2]
    cursor, state = cursors[k], model.cursors[k]
    if kind == "execute":
        value = step[3]
        result = outcome(actors, actor, lambda: cursor.execute("SELECT %s", (value,)))
        if state.closed:
            assert result[0] == "error" and isinstance(result[1], MySQLdb.ProgrammingError)
            assert not isinstance(result[1], guarddb.GuardError)
            return blocked
        _expect(result, expected_refusal, 1)
        if expected_refusal is None:
            state.executor, state.value, state.unread = actor, value, True
    elif kind == "fetch":
        if state.closed or state.executor is None:
            return blocked  # mysqlclient's own misuse errors: covered elsewhere
        result = outcome(actors, actor, cursor.fetchall)
        if actor != state.executor:
            refusal = ThreadOwnershipError if model.mode == "strict" else ConcurrentUseError
            _expect(result, refusal, None)
        else:
            _expect(result, None, ((state.value,),) if state.unread else ())
            state.unread = False
    elif kind == "close":
        if state.closed:
            return blocked
        result = outcome(actors, actor, cursor.close)  # any thread may close, even in strict
        _expect(result, None, None)
        state.closed = True
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
    elif op == "fetch" and (state.closed or state.executor is None):
        assert result[0] == "error"  # whatever mysqlclient says of a closed or unused cursor
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
