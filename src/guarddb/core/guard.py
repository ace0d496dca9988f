"""The Python face of the C guard: what a refusal means in each mode, and what it says.

The C side (``guarddb._guard``) knows only threads, fork and atomics.  This
module decides what a refusal means in each mode and writes the message:
what happened, who owns the connection, where it was opened, what to do.  It
knows no driver: a driver's layer hands in its error classes
(:class:`~guarddb.core.errors.DriverErrors`) and gives its connection the few
methods :class:`GuardedConnection` lists.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .._guard import ffi
from .._guard import lib as lib  # re-exported: the driver layers use it too
from . import identity, transactions, violations
from .errors import CR_SERVER_GONE_ERROR, DriverErrors, GuardError
from .identity import describe as describe_thread
from .sites import caller_site, operation

_log = logging.getLogger("guarddb")

#: Bumped in every child made by os.fork(): a cursor remembers the epoch it
#: executed in, so a buffered fetch can spot a fork without calling into C.
epoch = 0


#: Identity of guarddb's lifecycle thread (the reaper), 0 while none runs:
#: a call that finds it inside a connection waits for it instead of failing.
service_ident = 0


def _after_fork_in_child() -> None:
    global epoch, service_ident
    epoch += 1
    service_ident = 0  # the parent's lifecycle thread does not exist here


os.register_at_fork(after_in_child=_after_fork_in_child)

_enter = lib.guard_enter_as
_enter_wait = lib.guard_enter_wait_without_gil
_leave = lib.guard_leave


def _enter_as_current(slot: Any) -> int:
    """Enter for the calling greenlet, with the slot's flags: its identity handed to C."""
    return int(lib.guard_enter_mode_as(slot, identity.get_ident()))


def bind_statement_path(namespace: dict[str, Any]) -> None:
    """Give a driver module's statement path ``get_ident`` and ``c_enter`` as globals.

    ``get_ident()``: the caller's identity; ``c_enter(slot)``: the C guard's
    enter for it, with the flags of the connection's mode (for an OS thread
    the C guard takes pthread_self() itself).  Module globals, for speed: a
    module attribute look-up each would cost every round trip.  They are
    rebound once, if identities become greenlets.
    """

    def bind() -> None:
        namespace["get_ident"] = identity.get_ident
        namespace["c_enter"] = _enter_as_current if identity.greenlets else lib.guard_enter_mode

    bind()
    identity.on_switch(bind)


#: How long one wait in C lasts before Python gets a chance to run signal handlers.
_WAIT_SLICE = 0.1
#: How long a waiting greenlet sleeps at most before it looks again (a leave in
#: another OS thread may not wake it).
_GREEN_SLICE = 0.05

#: Passed to enter() by calls that may run while an unbuffered result is
#: unread (closing the connection).
ANY_USER = object()


class GuardedConnection(Protocol):
    """What the guard and the lifecycle need of a driver's guarded connection."""

    _guard: ConnectionGuard
    #: Session state changed through the API since connect (``"database"``, ...).
    _session: dict[str, Any]

    @property
    def open(self) -> bool:
        """Whether the connection has a session (not closed)."""

    def get_autocommit(self) -> bool:
        """The session's autocommit, as the driver knows it."""

    def _reopen_session(self) -> None:
        """Open a fresh session with the same arguments (the slot is held by the caller)."""

    def _close_for_guarddb(self) -> bool:
        """Close the session (COM_QUIT), holding the slot; False if the driver refused now."""

    def _rollback_for_guarddb(self) -> None:
        """Roll back the open transaction, holding the slot, past the guard."""

    def _transaction_footprint(self) -> str | None:
        """What the server says the session's transaction modified or locked, holding the
        slot: "" for nothing, a description otherwise, None if the server will not say."""


class ConnectionGuard:
    """One connection's guard: its C slot, its mode, and what its messages need.

    ``enter()``/``leave()`` bracket every call that reaches libmysqlclient.  An
    unbuffered result keeps the slot held by the thread that executed it until
    the rows are read out or the cursor is closed (``pin_result`` /
    ``unpin_result``), so any other statement is refused before it can reach
    the server and get "Commands out of sync".
    """

    if TYPE_CHECKING:
        # MutexGuard's, used only where holds_transactions is true.
        txn_holder: int

        def hold_transaction(self, conn: Any) -> None: ...
        def release_transaction(self) -> None: ...

    __slots__ = (
        "autocommit",
        "began",
        "close_orphans",
        "closed_reason",
        "connection",
        "db",
        "dirty",
        "errors",
        "flags",
        "green_wake",
        "holds_transactions",
        "host",
        "inside",
        "label",
        "locked",
        "max_idle",
        "mode",
        "on_fork",
        "on_idle",
        "opened_at",
        "orphan_reported",
        "owner_thread",
        "pending",
        "pending_drain",
        "pending_holder",
        "pending_site",
        "per_thread_results",
        "pid",
        "server_thread_id",
        "site",
        "slot",
        "statement",
        "wrote",
    )

    def __init__(self, mode: str, site: str, errors: DriverErrors) -> None:
        identity.refresh()  # gevent may have patched threading since: who owns it?
        slot = lib.guard_slot_new(identity.get_ident())
        if slot == ffi.NULL:
            raise MemoryError("guarddb: no memory for a guard slot")
        self.slot = slot
        self.mode = mode
        self.site = site
        #: The driver's own error classes, one per kind.
        self.errors = errors
        self.pid = os.getpid()
        self.label = "a MySQL connection"
        self.use_flags(lib.GUARD_STRICT if mode == "strict" else 0)
        # Slots, not class attributes, though only MutexGuard sets them: every
        # statement reads both, and CPython 3.11 reads a class attribute through
        # an instance the slow way (about 150 instructions; a slot, a few).
        #: mutex mode keeps each thread's result of a shared cursor its own.
        self.per_thread_results = False
        #: mutex_scope="transaction": a thread keeps the connection until commit/rollback.
        self.holds_transactions = False
        self.pending: weakref.ref[Any] | None = None
        #: Reads and drops the unread unbuffered rows (the driver's discard), or None.
        self.pending_drain: Callable[[], Any] | None = None
        self.pending_holder = 0
        self.pending_site = ""
        #: The gevent Events of the greenlets waiting to enter, one each: an Event
        #: can be waited on only in the OS thread whose hub made it (threads and
        #: greenlets may share a mutex connection), and set from any thread.
        self.green_wake: set[Any] = set()
        #: Thread inside a cursor statement (its nested connection calls skip the guard).
        self.inside = 0
        #: The statement last sent (for messages).
        self.statement: Any = None
        #: "raise" or "reconnect": what a forked child's first use does.
        self.on_fork = "raise"
        #: The guarded connection (a weak reference; None for a connection guarddb did not open).
        self.connection: weakref.ref[Any] | None = None
        # Transaction bookkeeping, without a server round trip (see
        # guarddb.core.transactions): a statement ran since the last commit or
        # rollback (``dirty``), one of them may have written (``wrote``), locks
        # that outlive a transaction were taken (``locked``), a transaction was
        # begun explicitly (``began``), and autocommit as last set.
        self.dirty = False
        self.wrote = False
        self.locked: bool | str = False  # or transactions.USER_LOCK: until the session ends
        self.began = False
        self.autocommit = False
        # Lifecycle (guarddb.core.lifecycle): what and when it opened, its limits,
        # its owner thread, and why guarddb closed it, once it has.
        self.server_thread_id = 0
        self.host = ""
        self.db: str | None = None
        self.opened_at = time.monotonic()
        self.max_idle: float | None = None
        self.on_idle = "raise"
        self.close_orphans = False
        self.owner_thread: Any = None
        self.orphan_reported = False
        self.closed_reason: str | None = None

    def use_flags(self, flags: int) -> None:
        """The flags of every enter: the mode's (-1: statements skip the C guard).

        The slot keeps them too, for the statement path's one-argument enter.
        """
        self.flags = flags
        lib.guard_set_flags(self.slot, max(flags, 0))

    # -- the calls -------------------------------------------------------------------------

    def enter(self, user: Any = None) -> None:
        """Enter the connection for a call by ``user`` (a cursor, or None for the connection).

        Raises the mode's GuardError instead of letting the call reach
        libmysqlclient.  Every successful enter is matched by one leave().
        """
        rc = _enter(self.slot, self.flags, identity.get_ident())
        if rc:
            self.refused(rc)
        if self.pending is not None:
            self.check_pending(user)

    def enter_to_close(self, user: Any = None) -> bool:
        """Enter to close (any thread may, even in strict mode); False: nothing to close.

        The owner stays as it is: in strict mode only adopt() changes it.  A
        connection guarddb closed is not entered (False), and never reconnected
        or reported just to be closed.
        """
        flags = (self.flags & ~lib.GUARD_STRICT) | lib.GUARD_KEEP_OWNER
        rc = _enter(self.slot, flags, identity.get_ident())
        if rc == lib.GUARD_BUSY and service_ident and int(self.slot.busy) == service_ident:
            rc = self._wait_for_service(lib.GUARD_KEEP_OWNER)
        if rc == lib.GUARD_CLOSED:
            return False
        if rc:
            self.refused(rc)
        if self.pending is not None:
            self.check_pending(user)
        return True

    def refused(self, rc: int) -> None:
        """The C guard said no (``rc``): raise the mode's error (mutex mode waits instead).

        Returns entered, as a successful enter would, when it could make the
        call possible: guarddb's lifecycle thread was inside (it waits for
        it), a forked child's first use with ``on_fork="reconnect"``, or a
        connection guarddb closed with ``on_idle="reconnect"`` (a fresh
        session).  A connection guarddb closed otherwise raises IdleClosedError.
        """
        if rc == lib.GUARD_BUSY and service_ident and int(self.slot.busy) == service_ident:
            rc = self._wait_for_service(0)
            if rc == lib.GUARD_OK:
                return
        if rc == lib.GUARD_FORKED and self.on_fork == "reconnect":
            self._reconnect_after_fork()
            return
        if rc == lib.GUARD_CLOSED:
            self._closed_by_guarddb()
            return
        raise self.refusal(rc)

    def _wait_for_service(self, flags: int) -> int:
        """guarddb's lifecycle thread is inside for a moment (closing an idle connection)."""
        rc = lib.GUARD_BUSY
        since = int(lib.guard_now_ns())
        while rc == lib.GUARD_BUSY and int(self.slot.busy) in (service_ident, 0):
            rc = self._wait_turn(flags, _WAIT_SLICE, since)
        return rc

    def _wait_turn(self, flags: int, seconds: float, since: int) -> int:
        """Wait up to ``seconds`` for the one inside to leave, and enter: the C result.

        A thread sleeps in C (a futex, without the GIL).  A greenlet must not
        block the OS thread its siblings run on, the one inside among them: it
        yields to its hub until a leave wakes it (:meth:`wake`).  ``since``:
        when the caller's wait began (``lib.guard_now_ns()``), for a wait made
        of several of these; one that gets in is counted from then
        (``guard_stats()``).
        """
        me = identity.get_ident()
        if not identity.greenlets or not identity.runs_a_hub():
            # An OS thread with no gevent hub runs no greenlets to yield to: it sleeps
            # in C (and must not make itself a hub: gevent's hub creation imports
            # modules, and two threads doing that at once deadlock on the import lock).
            return int(_enter_wait(self.slot, flags, int(seconds * 1e9), me, since))
        return self._green_wait(flags, seconds, me, since)

    def _green_wait(self, flags: int, seconds: float, me: int, since: int) -> int:
        from gevent.event import Event  # only ever under gevent's patch

        slot = self.slot
        deadline = time.monotonic() + seconds
        event = Event()  # this waiter's own, in its own thread's hub
        self.green_wake.add(event)
        lib.guard_wait_begin(slot)  # counted, so that the leave says someone waits
        try:
            while True:
                event.clear()
                rc = _enter(slot, flags | lib.GUARD_TIMED, me)
                if rc != lib.GUARD_BUSY:
                    if rc == lib.GUARD_OK:
                        lib.guard_count_wait(slot, int(lib.guard_now_ns()) - since)
                    return int(rc)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return int(rc)
                # A leave in this hub sets the event; one in another OS thread may
                # not reach it at once: look again after a slice all the same.
                event.wait(min(remaining, _GREEN_SLICE))
        finally:
            lib.guard_wait_end(slot)
            self.green_wake.discard(event)

    def wake(self) -> None:
        """A leave let the slot go while someone waited: wake the greenlets among them."""
        for event in list(self.green_wake):
            event.set()  # gevent hands a set from another OS thread to the waiter's hub

    def _closed_by_guarddb(self) -> None:
        """The connection was closed by guarddb: reconnect (on_idle="reconnect") or say so."""
        conn = self.connection() if self.connection is not None else None
        if self.on_idle != "reconnect" or conn is None:
            raise self.errors.IdleClosedError(
                CR_SERVER_GONE_ERROR,
                f"guarddb: {self._opened()} was closed by guarddb: {self.closed_reason}. "
                f"Open a new connection (pools replace it on this error), or pass "
                f"on_idle='reconnect' to reconnect on the next call.",
            )
        me = identity.get_ident()
        rc = lib.guard_claim(self.slot, 1, me)
        if rc:  # another thread got in first (mutex mode): it reconnects, this one waits its turn
            self.refused(rc)
            return
        try:
            if lib.guard_state(self.slot) == lib.GUARD_CLOSED:
                lib.guard_mark_open(self.slot)
                try:
                    conn._reopen_session()
                except BaseException:
                    lib.guard_mark_closed(self.slot)
                    raise
                self.closed_reason = None
        finally:
            if lib.guard_release(self.slot, me):
                self.wake()
        rc = _enter(self.slot, self.flags, me)
        if rc:
            self.refused(rc)

    def closed_by_user(self) -> None:
        """The user closed a connection guarddb had closed: from now on it is simply closed."""
        self.closed_reason = None
        lib.guard_mark_open(self.slot)  # calls reach mysqlclient, and get its own errors

    def in_transaction(self) -> bool:
        """Whether a transaction may be open: statements since the last commit or rollback,
        with autocommit off or after begin().  No server round trip."""
        return self.dirty and (self.began or not self.autocommit)

    def uncommitted_writes(self) -> bool:
        """Whether the open transaction has run a statement that may have written."""
        return self.wrote and self.in_transaction()

    def would_lose(self) -> str | None:
        """What closing the session now would lose, or None: a rollback loses only reads."""
        if self.pending is not None:
            return "an unbuffered (SSCursor) result was still unread"
        if self.locked:
            return "the session holds locks (LOCK TABLES, GET_LOCK(), a global read lock)"
        if self.uncommitted_writes():
            return (
                "a transaction was open and had written (a statement other than a known "
                "read since the last commit or rollback)"
            )
        return None

    def transaction_ended(self) -> None:
        """Committed or rolled back (by the API, SQL text, or the server): nothing is open."""
        self.dirty = self.began = self.wrote = False

    def statement_starts(self, statement: Any, kinds: transactions.Kinds | None) -> Any:
        """Inside the guard, before a statement that is not a known read runs.

        ``kinds``: its cached classification, None if not classified yet.
        Returns the kinds, for :meth:`statement_done`.
        """
        if kinds is None:
            kinds = transactions.classify(statement)
        transactions.starting(self, kinds)
        return kinds

    def statement_done(self, kinds: transactions.Kinds, conn: GuardedConnection) -> None:
        """Inside the guard, after a statement of these kinds succeeded (not a plain read
        or write): transaction control written as SQL takes effect."""
        transactions.done(self, kinds)
        if transactions.AUTOCOMMIT_SET in (kinds if isinstance(kinds, tuple) else (kinds,)):
            on = bool(conn.get_autocommit())  # what the server now says
            if on != self.autocommit and (on or not self.began):
                self.transaction_ended()  # turned on: committed; turned off: nothing open
            self.autocommit = on
        if (
            self.holds_transactions
            and not (self.began or (self.dirty and not self.autocommit))  # it ended
            and self.txn_holder == identity.get_ident()
        ):
            self.release_transaction()

    def _reconnect_after_fork(self) -> None:
        conn = self.connection() if self.connection is not None else None
        if conn is None or not conn.open:
            raise self.refusal(lib.GUARD_FORKED)  # closed before the fork: nothing to reopen
        lost = self.would_lose()
        if lost is not None:
            raise self.violation(
                self.errors.ForkedConnectionError(
                    CR_SERVER_GONE_ERROR,
                    f"guarddb: process {os.getpid()} cannot reconnect {self._opened()} by process "
                    f"{self.pid}, inherited across fork() (on_fork='reconnect'): {lost} at fork, "
                    f"and a fresh session would silently lose it. Commit, roll back or read the "
                    f"rows before forking, or open the child's connection in the child.",
                )
            )
        # This process's slot from now on: free, owned by this thread, no socket
        # until the new session's is watched.
        me = identity.get_ident()
        lib.guard_rearm(self.slot, me)
        self.pid = os.getpid()
        self.inside = 0
        self.pending = self.pending_drain = None
        self.pending_holder = 0
        self.transaction_ended()
        self.locked = False  # the locks were the parent's session's
        self._forget_holders()
        conn._reopen_session()
        rc = _enter(self.slot, self.flags, me)
        if rc:
            raise self.refusal(rc)

    def _forget_holders(self) -> None:
        """Forget threads of the parent that held the connection (mutex mode has some)."""

    def check_pending(self, user: Any) -> None:
        """Just entered: refuse ``user`` if another cursor's unbuffered rows are unread."""
        if user is not ANY_USER and self.pending is not None and self.pending() is not user:
            self.leave()
            raise self.violation(self._pending_error())

    def leave(self) -> None:
        """Leave the connection (after the call, whatever it raised)."""
        if _leave(self.slot):
            self.wake()

    def release(self, holder: int) -> None:
        """Leave on behalf of ``holder`` (from any thread); nothing if it is not inside."""
        if self.slot is not None and lib.guard_release(self.slot, holder):
            self.wake()

    def free(self) -> None:
        """Give the C slot back; the connection object is going away."""
        # None from here on: typed as the live slot, which it is for the connection's
        # life; what may still run while it goes away checks for None.
        slot, self.slot = self.slot, None  # type: ignore[assignment]
        if slot is not None:
            lib.guard_slot_free(slot)

    def watch_socket(self, fd: int) -> None:
        """Record the socket that a forked child must never write to."""
        lib.guard_set_fd(self.slot, fd)

    def forget_socket(self) -> None:
        """Forget the socket before it closes: its number will be reused."""
        lib.guard_set_fd(self.slot, -1)

    def forked(self) -> bool:
        """True in a forked child of the process that opened the connection."""
        return bool(lib.guard_state(self.slot) == lib.GUARD_FORKED)

    def detached(self) -> bool:
        """True when the session is not this process's to use: forked, or closed by guarddb."""
        return bool(lib.guard_state(self.slot) != lib.GUARD_OK)

    def owner(self) -> int:
        """Thread id of the owner (strict: creator or adopter; otherwise the last user)."""
        return int(self.slot.owner)

    def disown(self) -> None:
        """No thread owns the connection until the next adopt() (strict: nobody may use it)."""
        lib.guard_disown(self.slot)

    def adopt(self) -> None:
        """Make the calling thread the owner; refused while another thread is inside.

        In a forked child it does nothing: the first call there decides
        (ForkedConnectionError, or a reconnect owned by the calling thread).
        """
        if self.forked():
            return
        me = identity.get_ident()
        if self.pending is not None and self.pending_holder != me:
            raise self.violation(self._pending_error(adopting=True))
        rc = lib.guard_adopt(self.slot, me)
        if rc:
            raise self.refusal(rc, adopting=True)

    # -- unbuffered results ----------------------------------------------------------------

    def pin_result(self, cursor: Any, drain: Callable[[], Any]) -> None:
        """Hold the slot (one more enter) while ``cursor``'s unbuffered rows are unread.

        ``drain()`` reads and drops the rest of the rows (the driver's own
        discard).  Called inside the execute that produced the result, so the
        nested enter cannot fail.
        """
        me = identity.get_ident()
        _enter(self.slot, 0, me)
        self.pending = weakref.ref(cursor, self._cursor_dropped)
        self.pending_drain = drain
        self.pending_holder = me
        self.pending_site = caller_site()

    def unpin_result(self) -> None:
        """The unbuffered rows were read out or discarded: let other statements in."""
        holder = self.pending_holder
        self.pending = self.pending_drain = None
        self.pending_holder = 0
        self.release(holder)

    def _cursor_dropped(self, _ref: object) -> None:
        # The cursor went away with rows unread: the driver would drain them
        # when the result is freed.  Drain here, while the slot is still held,
        # so that no other statement can run into the drain.
        drain, self.pending_drain = self.pending_drain, None
        try:
            if drain is not None and self.slot is not None and not self.forked():
                drain()
        except Exception:
            pass
        finally:
            del drain
            self.unpin_result()

    # -- messages --------------------------------------------------------------------------

    def _opened(self) -> str:
        return f"{self.label} opened at {self.site}"

    def violation(self, error: GuardError) -> GuardError:
        """Report ``error`` to the violation hooks and the log; return it to be raised."""
        violations.report(
            type(error).__name__, str(error.args[-1]), self.site, caller_site(), self.mode, error
        )
        return error

    def forked_error(self) -> GuardError:
        """The ForkedConnectionError for this connection, not reported as a violation."""
        return self._refusal_error(lib.GUARD_FORKED, False)

    def refusal(self, rc: int, adopting: bool = False) -> GuardError:
        """The exception for a C refusal code (reported as a violation), saying what to do."""
        return self.violation(self._refusal_error(rc, adopting))

    def _refusal_error(self, rc: int, adopting: bool) -> GuardError:
        me = identity.describe_caller()
        what = "adopt()" if adopting else operation()
        if rc == lib.GUARD_FORKED:
            return self.errors.ForkedConnectionError(
                CR_SERVER_GONE_ERROR,
                f"guarddb: process {os.getpid()} called {what} on {self._opened()} by process "
                f"{self.pid}, inherited across fork(). A forked child must open its own "
                f"connection: its parent's socket was pointed at /dev/null at fork, so closing "
                f"or dropping the inherited one is harmless (pools replace it on this error).",
            )
        if self.pending is not None:
            return self._pending_error(adopting)
        if rc == lib.GUARD_BUSY:
            holder = describe_thread(int(self.slot.busy))
            return self.errors.ConcurrentUseError(
                f"guarddb ({self.mode}): {me} called {what} on {self._opened()} while {holder} "
                f"was inside a call on it. A connection serves one thread at a time: give "
                f"each thread its own connection (or a pool), or pass guard='mutex' to "
                f"make threads wait their turn."
            )
        owner_ident = self.owner()
        if owner_ident:
            owner = f"belongs to {describe_thread(owner_ident)}"
        elif self.owner_thread is not None:  # its owner ended (lifecycle._owner_ended)
            # Named as recorded: a thread started since may have the ended one's id.
            ended = self.owner_thread
            owner = (
                f"belonged to {ended.kind} {ended.name!r} (id {ended.ident}), which ended: "
                f"no thread owns it now"
            )
        else:
            owner = "belongs to no thread now (a pool took it back, or disown())"
        return self.errors.ThreadOwnershipError(
            f"guarddb (strict): {me} called {what} on {self._opened()}, which "
            f"{owner}. In strict mode a connection and its cursors are used by their owner "
            f"thread only: open one connection per thread, or hand it over by calling "
            f"conn.adopt() in the new owner (pools do this on checkout)."
        )

    def foreign_rows(self, executor: int) -> GuardError:
        """The error for a fetch of rows that another thread's execute produced (reported)."""
        return self.violation(self._foreign_rows_error(executor))

    def _foreign_rows_error(self, executor: int) -> GuardError:
        me = identity.describe_caller()
        what = operation()
        if self.flags & lib.GUARD_STRICT:
            return self.errors.ThreadOwnershipError(
                f"guarddb (strict): {me} called {what} on a cursor of {self._opened()}, "
                f"whose rows come from a statement executed by {describe_thread(executor)}. "
                f"In strict mode a connection and its cursors are used by one thread: give "
                f"each thread its own connection and cursors."
            )
        return self.errors.ConcurrentUseError(
            f"guarddb ({self.mode}): {me} called {what} on a cursor of {self._opened()}, "
            f"whose rows come from a statement executed by {describe_thread(executor)}: "
            f"that thread's rows, not this one's. A cursor's result belongs to the thread "
            f"that executed it: give each thread its own cursor and connection, or pass "
            f"guard='mutex' to keep each thread's result its own."
        )

    def _pending_error(self, adopting: bool = False) -> GuardError:
        cursor = self.pending() if self.pending is not None else None
        holder = describe_thread(self.pending_holder)
        what = "adopt()" if adopting else operation()
        return self.errors.PendingResultError(
            f"guarddb: {identity.describe_caller()} called {what} on {self._opened()} while "
            f"{type(cursor).__name__} {id(cursor):#x}, executed by {holder} at "
            f"{self.pending_site}, still has unread rows (libmysqlclient would answer "
            f"'Commands out of sync'). Read its rows out or close that cursor first."
        )

    def stats(self) -> dict[str, Any]:
        """Counters of the guard: calls, waits, wait times, the thread inside now."""
        slot = self.slot
        holder = int(slot.busy)
        since = int(slot.held_since_ns)
        return {
            "mode": self.mode,
            "calls": int(slot.calls),
            "waits": int(slot.waits),
            "wait_total": slot.wait_ns_total / 1e9,
            "wait_longest": slot.wait_ns_max / 1e9,
            "holder": describe_thread(holder) if holder else None,
            "held_for": (lib.guard_now_ns() - since) / 1e9 if holder and since else None,
        }


class MutexGuard(ConnectionGuard):
    """Mode 'mutex': a call waits its turn instead of failing (DB-API threadsafety 2).

    The lock is the C slot's in-use word: waiting sleeps on a futex without
    the GIL, in slices so that Ctrl-C still works.  An unbuffered result, and
    with ``mutex_scope="transaction"`` an open transaction, keep it held.
    """

    __slots__ = ("timeout", "txn_holder")

    def __init__(
        self, mode: str, site: str, errors: DriverErrors, timeout: float | None, scope: str
    ) -> None:
        super().__init__(mode, site, errors)
        self.use_flags(lib.GUARD_TIMED)  # note when each holder got in (for messages, stats)
        self.per_thread_results = True
        self.timeout = timeout
        self.holds_transactions = scope == "transaction"
        self.txn_holder = 0

    def refused(self, rc: int) -> None:
        """Another thread is inside: wait for it (the base enter() then checks pending rows)."""
        if rc == lib.GUARD_BUSY:
            self._wait(rc)
        else:
            super().refused(rc)

    def _forget_holders(self) -> None:
        self.txn_holder = 0

    def _wait(self, rc: int) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        since = int(lib.guard_now_ns())
        while rc == lib.GUARD_BUSY:
            self._release_for_ended_thread()
            wait = _WAIT_SLICE
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise self._timeout_error()
            rc = self._wait_turn(0, wait, since)
        if rc:
            super().refused(rc)

    def _release_for_ended_thread(self) -> None:
        # A thread that ended while holding the connection for its transaction
        # or its unread rows will never let go: do it for it, and say so.
        holder = int(self.slot.busy)
        if not holder or identity.alive(holder):
            return
        what = None
        if holder == self.txn_holder:
            what, self.txn_holder = "an open transaction", 0
        elif self.pending is not None and holder == self.pending_holder:
            what = "unread rows"
        if what is None:
            return
        _log.warning(
            "guarddb (mutex): %s ended holding %s with %s; letting the other threads in",
            describe_thread(holder),
            self._opened(),
            what,
        )
        if what == "unread rows":
            self.unpin_result()
        self.release(holder)

    def _timeout_error(self) -> GuardError:
        stats = self.stats()
        held = stats["held_for"]
        return self.errors.LockTimeoutError(
            f"guarddb (mutex): {identity.describe_caller()} waited {self.timeout:g}s for "
            f"{self._opened()}, held by {stats['holder'] or 'nobody any more'}"
            f"{f' for {held:.3f}s' if held is not None else ''}, running {self.statement!r}. "
            f"Raise mutex_timeout, make that statement shorter, or give this thread its "
            f"own connection."
        )

    def hold_transaction(self, conn: Any) -> None:
        """Inside the guard, after a statement: keep the connection while a transaction is open."""
        me = identity.get_ident()
        # Open: begun, or statements with autocommit off since the last commit or rollback.
        if self.txn_holder != me and (self.began or (self.dirty and not conn.get_autocommit())):
            _enter(self.slot, 0, me)  # one level more, left at commit, rollback or close
            self.txn_holder = me

    def release_transaction(self) -> None:
        """The transaction ended: let the other threads in."""
        holder, self.txn_holder = self.txn_holder, 0
        if holder:
            self.release(holder)


class UncheckedGuard(ConnectionGuard):
    """Mode 'off': no checks; the socket is still neutered in a forked child."""

    __slots__ = ()

    def __init__(self, mode: str, site: str, errors: DriverErrors) -> None:
        super().__init__(mode, site, errors)
        self.use_flags(-1)  # statements skip the C guard altogether

    def enter(self, user: Any = None) -> None:
        """Nothing is checked."""

    def enter_to_close(self, user: Any = None) -> bool:
        """Nothing is checked."""
        return True

    def leave(self) -> None:
        """Nothing was entered."""


def make_guard(chosen: dict[str, Any], site: str, errors: DriverErrors) -> ConnectionGuard:
    """The guard of a new connection with these ``settings()``, opened at ``site``.

    ``errors``: the driver's error classes (its errors module).
    """
    mode = chosen["guard"]
    guard: ConnectionGuard
    if mode == "mutex":
        guard = MutexGuard(mode, site, errors, chosen["mutex_timeout"], chosen["mutex_scope"])
    elif mode == "off":
        guard = UncheckedGuard(mode, site, errors)
    else:
        guard = ConnectionGuard(mode, site, errors)
    guard.on_fork = chosen["on_fork"]
    guard.max_idle = chosen["max_idle"]
    guard.on_idle = chosen["on_idle"]
    guard.close_orphans = chosen["close_orphans"]
    return guard


def live_slots() -> int:
    """C guard slots held by connections in this process (a leak check)."""
    return int(lib.guard_live_slots())
