"""Every live guarded connection, the orphans left by ended threads, and the idle reaper.

guarddb opens every guarded connection, so it can list them
(:func:`live_connections`, from weak references, with no server round trip),
notice when the thread that owns one ends while it is still open (an orphan:
reported once, closed with ``close_orphans=True``), and close connections idle
longer than ``max_idle``.

The work that closes connections runs in one daemon thread per process, the
lifecycle thread, started the first time it is needed (and again in a forked
child, only when needed there).  It claims a connection through the guard's
in-use slot, exactly as a call does, so it never closes one under a call; it
never closes one with an open transaction or unread rows for being idle.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING, Any, NamedTuple

from . import guard as _guard_module
from . import identity, metrics, violations
from .guard import lib

if TYPE_CHECKING:
    from .._guard import GuardSlot
    from .guard import GuardedConnection as Connection

_log = logging.getLogger("guarddb")

#: Every open guarded connection of this process (weak: the registry keeps none alive).
_registry: weakref.WeakSet[Connection] = weakref.WeakSet()
_registry_lock = threading.Lock()

#: How long after an owner thread's end its connections are judged: the thread's
#: own clean-up may still be dropping them.
_ORPHAN_GRACE = 0.2
#: The lifecycle thread looks at least this often while it has work.
_LONGEST_NAP = 1.0
_SHORTEST_NAP = 0.02


@dataclass(frozen=True)
class ConnectionInfo:
    """One live connection, as :func:`live_connections` sees it (a snapshot)."""

    #: The server's id of the session (CONNECTION_ID()), read at connect.
    server_thread_id: int
    #: Where it connects: ``host:port``, or the unix socket path.
    host: str
    #: The database it opened (or last selected with select_db()).
    db: str | None
    #: Its guard mode.
    mode: str
    #: The owner thread (the one that opened it, or the last to call adopt());
    #: "" and 0 while nobody owns it (checked in to a pool: disown()).
    owner_name: str
    owner_ident: int
    #: Whether that thread still runs; False makes it an orphan.
    owner_alive: bool
    #: ``file:line`` that opened it.
    site: str
    #: Seconds since connect (or reconnect), and since the end of its last call.
    age: float
    idle: float
    #: A transaction may be open (statements since the last commit/rollback, autocommit off).
    in_transaction: bool
    #: The open transaction has run a statement that may have written (not a known read).
    uncommitted_writes: bool
    #: An unbuffered result is still unread.
    pending_result: bool
    #: The process whose session it is (a forked child's inherited ones show the parent's).
    pid: int

    @property
    def orphan(self) -> bool:
        """Left open by a thread that has ended."""
        return not self.owner_alive


def live_connections() -> list[ConnectionInfo]:
    """A snapshot of every open guarded connection in this process.

    No server round trip and no lock any call takes: it reads what the guard
    keeps.  Connections closed or garbage-collected are not in it.
    """
    return [info for conn in _snapshot() if (info := _describe(conn)) is not None]


#: What :func:`connection_states` counts; each connection is in the first that applies.
STATES = ("inherited", "orphan", "in_call", "in_transaction", "idle")


def connection_states() -> dict[str, int]:
    """How many open guarded connections of this process are in each of :data:`STATES`.

    ``inherited``: opened by the parent of this forked child, not reconnected
    here; ``orphan``: its owner thread has ended; ``in_call``: a thread is
    inside a call on it (or holds it for unread unbuffered rows, or for its
    transaction in mutex mode with ``mutex_scope="transaction"``);
    ``in_transaction``: a transaction may be open (see
    :attr:`ConnectionInfo.in_transaction`); ``idle``: the rest.  As
    :func:`live_connections`, without a round trip or any lock a call takes,
    and cheaper: nothing is described.  Connections in mode "off" are never
    ``in_call`` (their calls skip the guard).
    """
    counts = dict.fromkeys(STATES, 0)
    for conn in _snapshot():
        guard = conn._guard
        slot = guard.slot
        if slot is None:
            continue
        if lib.guard_state(slot) == lib.GUARD_FORKED:
            state = "inherited"
        elif not _owner_alive(guard):
            state = "orphan"
        elif slot.busy:
            state = "in_call"
        elif guard.in_transaction():
            state = "in_transaction"
        else:
            state = "idle"
        counts[state] += 1
    return counts


#: Orphans reported in this process, as they were when noticed (for reports at exit).
orphans_seen: list[ConnectionInfo] = []


def check_orphans() -> list[ConnectionInfo]:
    """Judge now the connections whose owner thread has ended; return every orphan seen.

    The lifecycle thread does this a moment after a thread ends; a report made
    at exit calls this so that the threads which ended last are judged too.
    """
    _judge_ended_owners(time.monotonic() + _ORPHAN_GRACE)
    return list(orphans_seen)


# -- registration -------------------------------------------------------------------------


class Owner(NamedTuple):
    """A connection's owner thread: a weak reference to its mark (dead once it ended)."""

    mark: weakref.ref[Any]
    token: int
    ident: int
    name: str
    kind: str  # "thread" or "greenlet"


class _OwnerMark:
    """Kept by the owner thread or greenlet (identity.mark()): it goes when its owner ends."""

    __slots__ = ("__weakref__", "ident", "kind", "name", "token")

    def __init__(self, token: int) -> None:
        self.token = token
        self.ident = identity.get_ident()
        self.name = identity.current_name()
        self.kind = identity.kind(self.ident)


_tokens = count(1)


def _new_mark() -> _OwnerMark:
    mark = _OwnerMark(next(_tokens))
    # The callback fires while the ending thread clears its state (or in the
    # hub, as a greenlet finishes): it only notes the end; the lifecycle
    # thread judges a little later.
    # Described while it runs: "thread 'Name' (id N)" or "greenlet 'Name' (id N)".
    who = identity.describe(mark.ident)
    ended = weakref.finalize(mark, _owner_ended, mark.token, mark.ident, who)
    ended.atexit = False  # the main thread's end at exit is not an orphaning
    return mark


def _owner() -> Owner:
    """The calling thread or greenlet as an owner (its mark is made on first use)."""
    mark = identity.mark(_new_mark)
    return Owner(weakref.ref(mark), mark.token, mark.ident, mark.name, mark.kind)


def register(conn: Connection) -> None:
    """Track a newly opened connection; its owner is the calling thread."""
    guard = conn._guard
    _set_owner(guard)
    with _registry_lock:
        _registry.add(conn)
    if guard.max_idle is not None:
        _lifecycle.wake()


def adopted(conn: Connection) -> None:
    """The calling thread now owns ``conn`` (adopt())."""
    guard = conn._guard
    _set_owner(guard)
    guard.orphan_reported = False


def _set_owner(guard: Any) -> None:
    guard.owner_thread = owner = _owner()
    if owner.ident != _main_thread_ident():
        # A thread that may end before its connection does: the lifecycle thread
        # must run by then (it cannot be started from an ending thread's clean-up).
        _lifecycle.start()


def disowned(conn: Connection) -> None:
    """No thread owns ``conn`` now (a pool took it back): it cannot become an orphan."""
    conn._guard.owner_thread = None


def reopened(conn: Connection) -> None:
    """``conn`` has a fresh session (a reconnect): the lifecycle thread may have work again."""
    if conn._guard.max_idle is not None:
        _lifecycle.wake()


def _snapshot() -> list[Connection]:
    with _registry_lock:
        conns = list(_registry)
    return [conn for conn in conns if conn.open and conn._guard.slot is not None]


def _owner_alive(guard: Any) -> bool:
    return guard.owner_thread is None or guard.owner_thread.mark() is not None


def _describe(conn: Connection) -> ConnectionInfo | None:
    guard = conn._guard
    slot = guard.slot
    if slot is None:
        return None
    owner = guard.owner_thread
    now = time.monotonic()
    return ConnectionInfo(
        server_thread_id=guard.server_thread_id,
        host=guard.host,
        db=conn._session.get("database", guard.db),
        mode=guard.mode,
        owner_name=owner.name if owner else "",
        owner_ident=owner.ident if owner else 0,
        owner_alive=_owner_alive(guard),
        site=guard.site,
        age=now - guard.opened_at,
        idle=_idle_seconds(slot),
        in_transaction=guard.in_transaction(),
        uncommitted_writes=guard.uncommitted_writes(),
        pending_result=guard.pending is not None,
        pid=guard.pid,
    )


def _idle_seconds(slot: GuardSlot) -> float:
    if slot.busy:
        return 0.0
    return _idle_seconds_held(slot)


def _idle_seconds_held(slot: GuardSlot) -> float:
    return max(0.0, (lib.guard_coarse_ns() - slot.last_used_ns) / 1e9)


# -- orphans ------------------------------------------------------------------------------

#: (when, token, ident, who, when on the clock of a slot's last_used_ns) to judge.
_ended: list[tuple[float, int, int, str, int]] = []
_judging = threading.Lock()


def _main_thread_ident() -> int | None:
    return identity.main_thread_ident()


def _owner_ended(token: int, ident: int, who: str) -> None:
    # Runs in the ending thread, during its clean-up: note it and nudge the
    # lifecycle thread (no thread is started from here).
    _ended.append((time.monotonic(), token, ident, who, lib.guard_coarse_ns()))
    # Strict mode: nobody owns the ended owner's connections from now on (until an
    # adopt()).  A thread started later may be given the ended one's id (glibc reuses
    # it): without this it would pass the C guard's owner check as if it were the owner.
    for conn in _snapshot():
        guard = conn._guard
        owner = guard.owner_thread
        if guard.mode == "strict" and owner is not None and owner.token == token:
            # Only if it is still the owner in C: another thread may adopt it meanwhile.
            lib.guard_disown_from(guard.slot, ident)
    _lifecycle.event.set()


def _judge_ended_owners(now: float) -> float | None:
    """Report (and with close_orphans, close) the connections of owners that ended.

    Returns when to look again for owners that ended too recently to judge.
    """
    with _judging:  # the lifecycle thread, and check_orphans() at exit
        ready = [entry for entry in _ended if now - entry[0] >= _ORPHAN_GRACE]
        for entry in ready:
            _ended.remove(entry)
    if not ready:
        return _ended[0][0] + _ORPHAN_GRACE if _ended else None
    tokens = {token: (ident, who, ended_ns) for _when, token, ident, who, ended_ns in ready}
    for conn in _snapshot():
        guard = conn._guard
        if guard.owner_thread is None or guard.owner_thread.token not in tokens:
            continue
        ident, who, ended_ns = tokens[guard.owner_thread.token]
        if not guard.orphan_reported:
            guard.orphan_reported = True
            _report_orphan(conn, ident, who)
        if guard.close_orphans:
            reason = "its owner thread ended (close_orphans=True)"
            _close(conn, reason, orphan=True, ended=(ident, ended_ns))
    return _ended[0][0] + _ORPHAN_GRACE if _ended else None


def _report_orphan(conn: Connection, ident: int, who: str) -> None:
    guard = conn._guard
    info = _describe(conn)
    if info is not None:
        orphans_seen.append(info)
    message = (
        f"guarddb: {guard.label} opened at {guard.site} is still open, but its owner, "
        f"{who}, has ended: an orphan, a session the server keeps "
        f"for nobody. Close connections in the thread that opens them (or use a pool), "
        f"or pass close_orphans=True to have guarddb close them."
    )
    if guard.close_orphans:
        if guard.uncommitted_writes():
            message += " close_orphans: closing it rolls back its uncommitted writes."
        elif guard.in_transaction():
            message += " close_orphans: closing it rolls back a transaction that only read."
    violations.report("orphan", message, guard.site, guard.site, guard.mode)


# -- closing ------------------------------------------------------------------------------


def _close(
    conn: Connection,
    reason: str,
    orphan: bool = False,
    max_idle: float | None = None,
    ended: tuple[int, int] | None = None,
) -> bool:
    """Close ``conn`` for guarddb, holding its guard slot; False if it is in use now.

    With ``max_idle``, only if it is still idle that long once the slot is held.
    An orphan's ``ended`` is its owner's id and the moment it ended (guard_coarse_ns()).
    """
    guard = conn._guard
    slot = guard.slot
    if slot is None or guard.mode == "off":  # "off" calls skip the guard: never safe
        return False
    me = identity.get_ident()
    rc = lib.guard_claim(slot, 0, me)
    holder = int(slot.busy)
    if rc == lib.GUARD_BUSY and orphan and not identity.alive(holder):
        # The ended owner left it held (unread rows, a mutex transaction): take it over.
        rc = lib.guard_steal(slot, holder, me)
    if rc:
        return False
    try:
        if not conn.open:
            return False
        if orphan:
            last_user = int(slot.owner)
            if guard.mode != "strict" and last_user != me and _taken_over(slot, last_user, ended):
                return False  # another live thread took it over without adopt(): it is used
            reason += _finish_for_dead_owner(conn)
        else:
            if guard.would_lose() is not None:
                return False  # uncommitted writes, locks or unread rows: never for being idle
            if max_idle is not None and _idle_seconds_held(slot) < max_idle:
                return False  # used since it was looked at
            if guard.in_transaction():
                # Only read, by guarddb's reading of the statements: the server
                # confirms before the rollback, or the connection stays.
                if not _server_confirms_read_only(conn):
                    return False
                with contextlib.suppress(Exception):
                    conn._rollback_for_guarddb()
                guard.transaction_ended()
                reason += "; its transaction had only read, and was rolled back"
        if not conn._close_for_guarddb():  # COM_QUIT: the server frees the session
            return False  # the driver said not now (mysqlclient 2.3's own lock): look again later
        guard.closed_reason = reason
        metrics.CLOSED.add("orphan" if orphan else "max_idle")
        # Marked only now: until the slot is let go, a call waits for it (as
        # for any call in progress) rather than seeing it closed half-way.
        lib.guard_mark_closed(slot)
        _log.info("guarddb: closed %s opened at %s: %s", guard.label, guard.site, reason)
        return True
    finally:
        guard.release(me)


#: The server's word on a transaction guarddb takes for read-only: None while
#: unknown, False once the server refused to tell (no PROCESS privilege).
_server_check_works: bool | None = None


def _server_confirms_read_only(conn: Connection) -> bool:
    """Whether the server agrees that the session's transaction modified and locked nothing.

    Asked on the connection itself, while guarddb holds it (one round trip,
    only when the reaper is about to close a connection in a read-only
    transaction).  Where the server will not tell (the account lacks the
    PROCESS privilege that ``information_schema.INNODB_TRX`` needs), guarddb's
    own reading of the statements decides; that is logged once.
    """
    global _server_check_works
    answer = conn._transaction_footprint()
    if answer is None:
        if _server_check_works is None:
            _log.info(
                "guarddb: the server does not say what a session's transaction modified "
                "(information_schema.INNODB_TRX needs the PROCESS privilege): idle "
                "read-only transactions are closed on guarddb's reading of the statements"
            )
        _server_check_works = False
        return True
    _server_check_works = True
    if answer:
        _log.warning(
            "guarddb: kept %s opened at %s open although idle: guarddb took its transaction "
            "for read-only, but the server says it modified or locked rows (%s)",
            conn._guard.label,
            conn._guard.site,
            answer,
        )
        conn._guard.wrote = True  # the server knows better: keep it until commit or rollback
        return False
    return True


def _taken_over(slot: Any, last_user: int, ended: tuple[int, int] | None) -> bool:
    """Whether ``last_user``, the connection's last user, is a live thread other than its
    ended owner (exclusive mode lets a thread take a connection over without adopt()).

    A thread's id is given again to threads started after it ended (glibc reuses its
    stack): the ended owner's id belongs to another thread only if the connection was
    used after the owner ended (a use in the very tick of the end is taken for the owner's).
    """
    if not identity.alive(last_user):
        return False
    if ended is None:
        return True
    owner, ended_ns = ended
    return last_user != owner or int(slot.last_used_ns) > ended_ns


def _finish_for_dead_owner(conn: Connection) -> str:
    """An orphan's unread rows are drained and its open transaction rolled back.

    Returns what was lost, for the report ("" if nothing).
    """
    guard = conn._guard
    lost = ""
    if guard.uncommitted_writes():
        lost = "; its uncommitted writes were rolled back"
    elif guard.in_transaction():
        lost = "; its transaction had only read, and was rolled back"
    if guard.pending is not None:
        lost += "; its unread rows were dropped"
    drain = guard.pending_drain
    if drain is not None:
        guard.pending = guard.pending_drain = None
        guard.pending_holder = 0
        with contextlib.suppress(Exception):  # a broken session: closing is all that is left
            drain()
    if guard.in_transaction() or guard.holds_transactions:
        with contextlib.suppress(Exception):
            conn._rollback_for_guarddb()
        guard.transaction_ended()
        if guard.holds_transactions:
            guard.txn_holder = 0  # type: ignore[misc]  # a MutexGuard's
    return lost


def _reap_idle(now_ns: int) -> float | None:
    """Close the connections idle too long; returns seconds until the next may be due."""
    due: float | None = None
    for conn in _snapshot():
        guard = conn._guard
        limit = guard.max_idle
        if limit is None or guard.closed_reason is not None or guard.forked():
            continue
        slot = guard.slot
        idle = 0.0 if slot.busy else (now_ns - slot.last_used_ns) / 1e9
        if idle >= limit:
            reason = f"idle for {idle:.1f}s (max_idle={limit:g})"
            if _close(conn, reason, max_idle=limit):
                continue
            idle = 0.0  # busy, or in a transaction: look again a full period later
        wait = limit - idle
        due = wait if due is None else min(due, wait)
    return due


# -- the lifecycle thread -----------------------------------------------------------------


class _Lifecycle:
    """The one daemon thread that closes connections for guarddb (started when needed)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread if it does not run in this process yet."""
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    thread = threading.Thread(
                        target=self._run, name="guarddb-lifecycle", daemon=True
                    )
                    thread.start()
                    self.thread = thread

    def wake(self) -> None:
        """Make the thread look now (starting it if needed)."""
        self.start()
        self.event.set()

    def _run(self) -> None:
        _guard_module.service_ident = identity.get_ident()
        while True:
            self.event.clear()
            nap = self.tick()
            self.event.wait(None if nap is None else min(max(nap, _SHORTEST_NAP), _LONGEST_NAP))

    @staticmethod
    def tick() -> float | None:
        """One look at every connection; returns when to look again (None: when woken)."""
        try:
            next_orphans = _judge_ended_owners(time.monotonic())
            next_idle = _reap_idle(lib.guard_coarse_ns())
        except Exception:  # never let the thread die: log, and look again soon
            _log.exception("guarddb: the lifecycle thread failed")
            return _LONGEST_NAP
        waits = [next_idle] if next_idle is not None else []
        if next_orphans is not None:
            waits.append(next_orphans - time.monotonic())
        return min(waits) if waits else None

    def after_switch_to_greenlets(self) -> None:
        """gevent patched threading: a thread started from now on is a greenlet.

        Its nap must yield to the hub, on gevent's Event, never block the OS
        thread (a thread that runs already keeps its OS thread and its Event).
        Its start lock becomes gevent's too: start() holds it while the new
        thread starts, which yields to the hub, and a second greenlet
        connecting meanwhile must wait by yielding, not block the OS thread
        the first one needs to finish.
        """
        if self.thread is None:
            self.event = threading.Event()
            self.lock = threading.Lock()

    def after_fork_in_child(self) -> None:
        global _registry_lock, _judging
        # A lock another parent thread held at fork would stay held here for good.
        _registry_lock, _judging = threading.Lock(), threading.Lock()
        self.lock = threading.Lock()
        self.event = threading.Event()
        self.thread = None  # the parent's thread does not exist here
        _ended.clear()


_lifecycle = _Lifecycle()
os.register_at_fork(after_in_child=_lifecycle.after_fork_in_child)
identity.on_switch(_lifecycle.after_switch_to_greenlets)
