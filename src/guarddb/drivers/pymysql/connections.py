"""The guarded Connection: PyMySQL's Connection with every server call behind the C guard.

PyMySQL speaks the protocol in Python over its own socket (``_sock``, read
through ``_rfile``).  Every public call that reads or writes that socket
enters the connection's guard first; the calls PyMySQL makes from inside
one (a cursor's ``query``, ``ping(reconnect=True)``'s ``connect``) find the
guard held by their own thread (``guard.inside``) and go straight through.
The socket is watched (``watch_socket``) after every connect, so that a
forked child's copy is pointed at /dev/null before any Python code runs there.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import struct
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

import pymysql.connections as _pm_connections
import pymysql.cursors as _pc
from pymysql import err
from pymysql.constants import COMMAND

from ...core import identity, lifecycle, transactions
from ...core.guard import ANY_USER, ConnectionGuard, make_guard
from ...core.settings import settings
from ...core.sites import add_library_dir, caller_site
from . import cursors, errors

if TYPE_CHECKING:
    from typing import TypeAlias

_Base: TypeAlias = _pm_connections.Connection
# PyMySQL's own frames are not the application's: a call's site is found past them.
add_library_dir(os.path.dirname(_pm_connections.__file__))

#: ping()'s default for ``reconnect``: True in PyMySQL 1.1, False (deprecated) from 1.2.
#: Kept as PyMySQL has it: SQLAlchemy reads the signature to decide what to pass.
_PING_RECONNECTS = inspect.signature(_Base.ping).parameters["reconnect"].default

#: COM_QUIT, as PyMySQL's close() sends it.
_COM_QUIT = struct.pack("<iB", 1, COMMAND.COM_QUIT)

# Calls that talk to the server and need nothing but the guard.  Calls that
# only read the client's own state (thread_id(), insert_id(), escape(), ...)
# need no guard.
_SERVER_CALLS = ("kill", "next_result", "show_warnings")


def _guarded(name: str, sends_sql: bool = False) -> Callable[..., Any]:
    unguarded = getattr(_Base, name)

    def _guarded_call(self: Connection, *args: Any, **kwargs: Any) -> Any:
        guard = self._guard
        me = identity.get_ident()
        if guard.inside == me:  # part of a statement or call of this thread's, entered already
            return unguarded(self, *args, **kwargs)
        guard.enter(None)
        kinds = transactions.READ
        if sends_sql:
            guard.statement = args[0] if args else kwargs.get("sql")
            kinds = guard.statement_starts(guard.statement, None)
        outer, guard.inside = guard.inside, me
        try:
            result = unguarded(self, *args, **kwargs)
            if not transactions.plain(kinds):
                guard.statement_done(kinds, self)  # transaction control in SQL text
            return result
        finally:
            guard.inside = outer
            guard.leave()

    _guarded_call.__name__ = name
    _guarded_call.__qualname__ = f"Connection.{name}"
    _guarded_call.__doc__ = unguarded.__doc__
    _guarded_call.__wrapped__ = unguarded  # type: ignore[attr-defined]  # its signature
    # Tracebacks and guarddb's messages name the call ("kill"), not the wrapper.
    _guarded_call.__code__ = _guarded_call.__code__.replace(co_name=name)
    return _guarded_call


def _decoded(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class Connection(_Base):
    """A PyMySQL connection whose every server call goes through guarddb's guard.

    Takes PyMySQL's connect arguments, plus ``guard=`` (``"exclusive"``, the
    default, ``"strict"``, ``"mutex"`` or ``"off"``; see the README),
    ``on_fork=`` (``"raise"``, the default, or ``"reconnect"``: a forked
    child's first use opens a fresh session with the same arguments),
    ``max_idle=`` (seconds: guarddb closes the connection once it has been
    idle that long, outside a transaction), ``on_idle=`` (``"raise"``: the
    next call gets IdleClosedError; ``"reconnect"``), ``close_orphans=``
    (close it once the thread that owns it has ended) and, for mutex mode,
    ``mutex_timeout=`` (seconds a call may wait; None: no limit) and
    ``mutex_scope=`` (``"call"``, or ``"transaction"``: a thread keeps the
    connection from its first statement to commit or rollback), and under
    gevent ``cooperative=`` (True: the socket's waits yield to the hub even
    where gevent has not patched the socket module; see :meth:`_cooperate`).
    """

    __module__ = "guarddb.pymysql.connections"  # its public path (pickles, reprs)
    _guard: ConnectionGuard
    cursorclass: type[Any]
    _sock: Any
    #: True while PyMySQL's own set-up runs in connect() (its cursors are PyMySQL's).
    _connecting = False
    #: cooperative=True: each new session's socket is made gevent's (_cooperate).
    _cooperative = False
    #: Sessions opened by this object (connect, reconnects).
    _sessions = 0
    #: What a guarded cursor's statement calls, inside the guard already: PyMySQL's
    #: query(), or a subclass's own (__init_subclass__).
    _pymysql_query = _Base.query

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "query" in vars(cls):
            cls._pymysql_query = cls.query  # a query() of the subclass's own is kept

    def __init__(
        self,
        *args: Any,
        guard: str | None = None,
        on_fork: str | None = None,
        mutex_timeout: float | None = None,
        mutex_scope: str | None = None,
        max_idle: float | None = None,
        on_idle: str | None = None,
        close_orphans: bool | None = None,
        cooperative: bool | None = None,
        **kwargs: Any,
    ) -> None:
        chosen = settings(
            guard=guard,
            on_fork=on_fork,
            mutex_timeout=mutex_timeout,
            mutex_scope=mutex_scope,
            max_idle=max_idle,
            on_idle=on_idle,
            close_orphans=close_orphans,
            cooperative=cooperative,
        )
        if chosen["cooperative"]:
            identity.cooperative()  # greenlets may run inside its statements
        self._cooperative = chosen["cooperative"]
        if kwargs.get("cursorclass") is not None:
            cursors.guarded_class(kwargs["cursorclass"])  # not a PyMySQL cursor: before connecting
        self._guard = make_guard(chosen, caller_site(), errors)
        self._guard.connection = weakref.ref(self)
        #: Session state changed through the API since connect, that PyMySQL's own
        #: connect() would not set again (it does the character set and autocommit).
        self._session: dict[str, Any] = {}
        super().__init__(*args, **kwargs)  # connects, unless defer_connect=True
        self.cursorclass = cursors.guarded_class(self.cursorclass)
        self._guard.host = self.unix_socket or f"{self.host}:{self.port}"
        self._guard.db = _decoded(self.db)
        lifecycle.register(self)

    # -- sessions: connect, reconnect, close ------------------------------------------------

    def connect(self, sock: Any = None) -> None:
        """Open the session (PyMySQL's connect(); on a closed connection, a new session)."""
        guard = self._guard
        if guard.inside == identity.get_ident():  # ping(reconnect=True) reconnects
            self._open_session(sock)
            return
        opened = self._sessions
        self._enter_to_reopen(guard)
        try:
            if self._sessions == opened:  # else the guard reconnected it just now (on_fork)
                self._open_session(sock)
        finally:
            guard.leave()

    def _enter_to_reopen(self, guard: ConnectionGuard) -> None:
        """Enter for a call that opens a session: on one guarddb closed, the user's reconnect."""
        try:
            guard.enter(None)
        except errors.IdleClosedError:
            # connect() and ping(reconnect=True) reopen a closed connection, as
            # PyMySQL does one the server closed: the user asks for a new session.
            guard.closed_by_user()
            guard.enter(None)

    def _open_session(self, sock: Any) -> None:
        """PyMySQL's own connect() (the slot is this thread's), then watch the new socket."""
        guard = self._guard
        outer, guard.inside = guard.inside, identity.get_ident()
        self._connecting = True
        try:
            # A socket PyMySQL replaces without closing closes when it is freed:
            # its number is forgotten now, before it can be reused.
            guard.forget_socket()
            _Base.connect(self, sock)
            if self._cooperative:
                self._cooperate()
        finally:
            self._connecting = False
            guard.inside = outer
        self._session_opened()

    def _create_ssl_ctx(self, sslp: Any) -> Any:
        """PyMySQL's TLS context; with cooperative=True, gevent's (its sockets yield)."""
        ctx = super()._create_ssl_ctx(sslp)
        if self._cooperative:
            from gevent import ssl as green_ssl

            if not isinstance(ctx, green_ssl.SSLContext):
                # The same context, configured by PyMySQL; only wrap_socket() differs:
                # it makes gevent's SSLSocket (gevent's class adds no state).
                ctx.__class__ = green_ssl.SSLContext
        return ctx

    def _cooperate(self) -> None:
        """Make the new session's socket gevent's: its waits yield to the hub.

        Where gevent has patched the socket module, PyMySQL's socket is gevent's
        already.  Otherwise the connected stream is taken over, on the same
        descriptor, by a gevent socket (connecting itself blocked, as with
        mysqlclient's cooperative connections).  Nothing is buffered yet:
        PyMySQL's connect() has read every answer of its set-up.  A TLS socket
        is gevent's already: made by the context of :meth:`_create_ssl_ctx`.
        """
        from gevent import socket as green

        sock = self._sock
        if isinstance(sock, green.socket):
            return
        timeout = sock.gettimeout()
        family, kind, proto = sock.family, sock.type, sock.proto
        cooperative = green.socket(family, kind, proto, fileno=sock.detach())
        cooperative.settimeout(timeout)
        self._sock = cooperative
        self._rfile = cooperative.makefile("rb")

    def _session_opened(self) -> None:
        """A new session is up (connect, or reconnect): watch its socket, start clean."""
        guard = self._guard
        guard.watch_socket(self._sock.fileno())
        guard.label = f"MySQL connection {self.thread_id()} ({self.host_info})"
        guard.autocommit = bool(self.get_autocommit())
        guard.transaction_ended()  # the session's own set-up opened no transaction
        guard.locked = False
        guard.opened_at = time.monotonic()
        guard.server_thread_id = self.thread_id()
        self._sessions += 1
        if self._sessions > 1:
            lifecycle.reopened(self)

    def _reopen_session(self) -> None:
        """A fresh session for this object (on_fork / on_idle="reconnect").

        The guard has made its slot this thread's.  The old socket is let go
        of locally (after a fork it points at /dev/null, so the parent's session
        sees nothing), and PyMySQL's own connect() runs again with the same
        arguments: it sets the character set and autocommit as they were last
        set through the API, the SQL mode and init_command of the connect
        arguments.  A database chosen with select_db() is chosen again.
        Settings made in SQL text (``SET ...``) are not replayed.
        """
        guard = self._guard
        outer, guard.inside = guard.inside, identity.get_ident()
        try:
            if self._sock is not None:
                self._let_go_locally()
            self._result = None  # a result of the old session: nothing more comes of it
            if "_pid" in self._connect_attrs:
                self._connect_attrs["_pid"] = str(os.getpid())
            database = self._session.get("database")
            self._session = {}
            self._open_session(None)
            if database is not None:
                self.select_db(database)
        finally:
            guard.inside = outer

    def _let_go_locally(self) -> None:
        """Drop the socket without a word to the server: after a fork, the parent's.

        Without the buffered reader's own close() either: a parent thread that
        was reading at fork holds its lock, for good in this process.  Its raw
        stream is closed under it (no lock); when it is freed, it finds itself
        closed and takes no lock either.
        """
        result = self._result
        if result is not None and result.unbuffered_active:
            # PyMySQL would read the rest of it from the socket when it is freed.
            result.unbuffered_active = False
        guard = self.__dict__.get("_guard")
        if guard is not None and guard.slot is not None:
            guard.forget_socket()
        rfile, sock = self._rfile, self._sock
        self._rfile = self._sock = None
        with contextlib.suppress(Exception):
            if rfile is not None:
                rfile.raw.close()
            if sock is not None:
                sock.close()

    def _force_close(self) -> None:
        guard = self.__dict__.get("_guard")
        if guard is not None and guard.slot is not None:
            guard.forget_socket()  # before the close: its number will be reused
        _Base._force_close(self)

    def __del__(self) -> None:
        try:
            result = self.__dict__.get("_result")
            if result is not None and result.unbuffered_active:
                # Its rows go with the session: PyMySQL would try to read them from
                # the closed socket when the result is freed, and print the error.
                result.unbuffered_active = False
            guard = self.__dict__.get("_guard")
            if guard is not None and guard.slot is not None:
                if guard.forked():
                    self._let_go_locally()  # the parent's socket: no lock, no word
                guard.forget_socket()  # before the socket closes (its number will be reused)
                guard.free()
            _Base._force_close(self)
        except Exception:
            pass  # nothing may escape a finalizer (at exit, modules are half torn down)

    def close(self) -> None:
        """Close the connection; in a forked child, without touching the parent's session.

        Any thread may close a connection nobody else is inside.  Unread
        unbuffered rows are dropped with the session.
        """
        guard = self._guard
        if guard.closed_reason is not None:  # closed by guarddb already: now by its user too
            guard.closed_by_user()
            self._closed = True
            return
        if guard.forked():
            # The socket was pointed at /dev/null at fork: closed here only, no COM_QUIT.
            if self._closed:
                raise err.Error("Already closed")
            self._closed = True
            self._let_go_locally()
            return
        # Any thread may close a connection nobody is inside (pools close
        # from other threads: dispose, recycle), strict mode included.
        if not guard.enter_to_close(ANY_USER):  # guarddb closed it a moment ago
            guard.closed_by_user()
            self._closed = True
            return
        outer, guard.inside = guard.inside, identity.get_ident()
        try:
            _Base.close(self)
        finally:
            guard.inside = outer
            result = self._result
            if result is not None and result.unbuffered_active:
                # Unread rows of the closed session: PyMySQL would try to read
                # them when the result is freed, and print the error it gets.
                result.unbuffered_active = False
            if guard.pending is not None:
                guard.unpin_result()
            if guard.holds_transactions:
                guard.release_transaction()
            guard.leave()

    def _close_for_guarddb(self) -> bool:
        """COM_QUIT for guarddb's lifecycle thread, which holds the slot."""
        with contextlib.suppress(Exception):  # as PyMySQL's close(): the server may be gone
            self._write_bytes(_COM_QUIT)
        self._force_close()
        return True

    def _rollback_for_guarddb(self) -> None:
        """Roll back for guarddb's lifecycle thread, which holds the slot (past the guard)."""
        _Base.rollback(self)

    def _transaction_footprint(self) -> str | None:
        """The server's word on the session's transaction, for guarddb's lifecycle thread,
        which holds the slot (past the guard): "" if it modified and locked nothing."""
        try:
            _Base.query(self, transactions.FOOTPRINT_SQL)
            rows = self._result.rows if self._result is not None else ()
        except err.MySQLError as error:
            if error.args and error.args[0] in transactions.ACCESS_DENIED:
                return None
            return f"no answer: {error}"  # not confirmed: the connection stays
        return transactions.footprint(rows)

    def ping(self, reconnect: bool = _PING_RECONNECTS) -> Any:
        """Check the connection; ``ping(reconnect=True)`` may reconnect (a new socket is watched).

        In a forked child (on_fork="raise") it raises ForkedConnectionError
        (2006) without reporting a violation: pools ping to find the
        connections they must replace, and this is how they find it.  On a
        connection guarddb closed (max_idle, close_orphans), ``ping()`` raises
        IdleClosedError (2006) and ``ping(reconnect=True)`` opens a new
        session, as PyMySQL does for a connection the server closed.
        """
        guard = self._guard
        me = identity.get_ident()
        if guard.inside == me:  # ping(reconnect=True) pings again once reconnected
            return _Base.ping(self, reconnect)
        if guard.on_fork == "raise" and guard.forked():
            raise guard.forked_error()
        if reconnect:
            self._enter_to_reopen(guard)
        else:
            guard.enter(None)
        outer, guard.inside = guard.inside, me
        try:
            return _Base.ping(self, reconnect)
        finally:
            guard.inside = outer
            guard.leave()

    # -- transactions and session state ----------------------------------------------------

    def commit(self) -> None:
        """Commit; in mutex mode with mutex_scope="transaction", let other threads in."""
        self._end_transaction(_Base.commit)

    def rollback(self) -> None:
        """Roll back; in mutex mode with mutex_scope="transaction", let other threads in."""
        self._end_transaction(_Base.rollback)

    def _end_transaction(self, end: Callable[..., None]) -> None:
        guard = self._guard
        guard.enter(None)
        try:
            end(self)
            guard.transaction_ended()
        finally:
            if guard.holds_transactions and guard.txn_holder == identity.get_ident():
                guard.release_transaction()
            guard.leave()

    def begin(self) -> None:
        """Begin a transaction explicitly (not needed with autocommit off, the default)."""
        guard = self._guard
        guard.enter(None)
        try:
            _Base.begin(self)
            guard.transaction_ended()  # the server commits what was open
            guard.began = True
        finally:
            guard.leave()

    def autocommit(self, value: Any) -> None:
        """Set autocommit; turning it on ends a mutex-mode transaction hold too."""
        guard = self._guard
        guard.enter(None)
        try:
            was = guard.autocommit
            _Base.autocommit(self, value)
            # Noted inside the guard: guarddb's reaper reads it while holding the guard.
            guard.autocommit = bool(value)
            # Turned on: the server commits what was open; turned off: nothing is open
            # yet (statements were autocommitted).  A transaction begin() opened stays.
            if bool(value) != was and (value or not guard.began):
                guard.transaction_ended()
        finally:
            if (
                value
                and not guard.began
                and guard.holds_transactions
                and guard.txn_holder == identity.get_ident()
            ):
                guard.release_transaction()
            guard.leave()

    def in_transaction(self) -> bool:
        """Whether a transaction may be open, as far as the client can tell (no round trip).

        True after a statement with autocommit off, or after begin() (or
        ``BEGIN``/``START TRANSACTION`` in SQL), until commit() or rollback()
        (or ``COMMIT``/``ROLLBACK`` in SQL, or autocommit turned on).
        """
        return self._guard.in_transaction()

    def uncommitted_writes(self) -> bool:
        """Whether the open transaction has run a statement that may have written.

        As :meth:`guarddb.connections.Connection.uncommitted_writes`: known reads
        never make it true; a transaction without uncommitted writes loses
        nothing when rolled back (the reaper may close it, a forked child may
        reconnect past it).  No server round trip.
        """
        return self._guard.uncommitted_writes()

    def select_db(self, db: Any) -> None:
        """Make ``db`` the session's default database."""
        guard = self._guard
        guard.enter(None)
        try:
            _Base.select_db(self, db)
        finally:
            guard.leave()
        self._session["database"] = db

    def set_character_set(self, charset: str, collation: str | None = None) -> None:
        """Set the connection character set (and collation): ``SET NAMES``."""
        guard = self._guard
        if guard.inside == identity.get_ident():  # PyMySQL's connect() sets it
            _Base.set_character_set(self, charset, collation)
            return
        guard.enter(None)
        try:
            _Base.set_character_set(self, charset, collation)
        finally:
            guard.leave()

    # -- cursors, ownership, introspection -------------------------------------------------

    def cursor(self, cursor: type | None = None) -> Any:
        """Create a cursor; any PyMySQL cursor class given is guarded too."""
        if self._connecting:  # PyMySQL's own set-up statements (sql_mode, init_command)
            return _pc.Cursor(self)
        cls = cursors.guarded_class(cursor or self.cursorclass, self._guard.per_thread_results)
        return cls(self)

    def adopt(self) -> None:
        """Make the calling thread this connection's owner (strict mode; orphans).

        Pools call it when they hand a connection to a thread.  Refused while
        another thread is inside a call on it or holds its unread unbuffered
        result.
        """
        self._guard.adopt()
        lifecycle.adopted(self)

    def disown(self) -> None:
        """Give the connection back to a pool: no thread owns it until the next adopt().

        A connection nobody owns is never an orphan (max_idle closes it if it
        stays unused); in strict mode no thread may use it until one adopts it.
        """
        self._guard.disown()
        lifecycle.disowned(self)

    @property
    def guard_mode(self) -> str:
        """The guard mode this connection was opened with."""
        return self._guard.mode

    @property
    def guard_settings(self) -> dict[str, Any]:
        """guarddb's connect keywords as this connection got them (explicit, or the defaults)."""
        guard = self._guard
        return {
            "guard": guard.mode,
            "on_fork": guard.on_fork,
            "mutex_timeout": getattr(guard, "timeout", None),
            "mutex_scope": "transaction" if guard.holds_transactions else "call",
            "max_idle": guard.max_idle,
            "on_idle": guard.on_idle,
            "close_orphans": guard.close_orphans,
            "cooperative": self._cooperative,
        }

    @property
    def forked(self) -> bool:
        """True in a forked child of the process whose session this is (not reconnected yet)."""
        return self._guard.forked()

    def guard_stats(self) -> dict[str, Any]:
        """The guard's counters: calls, waits, total and longest wait (s), the holder now."""
        return self._guard.stats()


Connection.query = _guarded("query", sends_sql=True)
for _name in _SERVER_CALLS:
    setattr(Connection, _name, _guarded(_name))
del _name
