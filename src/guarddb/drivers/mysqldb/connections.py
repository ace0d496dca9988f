"""The guarded Connection: MySQLdb's Connection with every server call behind the C guard."""

from __future__ import annotations

import contextlib
import functools
import os
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

import MySQLdb.connections as _mysqldb_connections
from MySQLdb import MySQLError, ProgrammingError, _mysql

from ...core import identity as _identity
from ...core import lifecycle, transactions
from ...core.guard import ANY_USER, ConnectionGuard, make_guard
from ...core.settings import settings
from ...core.sites import add_library_dir, caller_site
from . import cursors, errors

if TYPE_CHECKING:
    from typing import TypeAlias

_Base: TypeAlias = _mysqldb_connections.Connection
# mysqlclient's own frames are not the application's: a call's site is found past them.
add_library_dir(os.path.dirname(_mysqldb_connections.__file__))

# Calls that talk to the server, or change what the next read of the socket
# means.  Calls that only read the client's own state (thread_id(),
# insert_id(), escape(), ...) need no guard.
_SERVER_CALLS = (
    "change_user",
    "dump_debug_info",
    "kill",
    "read_query_result",
    "set_server_option",
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
        if guard.inside == _identity.get_ident():  # part of a cursor's statement, entered already
            return unguarded(self, *args, **kwargs)
        guard.enter(None)
        try:
            return unguarded(self, *args, **kwargs)
        finally:
            guard.leave()

    return _named(_guarded_call, name, unguarded)


def _guarded_sql(name: str, waits_for_answer: bool) -> Callable[..., Any]:
    """The same for the connection's own calls that send SQL (query, send_query).

    What the statement does to the transaction is noted (guarddb.core.transactions);
    transaction control takes effect once the answer says it succeeded.
    """
    unguarded = getattr(_Base, name)

    def _guarded_call(self: Connection, query: Any) -> Any:
        guard = self._guard
        if guard.inside == _identity.get_ident():  # part of a cursor's statement, entered already
            return unguarded(self, query)
        guard.enter(None)
        try:
            kinds = guard.statement_starts(query, None)
            result = unguarded(self, query)
            if waits_for_answer and not transactions.plain(kinds):
                guard.statement_done(kinds, self)
            return result
        finally:
            guard.leave()

    return _named(_guarded_call, name, unguarded)


def _guarded_no_args(name: str) -> Callable[..., Any]:
    """The same for the calls mysqlclient's cursors make on every statement (no *args)."""
    unguarded = getattr(_Base, name)

    def _guarded_call(self: Connection) -> Any:
        guard = self._guard
        if guard.inside == _identity.get_ident():
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


def _where(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str | None]:
    """``host:port`` (or the unix socket) and the database, from mysqlclient's connect arguments."""
    named = dict(zip(("host", "user", "password", "database", "port", "unix_socket"), args))
    named.update(kwargs)
    database = named.get("database", named.get("db"))
    if named.get("unix_socket") and named.get("host") in (None, "", "localhost"):
        return str(named["unix_socket"]), database
    return f"{named.get('host') or 'localhost'}:{named.get('port') or 3306}", database


class Connection(_Base):
    """A MySQLdb connection whose every server call goes through guarddb's guard.

    Takes mysqlclient's connect arguments, plus ``guard=`` (``"exclusive"``,
    the default, ``"strict"``, ``"mutex"`` or ``"off"``; see the README),
    ``on_fork=`` (``"raise"``, the default, or ``"reconnect"``: a forked
    child's first use opens a fresh session with the same arguments),
    ``max_idle=`` (seconds: guarddb closes the connection once it has been
    idle that long, outside a transaction), ``on_idle=`` (``"raise"``: the
    next call gets IdleClosedError; ``"reconnect"``), ``close_orphans=``
    (close it once the thread that owns it has ended) and, for mutex mode,
    ``mutex_timeout=`` (seconds a call may wait; None: no limit) and
    ``mutex_scope=`` (``"call"``, or ``"transaction"``: a thread keeps the
    connection from its first statement to commit or rollback), and under
    gevent ``cooperative=`` (True: a statement waits for the server by
    yielding to the hub; see :class:`CooperativeQueries`).
    """

    __module__ = "guarddb.connections"  # its public path (pickles, reprs)
    default_cursor = cursors.Cursor
    _guard: ConnectionGuard
    cursorclass: type[Any]

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
            _identity.cooperative()
            # Its own class, so that the statement path of every other connection
            # pays nothing for it (cursors call a query() of a class's own).
            self.__class__ = _cooperative_class(type(self))  # type: ignore[arg-type]
            self._read_timeout = kwargs.get("read_timeout")
        self._guard = make_guard(chosen, caller_site(), errors)
        self._guard.connection = weakref.ref(self)
        self._guard.host, self._guard.db = _where(args, kwargs)
        # What a fresh session needs to be this one again: the arguments (kept
        # only when a reconnect may need them) and what was changed since.
        reconnects = "reconnect" in (chosen["on_fork"], chosen["on_idle"])
        self._connect_args = (args, kwargs) if reconnects else None
        self._session: dict[str, Any] = {}
        super().__init__(*args, **kwargs)
        self._session_opened()
        self.cursorclass = cursors.guarded_class(self.cursorclass)  # type: ignore[arg-type]
        lifecycle.register(self)

    def _session_opened(self) -> None:
        """A new session is up (connect, or reconnect): watch its socket, start clean."""
        guard = self._guard
        guard.watch_socket(self.fileno())
        guard.label = f"MySQL connection {self.thread_id()} ({self.get_host_info()})"
        guard.autocommit = bool(self.get_autocommit())
        guard.transaction_ended()  # the session's own set-up opened no transaction
        guard.locked = False
        guard.opened_at = time.monotonic()
        guard.server_thread_id = self.thread_id()

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
            "cooperative": isinstance(self, CooperativeQueries),
        }

    @property
    def forked(self) -> bool:
        """True in a forked child of the process whose session this is (not reconnected yet)."""
        return self._guard.forked()

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
        guard = self._guard
        guard.enter(None)
        try:
            was = guard.autocommit
            _Base.autocommit(self, on)
            # Noted inside the guard: guarddb's reaper reads it while holding the guard.
            guard.autocommit = bool(on)
            # Turned on: the server commits what was open; turned off: nothing is open
            # yet (statements were autocommitted).  A transaction begin() opened stays.
            if bool(on) != was and (on or not guard.began):
                guard.transaction_ended()
        finally:
            if (
                on
                and not guard.began
                and guard.holds_transactions
                and guard.txn_holder == _identity.get_ident()
            ):
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

    def _end_transaction(self, end: Callable[..., None]) -> None:
        guard = self._guard
        guard.enter(None)
        try:
            end(self)
            guard.transaction_ended()
        finally:
            if guard.holds_transactions and guard.txn_holder == _identity.get_ident():
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

        Known reads (``SELECT`` without a locking clause, ``SHOW``, ...) never
        make it true; any other statement does, conservatively, until commit
        or rollback.  A transaction with no uncommitted writes loses nothing
        when rolled back: guarddb's reaper may close it, and a forked child may
        reconnect past it.  No server round trip.
        """
        return self._guard.uncommitted_writes()

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

        Pools call it when a connection is checked in.  A connection nobody owns
        is never an orphan (the pool keeps it for the next checkout; max_idle
        closes it if it stays unused); in strict mode no thread may use it
        until one adopts it.
        """
        self._guard.disown()
        lifecycle.disowned(self)

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
        self._session["charset"] = (charset, collation)

    def set_sql_mode(self, sql_mode: str) -> None:
        """Set the session's SQL mode."""
        self._guarded_set_sql_mode(sql_mode)
        self._session["sql_mode"] = sql_mode

    _guarded_set_sql_mode = _guarded("set_sql_mode")

    def select_db(self, db: str) -> None:
        """Make ``db`` the session's default database."""
        self._guarded_select_db(db)
        self._session["database"] = db

    _guarded_select_db = _guarded("select_db")

    def _reopen_session(self) -> None:
        """A fresh session for this object (on_fork / on_idle="reconnect").

        The guard has made its slot usable again.  The old handle is closed
        (after a fork its socket points at /dev/null, so the parent's session
        sees nothing), mysqlclient's own set-up runs again
        with the same arguments, and what was changed on the old session since
        (autocommit, character set, SQL mode, database) is changed again.
        Settings made in SQL text (``SET ...``) are not replayed.
        """
        args, kwargs = self._connect_args  # type: ignore[misc]  # kept: a reconnect may come
        before, self._session = self._session, {}
        autocommit = self._guard.autocommit
        # Python-side state the user may have changed since connect: kept as it is.
        kept = {
            name: getattr(self, name)
            for name in ("cursorclass", "encoders", "converter", "executemany_fallback")
            if getattr(self, name, None) is not None  # close() drops the converter
        }
        # mysqlclient >= 2.3: a lock that a parent thread held at fork stays
        # held here ("in use"); the old handle is then left unclosed (a /dev/null fd).
        if self.open:  # guarddb's reaper closed it already
            with contextlib.suppress(ProgrammingError):
                _mysql.connection.close(self)
        try:
            _Base.__init__(self, *args, **kwargs)
        except BaseException:
            with contextlib.suppress(Exception):
                _mysql.connection.close(self)
            raise
        for name, value in kept.items():
            setattr(self, name, value)
        if before.get("charset", self._session.get("charset")) != self._session.get("charset"):
            self.set_character_set(*before["charset"])
        if before.get("sql_mode", self._session.get("sql_mode")) != self._session.get("sql_mode"):
            self.set_sql_mode(before["sql_mode"])
        if "database" in before:
            self.select_db(before["database"])
        if bool(self.get_autocommit()) != autocommit:
            self.autocommit(autocommit)
        self._session_opened()
        lifecycle.reopened(self)

    def _close_for_guarddb(self) -> bool:
        """COM_QUIT for guarddb's lifecycle thread, which holds the slot; False: not now."""
        guard = self._guard
        fd = self.fileno()
        guard.forget_socket()  # before the close: the number will be reused
        try:
            _mysql.connection.close(self)
        except MySQLError:
            # mysqlclient 2.3's own lock, taken by an unguarded client-side call
            # (thread_id(), ...) in another thread: not closed, look again later.
            guard.watch_socket(fd)
            return False
        return True

    def _rollback_for_guarddb(self) -> None:
        """Roll back for guarddb's lifecycle thread, which holds the slot (past the guard)."""
        _mysql.connection.rollback(self)

    def _transaction_footprint(self) -> str | None:
        """The server's word on the session's transaction, for guarddb's lifecycle thread,
        which holds the slot (past the guard): "" if it modified and locked nothing."""
        try:
            _mysql.connection.query(self, transactions.FOOTPRINT_SQL)
            result = _mysql.connection.store_result(self)
            rows = result.fetch_row(0) if result is not None else ()
        except MySQLError as error:
            if error.args and error.args[0] in transactions.ACCESS_DENIED:
                return None
            return f"no answer: {error}"  # not confirmed: the connection stays
        return transactions.footprint(rows)

    def ping(self, *args: Any) -> Any:
        """Check the connection; ``ping(True)`` may reconnect (a new socket is watched).

        In a forked child (on_fork="raise") it raises ForkedConnectionError
        (2006) without reporting a violation: pools ping to find the
        connections they must replace, and this is how they find it.
        """
        guard = self._guard
        if guard.on_fork == "raise" and guard.forked():
            raise guard.forked_error()
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
        if guard.closed_reason is not None:  # closed by guarddb already: now by its user too
            guard.closed_by_user()
            return
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
        # Any thread may close a connection nobody is inside (pools close
        # from other threads: dispose, recycle), strict mode included.
        if not guard.enter_to_close(ANY_USER):  # guarddb closed it a moment ago
            guard.closed_by_user()
            return
        try:
            guard.forget_socket()
            super().close()
        finally:
            if guard.pending is not None:
                guard.unpin_result()
            if guard.holds_transactions:
                guard.release_transaction()
            guard.leave()


class CooperativeQueries:
    """``cooperative=True``: under gevent, a statement waits for the server by yielding.

    The query is sent (``send_query``), the greenlet waits for the socket to be
    readable by yielding to the gevent hub, and the answer is read
    (``read_query_result``): greenlets on their own connections overlap their
    waits instead of blocking the hub in turn.  The guard is held throughout,
    so no other greenlet gets inside the connection while this one yields.

    What stays blocking, as in mysqlclient: connecting (libmysqlclient's
    connect has no non-blocking form here), the rows of an unbuffered result
    after the first, and further result sets of a multi-statement (they are
    on their way once the first has come).  ``read_timeout`` bounds the wait:
    past it, the read itself runs and fails as mysqlclient's would.
    """

    _guard: ConnectionGuard
    _read_timeout: float | None

    def query(self, query: Any) -> None:
        """Send ``query`` and wait for its answer, yielding to the gevent hub meanwhile."""
        guard = self._guard
        if guard.inside == _identity.get_ident():  # part of a cursor's statement
            self._query_cooperatively(query)
            return
        guard.enter(None)
        try:
            kinds = guard.statement_starts(query, None)
            self._query_cooperatively(query)
            if not transactions.plain(kinds):
                guard.statement_done(kinds, self)  # type: ignore[arg-type]
        finally:
            guard.leave()

    def _query_cooperatively(self, query: Any) -> None:
        if isinstance(query, bytearray):
            query = bytes(query)
        _mysql.connection.send_query(self, query)
        # Past read_timeout, the read below times out as mysqlclient's own would.
        with contextlib.suppress(_NoAnswerYet):
            _wait_read(self.fileno(), self._read_timeout)  # type: ignore[attr-defined]
        _mysql.connection.read_query_result(self)


class _NoAnswerYet(Exception):
    """read_timeout passed while waiting for the socket (the read then fails as usual)."""


def _wait_read(fileno: int, timeout: float | None) -> None:
    from gevent.socket import wait_read

    wait_read(fileno, timeout=timeout, timeout_exc=_NoAnswerYet)


@functools.cache
def _cooperative_class(cls: type) -> type:
    """``cls`` with cooperative queries (a user's Connection subclass stays what it is)."""
    if issubclass(cls, CooperativeQueries):
        return cls
    return type(cls.__name__, (CooperativeQueries, cls), {"__module__": cls.__module__})


for _name in _SERVER_CALLS:
    if hasattr(_Base, _name):  # some calls exist in one mysqlclient version only
        setattr(Connection, _name, _guarded(_name))
Connection.query = _guarded_sql("query", waits_for_answer=True)
Connection.send_query = _guarded_sql("send_query", waits_for_answer=False)
for _name in _STATEMENT_CALLS:
    setattr(Connection, _name, _guarded_no_args(_name))
del _name
cursors._GUARDED_QUERY = Connection.query


def __getattr__(name: str) -> Any:
    # Code that reaches into MySQLdb.connections (its helpers, its exception
    # names) still finds them once guarddb stands in for it.
    return getattr(_mysqldb_connections, name)
