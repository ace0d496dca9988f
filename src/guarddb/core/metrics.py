"""Process-wide counts for monitoring (:mod:`guarddb.contrib.prometheus` exports them).

Each is counted where its event happens, never on the statement path: a
violation as it is reported, a connection guarddb closed as the lifecycle
thread closes it, a wait for a connection as the waiter gets in (in C, beside
the slot's own counters).  They only grow; a forked child starts from its
parent's counts, as any count kept in the process's memory does.
"""

from __future__ import annotations

import os
import threading

from .._guard import lib


class Tally:
    """Counts by label (a violation's kind, a close's reason), from any thread."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def add(self, label: str) -> None:
        """Count one more ``label``."""
        with self._lock:
            self._counts[label] = self._counts.get(label, 0) + 1

    def counts(self) -> dict[str, int]:
        """Every label counted so far, with its count (a copy)."""
        with self._lock:
            return dict(self._counts)

    def _after_fork_in_child(self) -> None:
        # A parent thread that held the lock at fork would hold it here for good.
        self._lock = threading.Lock()


#: Violations by kind: the GuardError's class name, or "orphan" (see violations.report()).
VIOLATIONS = Tally()

#: Connections guarddb closed, by reason: "max_idle" (idle too long), "orphan"
#: (its owner ended, close_orphans=True).
CLOSED = Tally()
CLOSE_REASONS = ("max_idle", "orphan")


def waits() -> tuple[int, float]:
    """Waits to enter a connection that another thread was inside (mutex mode, or a call
    that found guarddb's lifecycle thread inside), and the seconds they took, in total."""
    return int(lib.guard_total_waits()), int(lib.guard_total_wait_ns()) / 1e9
