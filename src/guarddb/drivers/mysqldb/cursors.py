"""Guarded cursors: MySQLdb's cursor classes with the guard in front.

Statements (execute, executemany, callproc, nextset) enter the connection's
guard.  A buffered fetch reads rows already in Python: it compares the thread
and fork epoch the cursor recorded at execute with the current ones, without
calling into C and without an extra Python frame, and takes the slow path
(:meth:`GuardedCursorMixIn._guard_fetch_slow`) only when they differ.

Any subclass of a MySQLdb cursor class given to ``conn.cursor(cls)`` or
``cursorclass=`` is guarded by :func:`guarded_class`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import MySQLdb.connections as _mysqldb_connections
import MySQLdb.cursors as _mc
from MySQLdb import ProgrammingError, _mysql

from ...core import guard as _guard
from ...core import identity as _identity
from ...core import transactions, violations
from ...core.errors import GuardError
from . import errors

_c_connection = _mysql.connection
# What the direct statement path calls: libmysqlclient through mysqlclient's C type,
# as mysqlclient's own Python methods do.
_c_query = _c_connection.query
_c_store_result = _c_connection.store_result
_c_next_result = _c_connection.next_result
_c_discard_result = _c_connection.discard_result
_c_warning_count = _c_connection.warning_count
_c_affected_rows = _c_connection.affected_rows
_c_insert_id = _c_connection.insert_id
_KINDS = transactions.KINDS
_READ, _WRITE = transactions.READ, transactions.WRITE
_c_leave = _guard.lib.guard_leave

# The caller's identity and the guard's enter, as module globals: bind_statement_path.
get_ident: Callable[[], int] = _identity.get_ident
c_enter: Callable[[Any], int] = _guard.lib.guard_enter_mode
_guard.bind_statement_path(globals())
_MySQLdbConnection = _mysqldb_connections.Connection
#: mysqlclient 2.3 cursors have warning_count; 2.2 ones do not set it in _query.
_SETS_WARNING_COUNT = "warning_count" in _mc.BaseCursor._query.__code__.co_names
#: guarddb's guarded Connection.query: guarddb.connections sets it (it imports this module,
#: not the other way round).
_GUARDED_QUERY: Any = None

#: What a statement leaves in a cursor, as mutex mode stores it: each thread has its own.
_FRESH_RESULT_STATE = {
    "_pt_description": None,
    "_pt_description_flags": None,
    "_pt_rowcount": 0,
    "_pt_lastrowid": None,
    "_pt_rownumber": None,
    "_pt_warning_count": 0,
    "_executed": None,
    "_result": None,
    "_rows": None,
}
_RESULT_STATE = tuple(_FRESH_RESULT_STATE)

#: The guard of a connection guarddb did not open (a plain MySQLdb one): checks nothing.
UNGUARDED = _guard.UncheckedGuard("off", "<not opened by guarddb>", errors)

# Re-exported as they are: they hold no state of their own.
CursorStoreResultMixIn = _mc.CursorStoreResultMixIn
CursorUseResultMixIn = _mc.CursorUseResultMixIn
CursorTupleRowsMixIn = _mc.CursorTupleRowsMixIn
CursorDictRowsMixIn = _mc.CursorDictRowsMixIn
BaseCursor = _mc.BaseCursor
RE_INSERT_VALUES = _mc.RE_INSERT_VALUES


def _direct_path(cls: type) -> bool:
    """Whether ``cls``'s execute() may run mysqlclient's statement steps inline.

    Only for a buffered class whose every step is mysqlclient's own (or
    guarddb's exact re-implementation of it): a class that overrides any of
    them, or an unbuffered one, takes mysqlclient's execute, which calls
    whatever the class has.
    """
    if not issubclass(cls, _mc.BaseCursor) or not issubclass(cls, GuardedStoreResultMixIn):
        return False  # (guarddb's mixins themselves, as they are defined, stop here)
    if super(GuardedCursorMixIn, cls).execute is not _mc.BaseCursor.execute:  # type: ignore[misc]
        return False
    # mysqlclient's own steps, or guarddb's exact re-implementations (mutex mode's
    # per-thread ones write the same values into per-thread slots: inline, they are
    # written through the per-thread properties).
    own = {
        "_query": (GuardedCursorMixIn._query, PerThreadResultsMixIn._query),
        "_discard": (GuardedCursorMixIn._discard,),
        "_get_result": (GuardedStoreResultMixIn._get_result,),
        "_do_get_result": (_mc.BaseCursor._do_get_result, PerThreadResultsMixIn._do_get_result),
        "_post_get_result": (_mc.CursorStoreResultMixIn._post_get_result,),
        "_mogrify": (_mc.BaseCursor._mogrify,),
        "_get_db": (_mc.BaseCursor._get_db,),
        "_fetch_row": (_mc.BaseCursor._fetch_row,),
    }
    return all(getattr(cls, name, None) in methods for name, methods in own.items())


class GuardedCursorMixIn:
    """Guards the statements of any MySQLdb cursor; put it first in the bases."""

    #: Thread and fork epoch of the last execute: a fetch compares against them.
    _guard_tid = 0
    _guard_epoch = -1
    #: Unbuffered cursors hold the connection while their rows are unread.
    _guard_pins_results = False
    #: execute() runs mysqlclient's statement steps inline (set per class: _direct_path;
    #: per cursor, also only on a connection whose query() is guarddb's: __init__).
    _guard_direct = False

    # For type checkers, what the MySQLdb cursor class this is mixed into has, and the
    # mixins' own that go with it: annotations only (nothing at run time).
    connection: Any
    description: Any
    description_flags: Any
    rowcount: Any
    rownumber: Any
    lastrowid: Any
    warning_count: int
    arraysize: int
    _rows: Any
    _result: Any
    _executed: Any
    _fetch_type: int
    _get_db: Callable[[], Any]
    _mogrify: Callable[[Any, Any], Any]
    _do_get_result: Callable[[Any], None]
    _post_get_result: Callable[[], None]
    _pin_if_pending: Callable[[Any], None]  # GuardedUseResultMixIn's
    _guard_states: dict[int, dict[str, Any]]  # PerThreadResultsMixIn's (mutex mode)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._guard_direct = _direct_path(cls)

    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(connection, *args, **kwargs)  # type: ignore[call-arg]
        # The class's flags, copied into the instance: every statement reads them,
        # and CPython 3.11 reads a class attribute through an instance the slow
        # way (about 150 instructions each; an instance's own, a few).
        cls = type(self)
        self._guard_direct = cls._guard_direct and type(connection).query is _GUARDED_QUERY
        self._guard_pins_results = cls._guard_pins_results
        fetch_type = getattr(cls, "_fetch_type", None)  # mysqlclient's, read once a row
        if fetch_type is not None:
            self._fetch_type = fetch_type

    def _statement(self, method: Any, statement: Any, *args: Any) -> Any:
        """Run a statement method of mysqlclient's inside the connection's guard.

        ``statement``: the SQL it sends (what it does to the transaction is
        noted), or None for one that sends none.  ``execute`` has this
        unrolled: a change here goes there too.
        """
        db = self.connection
        if db is None:
            return method(*args)  # a closed cursor: mysqlclient raises its own error
        guard = getattr(db, "_guard", UNGUARDED)
        flags = guard.flags
        if flags >= 0:  # guard.enter(self), without its frame: this runs on every statement
            rc = c_enter(guard.slot)
            if rc:
                guard.refused(rc)
            if guard.pending is not None:
                guard.check_pending(self)
        me = get_ident()
        if self._guard_tid != me:
            if guard.per_thread_results:
                self._guard_swap_state(me)
            self._guard_tid = me  # another thread's fetch now takes the slow path
        self._guard_epoch = _guard.epoch
        guard.statement = statement or method.__name__
        if statement is not None:  # nextset() runs nothing: its statement counted already
            guard.dirty = True  # a transaction may be open until commit or rollback
        try:
            kinds = _KINDS[statement]
        except (KeyError, TypeError):  # not classified yet, or unhashable (a bytearray)
            kinds = None
        if kinds is _WRITE:
            guard.wrote = True
        elif kinds is not _READ and statement is not None:
            kinds = guard.statement_starts(statement, kinds)
        # The connection calls mysqlclient makes for this statement are inside it already.
        outer, guard.inside = guard.inside, me
        try:
            result = method(*args)
            if kinds is not _READ and kinds is not _WRITE and statement is not None:
                guard.statement_done(kinds, db)  # type: ignore[arg-type]  # SQL text control
            return result
        finally:
            guard.inside = outer
            if self._guard_pins_results:
                self._pin_if_pending(guard)
            if guard.holds_transactions:
                guard.hold_transaction(db)
            if flags >= 0 and _c_leave(guard.slot):
                guard.wake()  # greenlets wait to enter

    def execute(self, query: Any, args: Any = None) -> Any:
        # _statement(super().execute, query, query, args) unrolled, line for line: the
        # hottest call there is, and with mysqlclient's own execute inlined for the
        # classes whose internals are mysqlclient's (_guard_direct): see _direct_execute.
        # Change _statement and this together.
        db = self.connection
        if db is None:
            return super().execute(query, args)  # type: ignore[misc]
        guard = getattr(db, "_guard", UNGUARDED)
        flags = guard.flags
        if flags >= 0:  # guard.enter(self), without its frame: this runs on every statement
            rc = c_enter(guard.slot)
            if rc:
                guard.refused(rc)
            if guard.pending is not None:
                guard.check_pending(self)
        me = get_ident()
        if self._guard_tid != me:
            if guard.per_thread_results:
                self._guard_swap_state(me)
            self._guard_tid = me  # another thread's fetch now takes the slow path
        self._guard_epoch = _guard.epoch
        guard.statement = query
        guard.dirty = True  # a transaction may be open until commit or rollback
        outer = guard.inside
        if outer == me:
            # A part of this thread's statement (executemany's generated batches):
            # the statement's own template was classified; its parts are not texts
            # to scan (each batch is new, and long) or to cache.
            kinds: transactions.Kinds | None = _READ
        else:
            try:
                # What it does to the transaction, by its text: a subscript, not .get()
                # (about 100 instructions less per round trip: callgrind).
                kinds = _KINDS[query]
            except (KeyError, TypeError):  # not classified yet, or unhashable (a bytearray)
                kinds = None
            if kinds is _WRITE:  # inline: every write statement passes here
                guard.wrote = True
            elif kinds is not _READ:
                kinds = guard.statement_starts(query, kinds)
        # The connection calls mysqlclient makes for this statement are inside it already.
        guard.inside = me
        try:
            if self._guard_direct:  # and the connection's query() is guarddb's
                # mysqlclient's BaseCursor.execute, with what it calls inlined
                # (_discard, _mogrify, _get_db, _query, Connection.query,
                # _do_get_result, _get_result, _post_get_result, _fetch_row: ten
                # frames), each step as mysqlclient does it and in its order.
                # _discard:
                self.description = None
                self.description_flags = None
                self._rows = None
                self.rownumber = None
                if self._result:
                    self._result.discard()
                    self._result = None
                while _c_next_result(db) == 0:  # -1 means no more data
                    _c_discard_result(db)
                # _mogrify:
                if args is None and type(query) is str:
                    q: bytes | bytearray = query.encode(db.encoding)
                else:
                    q = self._mogrify(query, args)
                assert isinstance(q, (bytes, bytearray))
                # _query:
                self._result = None
                if _SETS_WARNING_COUNT:
                    self.warning_count = 0
                self.rowcount = None
                self.lastrowid = None
                # Connection.query: the GIL is released while querying, so an
                # immutable buffer.
                _c_query(db, bytes(q) if type(q) is bytearray else q)
                # _do_get_result, with the store_result of a buffered cursor:
                self._result = stored = _c_store_result(db)
                if stored is None:
                    self.description = self.description_flags = None
                else:
                    self.description = stored.describe()
                    self.description_flags = stored.field_flags()
                if _SETS_WARNING_COUNT:
                    self.warning_count = _c_warning_count(db)
                self.rowcount = result = _c_affected_rows(db)
                self.rownumber = 0
                self.lastrowid = _c_insert_id(db)
                # _post_get_result, a buffered cursor's: every row, now.
                self._rows = stored.fetch_row(0, self._fetch_type) if stored else ()
                # Freed now, inside the guard, as mysqlclient frees it: freeing a
                # result takes mysqlclient's connection lock (2.3), which a thread
                # let in after the guard's leave would find held.
                self._result = stored = None
                self._executed = q
            else:
                result = super().execute(query, args)  # type: ignore[misc]
            if kinds is not _READ and kinds is not _WRITE:
                guard.statement_done(kinds, db)  # type: ignore[arg-type]  # SQL text control
            return result
        finally:
            guard.inside = outer
            if self._guard_pins_results:
                self._pin_if_pending(guard)
            if guard.holds_transactions:
                guard.hold_transaction(db)
            if flags >= 0 and _c_leave(guard.slot):
                guard.wake()  # greenlets wait to enter

    def _guard_swap_state(self, me: int) -> None:
        """mutex mode: put the last thread's result aside and bring back this thread's.

        Runs inside the guard.  ``_guard_tid`` changes first, so a fetch by the
        thread whose state goes aside takes the slow path and waits.
        """
        states = self._guard_states
        previous, self._guard_tid = self._guard_tid, me
        for ended in [tid for tid in states if not _identity.alive(tid)]:
            del states[ended]  # results of threads that ended without coming back
        if _identity.alive(previous):
            states[previous] = {name: getattr(self, name, None) for name in _RESULT_STATE}
        for name, value in states.pop(me, _FRESH_RESULT_STATE).items():
            setattr(self, name, value)

    # mysqlclient's per-statement internals, re-implemented with its exact
    # behaviour: inside a statement the guard is held already, so they call the
    # connection's own methods, not guarddb's guarded wrappers (a third of the
    # guard's cost per execute, measured with callgrind).

    def _query(self, q: Any) -> Any:
        db = self._get_db()
        self._result = None
        if _SETS_WARNING_COUNT:
            self.warning_count = 0
        self.rowcount = None
        self.lastrowid = None
        if type(db).query is _GUARDED_QUERY:
            _MySQLdbConnection.query(db, q)
        else:
            db.query(q)  # a query() of the user's own: keep it
        self._do_get_result(db)
        self._post_get_result()
        self._executed = q
        return self.rowcount

    def _discard(self) -> None:
        self.description = None
        self.description_flags = None
        # Django uses some member after __exit__.
        # So we keep rowcount and lastrowid here. They are cleared in Cursor._query().
        self._rows = None
        self.rownumber = None

        if self._result:
            self._result.discard()
            self._result = None

        con = self.connection
        if con is None:
            return
        while _c_connection.next_result(con) == 0:  # -1 means no more data.
            _c_connection.discard_result(con)

    def executemany(self, query: Any, args: Any) -> Any:
        return self._statement(super().executemany, query, query, args)  # type: ignore[misc]

    def callproc(self, procname: Any, args: Any = ()) -> Any:
        # A procedure may do anything: a write, as CALL is.
        call = f"CALL {procname}" if isinstance(procname, str) else b"CALL " + bytes(procname)
        return self._statement(super().callproc, call, procname, args)  # type: ignore[misc]

    def nextset(self) -> int | None:
        return self._statement(super().nextset, None)  # type: ignore[misc,no-any-return]

    def close(self) -> None:
        """Close the cursor.

        Any thread may close a cursor (code that closes in an ``except``
        block after a refused statement must not get a second error).  In a
        forked child, or when the connection cannot be entered (another thread
        inside it, another cursor's unread rows) and this cursor holds nothing
        on the server, it is closed on the client side only.
        """
        db = self.connection
        if db is None:
            return
        guard = getattr(db, "_guard", UNGUARDED)
        if guard.slot is not None and guard.detached():
            self._close_locally()  # its session is the parent's, or closed by guarddb
            return
        try:
            with violations.unreported():  # a refusal here is handled: closed locally
                entered = guard.enter_to_close(self)
        except GuardError as error:
            if guard.pending is not None and guard.pending() is self:
                # another thread reads this very cursor's rows
                raise guard.violation(error) from None
            self._close_locally()
            return
        if not entered:  # guarddb closed the connection a moment ago
            self._close_locally()
            return
        try:
            super().close()  # type: ignore[misc]
        finally:
            guard.leave()

    def _close_locally(self) -> None:
        self.description = self.description_flags = None
        self._rows = self.rownumber = None
        self._result = None
        self.connection = None

    def _guard_fetch_slow(self, fetch: Any, *args: Any) -> Any:
        """A fetch in another thread or process than the statement that made the rows.

        ``fetch`` is mysqlclient's own method.  A statement's rows belong to
        the thread that executed it: in exclusive and strict mode another
        thread's fetch overlaps that statement and is refused; in mutex mode it
        waits its turn and reads its own thread's result.
        """
        db = self.connection
        if db is None:
            return fetch(*args)  # closed: mysqlclient's own error
        guard = getattr(db, "_guard", UNGUARDED)
        if guard.mode == "off":
            self._guard_tid = get_ident()
            return fetch(*args)
        if self._guard_epoch != _guard.epoch and self._executed:
            raise guard.refusal(_guard.lib.GUARD_FORKED)
        if not guard.per_thread_results:
            if not self._executed:
                return fetch(*args)  # never executed: mysqlclient's own error
            raise guard.foreign_rows(self._guard_tid)
        guard.enter(self)
        try:
            me = get_ident()
            if self._guard_tid != me:
                self._guard_swap_state(me)
            return fetch(*args)
        finally:
            guard.leave()


class GuardedStoreResultMixIn(GuardedCursorMixIn):
    """Buffered fetches re-implemented with mysqlclient's exact behaviour, plus the guard check.

    They run once per row, so the check is inlined: one get_ident() and two
    compares, no C call, no extra frame.
    """

    def _get_result(self) -> Any:
        return _c_connection.store_result(self._get_db())

    # Each reads the cursor's state into locals *before* the check: a statement
    # of another thread marks the cursor first thing (``_statement``), so a
    # fetch that passes the check read state no other statement had touched.
    # get_ident() is called before the loads it is compared with, and nothing
    # between the check and the store calls a Python function, so no other
    # thread can run in between: CPython switches threads only at calls and
    # loops.  A closed cursor (no rows) gets mysqlclient's own method, and its
    # error.  (PerThreadStoreResultMixIn has the same over its rownumber slot.)

    def fetchone(self) -> Any:
        """Fetches a single row from the cursor. None indicates that
        no more rows are available."""
        rows, number = self._rows, self.rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchone)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        try:
            row = rows[number]
        except IndexError:
            return None
        except TypeError:
            return super().fetchone()  # type: ignore[misc]
        self.rownumber = number + 1
        return row

    def __next__(self) -> Any:
        rows, number = self._rows, self.rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            row = self._guard_fetch_slow(self.fetchone)
            if row is None:
                raise StopIteration
            return row
        if not self._executed:
            raise ProgrammingError("execute() first")
        try:
            row = rows[number]
        except IndexError:
            raise StopIteration from None
        except TypeError:
            return super().__next__()  # type: ignore[misc]
        self.rownumber = number + 1
        return row

    def __iter__(self) -> Any:
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().__iter__)  # type: ignore[misc]
        return super().__iter__()  # type: ignore[misc]

    def fetchmany(self, size: int | None = None) -> Any:
        """Fetch up to size rows from the cursor. Result set may be smaller
        than size. If size is not defined, cursor.arraysize is used."""
        rows, number = self._rows, self.rownumber
        count = 0 if rows is None else len(rows)
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchmany, size)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None or number is None:
            return super().fetchmany(size)  # type: ignore[misc]
        end = number + (size or self.arraysize)
        result = rows[number:end]
        self.rownumber = end if end < count else count
        return result

    def fetchall(self) -> Any:
        """Fetches all available rows from the cursor."""
        rows, number = self._rows, self.rownumber
        count = 0 if rows is None else len(rows)
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchall)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None:
            return super().fetchall()  # type: ignore[misc]
        if number:
            result = rows[number:]
        else:
            result = rows
        self.rownumber = count
        return result

    def scroll(self, value: int, mode: str = "relative") -> None:
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().scroll, value, mode)  # type: ignore[misc,no-any-return]
        return super().scroll(value, mode)  # type: ignore[misc,no-any-return]


class GuardedUseResultMixIn(GuardedCursorMixIn):
    """Unbuffered results hold the connection until read out or closed.

    The execute that produced the result leaves the guard held by its thread
    (``pin_result``); the fetch that sees the end of the rows, or the discard
    at the next execute or close, lets go (``unpin_result``).
    """

    _guard_pins_results = True

    def _get_result(self) -> Any:
        return _c_connection.use_result(self._get_db())

    def _pin_if_pending(self, guard: Any) -> None:
        """Still inside the statement's guard: an unread result keeps it held."""
        if self._result is not None and guard.pending is None and guard.mode != "off":
            guard.pin_result(self, self._result.discard)

    def _discard(self) -> None:
        # Drain this cursor's unread rows and let go of the connection before
        # mysqlclient goes on to ask the connection for further results.
        result = self._result
        if result:
            self._result = None
            try:
                result.discard()
            finally:
                self._unpin()
        super()._discard()

    # The public fetches check; _fetch_row (which they call) reads the socket
    # and notes when the rows are read out.  The connection is let go only
    # when the public fetch returns: mysqlclient still calls into the
    # connection after the last row (warning_count()).
    _guard_read_out = False

    def fetchone(self) -> Any:
        """Fetches a single row from the cursor."""
        # mysqlclient's own, with _fetch_row(1) inlined: it runs once per row.
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchone)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        result = self._result
        if not result:
            return self._no_more_rows()
        try:
            rows = result.fetch_row(1, self._fetch_type)
        except _mc.MySQLError:
            self._unpin()  # the result is broken: nothing more will come of it
            raise
        if not rows:
            return self._no_more_rows()
        self.rownumber = self.rownumber + 1
        return rows[0]

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def _no_more_rows(self) -> None:
        """fetchone() found the end: the connection is free again."""
        if _SETS_WARNING_COUNT:
            self.warning_count = _c_connection.warning_count(self._get_db())
        self._unpin()

    def fetchmany(self, size: int | None = None) -> Any:
        """Fetch up to size rows from the cursor. Result set may be smaller
        than size. If size is not defined, cursor.arraysize is used."""
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchmany, size)  # type: ignore[misc]
        try:
            return super().fetchmany(size)  # type: ignore[misc]
        finally:
            if self._guard_read_out:
                self._unpin()

    def fetchall(self) -> Any:
        """Fetches all available rows from the cursor."""
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchall)  # type: ignore[misc]
        try:
            return super().fetchall()  # type: ignore[misc]
        finally:
            if self._guard_read_out:
                self._unpin()

    def _fetch_row(self, size: int = 1) -> Any:
        result = self._result
        if not result:
            return ()
        try:
            rows = result.fetch_row(size, self._fetch_type)
        except _mc.MySQLError:
            self._unpin()  # the result is broken: nothing more will come of it
            raise
        if size == 0 or len(rows) < size:
            self._guard_read_out = True
        return rows

    def _unpin(self) -> None:
        self._guard_read_out = False
        db = self.connection
        if db is not None:
            guard = getattr(db, "_guard", UNGUARDED)
            if guard.pending is not None and guard.pending() is self:
                guard.unpin_result()


def _per_thread_attribute(cls: type, name: str) -> property:
    """A result attribute that reads the calling thread's own value (mutex mode).

    The value lives in the slot ``_pt_<name>`` of ``cls``.  A read from another
    thread than the one whose state is in place waits and brings its own back;
    a write (only ever inside a statement, whose thread's state is in place)
    goes straight to the slot, through the slot's own C setter: no Python frame
    (the direct statement path makes a dozen per execute).
    """
    slot = f"_pt_{name}"

    def read(self: Any) -> Any:
        if get_ident() == self._guard_tid or not self._guard_tid:
            return getattr(self, slot)
        return self._guard_fetch_slow(getattr, self, slot)  # waits, brings its state back

    return property(
        read, vars(cls)[slot].__set__, doc=f"The calling thread's own ``{name}`` (mutex mode)."
    )


_PER_THREAD_ATTRIBUTES = (
    "description",
    "description_flags",
    "rowcount",
    "lastrowid",
    "rownumber",
    "warning_count",
)


class PerThreadResultsMixIn:
    """mutex mode: a cursor shared by threads keeps each thread's result its own.

    The rows and these attributes are swapped per thread under the
    connection's lock (``_guard_swap_state``); reading one from a thread
    whose result is not the one in place waits its turn and reads its own
    (the properties are set on the class once it has its slots: see below).
    The internals and the fast fetches use the slots behind these properties
    directly: they only do so when the state in place is the caller's.
    """

    # Slots, not __dict__: the internals and the fast fetches below use them
    # directly (C-level, no Python call), and a cursor's attributes keep the
    # fast layout that touching __dict__ would give up.
    __slots__ = tuple(f"_pt_{name}" for name in _PER_THREAD_ATTRIBUTES)

    # For type checkers, what the guarded MySQLdb cursor class this is mixed into has
    # (GuardedCursorMixIn's and mysqlclient's): annotations only (nothing at run time).
    _guard_tid: int
    _guard_epoch: int
    _guard_fetch_slow: Callable[..., Any]
    _rows: Any
    _result: Any
    _executed: Any
    _fetch_type: int
    arraysize: int
    _get_db: Callable[[], Any]
    _get_result: Callable[[], Any]
    _post_get_result: Callable[[], None]
    _no_more_rows: Callable[[], None]
    _unpin: Callable[[], None]
    _pt_description: Any
    _pt_description_flags: Any
    _pt_rowcount: Any
    _pt_lastrowid: Any
    _pt_rownumber: Any
    _pt_warning_count: Any

    def __init__(self, connection: Any) -> None:
        self._guard_states: dict[int, dict[str, Any]] = {}  # thread -> its result, put aside
        super().__init__(connection)  # type: ignore[call-arg]

    # A statement writes these a dozen times; inside it the state in place is
    # the calling thread's, so the per-statement internals write the slots,
    # not through the properties (each a Python call).  The same
    # code as GuardedCursorMixIn._query and mysqlclient's _do_get_result.

    def _query(self, q: Any) -> Any:
        db = self._get_db()
        self._result = None
        if _SETS_WARNING_COUNT:
            self._pt_warning_count = 0
        self._pt_rowcount = None
        self._pt_lastrowid = None
        if type(db).query is _GUARDED_QUERY:
            _MySQLdbConnection.query(db, q)
        else:
            db.query(q)
        self._do_get_result(db)
        self._post_get_result()
        self._executed = q
        return self._pt_rowcount

    def _do_get_result(self, db: Any) -> None:
        self._result = result = self._get_result()
        if result is None:
            self._pt_description = self._pt_description_flags = None
        else:
            self._pt_description = result.describe()
            self._pt_description_flags = result.field_flags()
        if _SETS_WARNING_COUNT:
            self._pt_warning_count = db.warning_count()
        self._pt_rowcount = db.affected_rows()
        self._pt_rownumber = 0
        self._pt_lastrowid = db.insert_id()


for _name in _PER_THREAD_ATTRIBUTES:
    # mysqlclient 2.2's cursors have no warning_count
    if _name != "warning_count" or _SETS_WARNING_COUNT:
        setattr(PerThreadResultsMixIn, _name, _per_thread_attribute(PerThreadResultsMixIn, _name))
del _name


class PerThreadStoreResultMixIn(PerThreadResultsMixIn):
    """mutex mode, buffered cursors: the fast fetches over the per-thread slots.

    The same as :class:`GuardedStoreResultMixIn`'s, with ``rownumber`` read
    and written in its slot: past the per-thread property, a Python call (a
    point where another thread could run) that would break the lock-free check.
    They are twins of those, kept for that and for speed: with
    GuardedStoreResultMixIn's fetchone instead, a mutex round trip costs 61.2k
    client instructions rather than 55.7k (bench/callgrind_roundtrip.py;
    plain mysqlclient 47.9k).  Change both together.
    """

    __slots__ = ()

    def fetchone(self) -> Any:
        """Fetches a single row from the cursor. None indicates that
        no more rows are available."""
        rows, number = self._rows, self._pt_rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchone)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        try:
            row = rows[number]
        except IndexError:
            return None
        except TypeError:
            return super().fetchone()  # type: ignore[misc]
        self._pt_rownumber = number + 1
        return row

    def __next__(self) -> Any:
        rows, number = self._rows, self._pt_rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            row = self._guard_fetch_slow(self.fetchone)
            if row is None:
                raise StopIteration
            return row
        if not self._executed:
            raise ProgrammingError("execute() first")
        try:
            row = rows[number]
        except IndexError:
            raise StopIteration from None
        except TypeError:
            return super().__next__()  # type: ignore[misc]
        self._pt_rownumber = number + 1
        return row

    def fetchmany(self, size: int | None = None) -> Any:
        """Fetch up to size rows from the cursor. Result set may be smaller
        than size. If size is not defined, cursor.arraysize is used."""
        rows, number = self._rows, self._pt_rownumber
        count = 0 if rows is None else len(rows)
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchmany, size)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None or number is None:
            return super().fetchmany(size)  # type: ignore[misc]
        end = number + (size or self.arraysize)
        result = rows[number:end]
        self._pt_rownumber = end if end < count else count
        return result

    def fetchall(self) -> Any:
        """Fetches all available rows from the cursor."""
        rows, number = self._rows, self._pt_rownumber
        count = 0 if rows is None else len(rows)
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchall)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None:
            return super().fetchall()  # type: ignore[misc]
        if number:
            result = rows[number:]
        else:
            result = rows
        self._pt_rownumber = count
        return result


class PerThreadUseResultMixIn(PerThreadResultsMixIn):
    """mutex mode, unbuffered cursors: fetchone over the rownumber slot.

    GuardedUseResultMixIn.fetchone, with rownumber read and written in its
    slot rather than through the per-thread property: once per row.  While
    rows are unread the connection's lock is held, so no other thread's
    state can come in between.
    """

    __slots__ = ()

    def fetchone(self) -> Any:
        """Fetches a single row from the cursor."""
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchone)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        result = self._result
        if not result:
            return self._no_more_rows()
        try:
            rows = result.fetch_row(1, self._fetch_type)
        except _mc.MySQLError:
            self._unpin()
            raise
        if not rows:
            return self._no_more_rows()
        self._pt_rownumber = self._pt_rownumber + 1
        return rows[0]


class Cursor(GuardedStoreResultMixIn, _mc.Cursor):
    """The standard cursor: rows as tuples, the result stored in the client."""

    __module__ = "guarddb.cursors"  # its public path (pickles, reprs)


class DictCursor(GuardedStoreResultMixIn, _mc.DictCursor):
    """Rows as dictionaries, the result stored in the client."""

    __module__ = "guarddb.cursors"  # its public path (pickles, reprs)


class SSCursor(GuardedUseResultMixIn, _mc.SSCursor):
    """Rows as tuples, the result read from the server row by row (unbuffered)."""

    __module__ = "guarddb.cursors"  # its public path (pickles, reprs)


class SSDictCursor(GuardedUseResultMixIn, _mc.SSDictCursor):
    """Rows as dictionaries, the result read from the server row by row (unbuffered)."""

    __module__ = "guarddb.cursors"  # its public path (pickles, reprs)


_FETCH_METHODS = ("fetchone", "fetchmany", "fetchall", "scroll", "__iter__", "__next__")
_STATEMENT_INTERNALS = ("_query", "_discard", "_get_result")


def _checked(method: Any) -> Any:
    """Wrap a user's own fetch method with the guard's check (the slow, general way)."""

    @functools.wraps(method)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(functools.partial(method, self, *args, **kwargs))
        return method(self, *args, **kwargs)

    return checked


@functools.cache
def guarded_class(cls: type, per_thread_results: bool = False) -> type:
    """The guarded version of a cursor class (itself if it is guarded already).

    The guard goes first in the bases.  A buffered class gets the fast fetches,
    except where the class defines a fetch method of its own: that one is kept
    and checked before it runs.  ``per_thread_results`` (mutex mode) adds
    :class:`PerThreadResultsMixIn` in front.
    """
    if per_thread_results:
        if issubclass(cls, PerThreadResultsMixIn):
            return cls
        guarded = guarded_class(cls)  # type: ignore[arg-type]  # a class is Hashable
        if issubclass(cls, _mc.CursorStoreResultMixIn):
            mixin: type = PerThreadStoreResultMixIn
        elif issubclass(cls, _mc.CursorUseResultMixIn):
            mixin = PerThreadUseResultMixIn
        else:
            mixin = PerThreadResultsMixIn
        # The per-thread internals stand in for guarddb's and mysqlclient's own: a
        # class's own _query or _do_get_result stays in front of them.
        own = {
            name: getattr(guarded, name)
            for name, standard in (
                ("_query", GuardedCursorMixIn._query),
                ("_do_get_result", _mc.BaseCursor._do_get_result),
            )
            if getattr(guarded, name) is not standard
        }
        return type(guarded.__name__, (mixin, guarded), {"__module__": cls.__module__, **own})
    if issubclass(cls, GuardedCursorMixIn):
        return cls
    if not issubclass(cls, _mc.BaseCursor):
        raise TypeError(f"{cls!r} is not a MySQLdb cursor class")
    if issubclass(cls, _mc.CursorUseResultMixIn):
        mixin = GuardedUseResultMixIn
        plain: type = _mc.CursorUseResultMixIn
    elif issubclass(cls, _mc.CursorStoreResultMixIn):
        mixin, plain = GuardedStoreResultMixIn, _mc.CursorStoreResultMixIn
    else:
        mixin, plain = GuardedCursorMixIn, _mc.BaseCursor
    own = {
        name: _checked(getattr(cls, name))
        for name in _FETCH_METHODS
        if hasattr(cls, name) and getattr(cls, name) is not _plain_method(plain, name)
    }
    own.update(
        (name, getattr(cls, name))  # a class's own statement internals win over guarddb's
        for name in _STATEMENT_INTERNALS
        if getattr(cls, name) is not _plain_method(plain, name)
    )
    return type(cls.__name__, (mixin, cls), {"__module__": cls.__module__, **own})


def _plain_method(plain: type, name: str) -> Any:
    """mysqlclient's own implementation of ``name`` for that kind of cursor."""
    for klass in (plain, _mc.BaseCursor):
        if name in vars(klass):
            return vars(klass)[name]
    return None


def __getattr__(name: str) -> Any:
    # Code that reaches into MySQLdb.cursors (its regular expressions and
    # private helpers) still finds them once guarddb stands in for it.
    return getattr(_mc, name)
