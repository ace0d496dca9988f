"""The guarded Connection: MySQLdb's Connection with every server call behind the C guard."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import MySQLdb.connections as _mysqldb_connections
from MySQLdb import ProgrammingError

from . import cursors
from .guard import ANY_USER, ConnectionGuard, caller_site, get_ident, make_guard, settings

_Base = _mysqldb_connections.Connection

# Calls that talk to the server, or change what the next read of the socket
# means.  Calls that only read the client's own state (thread_id(),
# insert_id(), escape(), ...) need no guard.
_SERVER_CALLS = (
    "begin",
    "change_user",
    "dump_debug_info",
    "kill",
    "query",
    "read_query_result",
    "select_db",
    "send_query",
    "set_server_option",
    "set_sql_mode",
    "show_warnings",
    "shutdown",
    "stat",
)


# The calls mysqlclient's cursors make on every statement: wrapped without *args.
_STATEMENT_CALLS = ("discard_result", "next_result", "store_result", "use_result")


def _guarded(name: str) -> Callable[..., Any]:
    unguarded = getattr(_Base, name)

    def _guarded_call(self: Connection, *args: Any, **kwargs: Any) -> Any:
        guard = self._guard
        if guard.inside == get_ident():  # part of a cursor's statement, entered already
            return unguarded(self, *args, **kwargs)
        guard.enter(None)
        try:
            return unguarded(self, *args, **kwargs)
        finally:
            guard.leave()

    return _named(_guarded_call, name, unguarded)


def _guarded_no_args(name: str) -> Callable[..., Any]:
    """The same for the calls mysqlclient's cursors make on every statement (no *args)."""
    unguarded = getattr(_Base, name)

    def _guarded_call(self: Connection) -> Any:
        guard = self._guard
        if guard.inside == get_ident():
            return unguarded(self)
        guard.enter(None)
        try:
            return unguarded(self)
        finally:
            guard.leave()

    return _named(_guarded_call, name, unguarded)


def _named(wrapper: Callable[..., Any], name: str, unguarded: Any) -> Callable[..., Any]:
    wrapper.__name__ = name
    wrapper.__qualname__ = f"Connection.{name}"
    wrapper.__doc__ = unguarded.__doc__
    # Tracebacks and guarddb's messages name the call ("commit"), not the wrapper.
    wrapper.__code__ = wrapper.__code__.replace(co_name=name)
    return wrapper


class Connection(_Base):  # type: ignore[misc]
    """A MySQLdb connection whose every server call goes through guarddb's guard.

    Takes mysqlclient's connect arguments, plus ``guard=`` (``"exclusive"``,
    the default, ``"strict"``, ``"mutex"`` or ``"off"``; see the README) and,
    for mutex mode, ``mutex_timeout=`` (seconds a call may wait; None: no
    limit) and ``mutex_scope=`` (``"call"``, or ``"transaction"``: a thread
    keeps the connection from its first statement to commit or rollback).
    """

    default_cursor = cursors.Cursor
    _guard: ConnectionGuard

    def __init__(
        self,
        *args: Any,
        guard: str | None = None,
        mutex_timeout: float | None = None,
        mutex_scope: str | None = None,
        **kwargs: Any,
    ) -> None:
        chosen = settings(guard=guard, mutex_timeout=mutex_timeout, mutex_scope=mutex_scope)
        self._guard = make_guard(chosen, caller_site())
        super().__init__(*args, **kwargs)
        self._guard.watch_socket(self.fileno())
        self._guard.label = f"MySQL connection {self.thread_id()} ({self.get_host_info()})"
        self.cursorclass = cursors.guarded_class(self.cursorclass)

    def __del__(self) -> None:
        guard = self.__dict__.get("_guard")
        if guard is not None and guard.slot is not None:
            # Before the connection's socket closes (its number will be reused).
            guard.forget_socket()
            guard.free()

    @property
    def guard_mode(self) -> str:
        """The guard mode this connection was opened with."""
        return self._guard.mode

    def guard_stats(self) -> dict[str, Any]:
        """The guard's counters: calls, waits, total and longest wait (s), the holder now."""
        return self._guard.stats()

    def commit(self) -> None:
        """Commit; in mutex mode with mutex_scope="transaction", let other threads in."""
        self._end_transaction(_Base.commit)

    def rollback(self) -> None:
        """Roll back; in mutex mode with mutex_scope="transaction", let other threads in."""
        self._end_transaction(_Base.rollback)

    def autocommit(self, on: bool) -> None:
        """Set autocommit; turning it on ends a mutex-mode transaction hold too."""
        if on:
            self._end_transaction(_Base.autocommit, on)
        else:
            self._guarded_autocommit(on)

    _guarded_autocommit = _guarded("autocommit")

    def _end_transaction(self, end: Callable[..., None], *args: Any) -> None:
        guard = self._guard
        guard.enter(None)
        try:
            end(self, *args)
        finally:
            if guard.holds_transactions and guard.txn_holder == get_ident():
                guard.release_transaction()
            guard.leave()

    def adopt(self) -> None:
        """Make the calling thread this connection's owner (strict mode).

        Pools call it when they hand a connection to a thread.  Refused while
        another thread is inside a call on it or holds its unread unbuffered
        result.
        """
        self._guard.adopt()

    def cursor(self, cursorclass: type | None = None) -> Any:
        """Create a cursor; any MySQLdb cursor class given is guarded too."""
        cls = cursors.guarded_class(cursorclass or self.cursorclass, self._guard.per_thread_results)
        return cls(self)

    def set_character_set(self, charset: str, collation: str | None = None) -> None:
        """Set the connection character set (and collation)."""
        guard = self._guard
        guard.enter(None)
        try:
            super().set_character_set(charset, collation)
        finally:
            guard.leave()

    def ping(self, *args: Any) -> Any:
        """Check the connection; ``ping(True)`` may reconnect (a new socket is watched)."""
        guard = self._guard
        guard.enter(None)
        try:
            alive = super().ping(*args)
            if args and args[0]:
                # ping(True) may have reconnected: a new socket to watch.
                guard.watch_socket(self.fileno())
            return alive
        finally:
            guard.leave()

    def close(self) -> None:
        """Close the connection; in a forked child, without touching the parent's session."""
        guard = self._guard
        if guard.forked():
            # The socket was pointed at /dev/null at fork: COM_QUIT goes nowhere.
            guard.forget_socket()
            # mysqlclient >= 2.3 has its own per-connection lock; one that a
            # parent thread held at fork stays held here for good, and close()
            # says "in use".  The handle is then freed with the object (its
            # dealloc takes no lock).
            with contextlib.suppress(ProgrammingError):
                super().close()
            return
        guard.enter(ANY_USER)
        try:
            guard.forget_socket()
            super().close()
        finally:
            if guard.pending is not None:
                guard.unpin_result()
            if guard.holds_transactions:
                guard.release_transaction()
            guard.leave()


for _name in _SERVER_CALLS:
    if hasattr(_Base, _name):  # some calls exist in one mysqlclient version only
        setattr(Connection, _name, _guarded(_name))
for _name in _STATEMENT_CALLS:
    setattr(Connection, _name, _guarded_no_args(_name))
del _name
cursors._GUARDED_QUERY = Connection.query


def __getattr__(name: str) -> Any:
    # Code that reaches into MySQLdb.connections (its helpers, its exception
    # names) still finds them once guarddb stands in for it.
    return getattr(_mysqldb_connections, name)
