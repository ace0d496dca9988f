"""Hypothesis, stateful: random operations from several threads on one mutex-mode connection.

Each thread sees only its own results on the shared cursors (rows, rowcount,
rownumber), whatever the order of operations, and a burst of all threads at
once changes nothing of that.
"""

from __future__ import annotations

import concurrent.futures
import threading

import MySQLdb
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import guarddb
from guarddb.tools.server import ENV_DSN, PrivateServer, parse_dsn

ACTORS = ("A", "B", "C")
CURSORS = (0, 1)


class _Server:
    """One server for the state machine's runs (it cannot take pytest fixtures)."""

    args: dict | None = None
    private: PrivateServer | None = None

    @classmethod
    def connect_args(cls) -> dict:
        import os

        if cls.args is None:
            dsn = os.environ.get(ENV_DSN)
            if dsn:
                cls.args = parse_dsn(dsn)
            else:
                cls.private = PrivateServer().start()
                cls.args = cls.private.connect_args
        return cls.args


def teardown_module(module):
    if _Server.private is not None:
        _Server.private.destroy()


class SharedConnection(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pools = {a: concurrent.futures.ThreadPoolExecutor(1) for a in ACTORS}
        self.conn = guarddb.connect(guard="mutex", autocommit=True, **_Server.connect_args())
        self.cursors = [self.conn.cursor() for _ in CURSORS]
        # (actor, cursor) -> (value, rows left unread) of that thread's last statement
        self.model: dict[tuple[str, int], tuple[int, int]] = {}

    def run(self, actor, fn):
        return self.pools[actor].submit(fn).result(timeout=30)

    @rule(
        actor=st.sampled_from(ACTORS),
        k=st.sampled_from(CURSORS),
        value=st.integers(0, 999),
        rows=st.integers(1, 3),
    )
    def execute(self, actor, k, value, rows):
        cursor = self.cursors[k]

        def go():
            cursor.execute("SELECT %s FROM seq_1_to_" + str(rows), (value,))
            return cursor.rowcount, cursor.rownumber

        assert self.run(actor, go) == (rows, 0)
        self.model[(actor, k)] = (value, rows)

    @rule(actor=st.sampled_from(ACTORS), k=st.sampled_from(CURSORS))
    def fetchone(self, actor, k):
        cursor = self.cursors[k]
        if (actor, k) not in self.model:
            outcome = self.run(actor, lambda: _error(cursor.fetchone))
            assert isinstance(outcome, MySQLdb.ProgrammingError)  # "execute() first"
            return
        value, left = self.model[(actor, k)]
        row = self.run(actor, cursor.fetchone)
        if left:
            assert row == (value,)
            self.model[(actor, k)] = (value, left - 1)
        else:
            assert row is None

    @rule(actor=st.sampled_from(ACTORS), k=st.sampled_from(CURSORS))
    @precondition(lambda self: bool(self.model))
    def fetchall(self, actor, k):
        if (actor, k) not in self.model:
            return
        value, left = self.model[(actor, k)]
        assert self.run(actor, self.cursors[k].fetchall) == ((value,),) * left
        self.model[(actor, k)] = (value, 0)

    @rule(actor=st.sampled_from(ACTORS))
    def commit(self, actor):
        self.run(actor, self.conn.commit)

    @rule(k=st.sampled_from(CURSORS))
    def burst(self, k):
        """All threads at once on one cursor: each must get its own rows."""
        cursor = self.cursors[k]
        barrier = threading.Barrier(len(ACTORS))

        def go(number):
            barrier.wait()
            cursor.execute("SELECT %s", (number,))
            return cursor.fetchall()

        futures = {a: self.pools[a].submit(go, 1000 + i) for i, a in enumerate(ACTORS)}
        for i, actor in enumerate(ACTORS):
            assert futures[actor].result(timeout=30) == ((1000 + i,),)
            self.model[(actor, k)] = (1000 + i, 0)

    @invariant()
    def nobody_is_left_inside(self):
        assert int(self.conn._guard.slot.busy) == 0

    def teardown(self):
        self.conn.close()
        for pool in self.pools.values():
            pool.shutdown(wait=True)


def _error(fn):
    try:
        fn()
    except Exception as exc:
        return exc
    return None


SharedConnection.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_shared_connection = SharedConnection.TestCase
