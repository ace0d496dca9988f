"""Guarded cursors: PyMySQL's cursor classes with the guard in front.

Statements (execute, executemany, callproc, nextset) enter the connection's
guard.  A buffered fetch reads rows already in Python: it compares the thread
and fork epoch the cursor recorded at execute with the current ones, without
calling into C and without an extra Python frame, and takes the slow path
(:meth:`GuardedCursorMixIn._guard_fetch_slow`) only when they differ.  An
unbuffered (SS) result holds the connection while its rows are unread: the
execute that produced it leaves the guard held (``pin_result``), the fetch that
reads the end, the next execute or the close lets go.

Any subclass of ``pymysql.cursors.Cursor`` given to ``conn.cursor(cls)`` or
``cursorclass=`` is guarded by :func:`guarded_class`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import pymysql.cursors as _pc
from pymysql.err import ProgrammingError

from ...core import guard as _guard
from ...core import identity, transactions, violations
from ...core.errors import GuardError
from . import errors

#: PyMySQL 1.1's execute() binds arguments with mogrify() (always); 1.2's with
#: _mogrify(), only when there are some.
_EXECUTE_MOGRIFIES = "_mogrify" not in _pc.Cursor.execute.__code__.co_names
_KINDS = transactions.KINDS
_READ, _WRITE = transactions.READ, transactions.WRITE
_c_leave = _guard.lib.guard_leave
# The caller's identity and the guard's enter, as module globals: bind_statement_path.
get_ident: Callable[[], int] = identity.get_ident
c_enter: Callable[[Any], int] = _guard.lib.guard_enter_mode
_guard.bind_statement_path(globals())

#: What a statement leaves in a cursor, as mutex mode stores it: each thread has its own.
_FRESH_RESULT_STATE = {
    "_pt_description": None,
    "_pt_rowcount": -1,
    "_pt_lastrowid": None,
    "_pt_rownumber": 0,
    "_pt_warning_count": 0,
    "_executed": None,
    "_result": None,
    "_rows": None,
    "_fields": None,
}
_RESULT_STATE = tuple(_FRESH_RESULT_STATE)

#: The guard of a connection guarddb did not open (a plain PyMySQL one): checks nothing.
UNGUARDED = _guard.UncheckedGuard("off", "<not opened by guarddb>", errors)

# Re-exported as they are: they hold no state of their own.
DictCursorMixin = _pc.DictCursorMixin
RE_INSERT_VALUES = _pc.RE_INSERT_VALUES


class GuardedCursorMixIn:
    """Guards the statements of any PyMySQL cursor; put it first in the bases."""

    #: Thread and fork epoch of the last execute: a fetch compares against them.
    _guard_tid = 0
    _guard_epoch = -1
    #: Unbuffered cursors hold the connection while their rows are unread.
    _guard_pins_results = False
    #: The guard of the connection the cursor was closed on (PyMySQL keeps a closed
    #: cursor's buffered rows: they still belong to the thread that executed them).
    _guard_closed: Any = None
    #: execute() runs _query() inline: the class's _query is guarddb's own (below).
    _guard_direct = False
    #: The same over PerThreadResultsMixIn's slots: the class's _query is that mixin's.
    _guard_direct_slots = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._guard_direct = getattr(cls, "_query", None) is GuardedCursorMixIn._query

    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(connection, *args, **kwargs)  # type: ignore[call-arg]
        # The class's flags, copied into the instance: every statement reads them,
        # and CPython 3.11 reads a class attribute through an instance the slow
        # way (about 150 instructions each; an instance's own, a few).
        cls = type(self)
        self._guard_direct = cls._guard_direct
        self._guard_direct_slots = cls._guard_direct_slots
        self._guard_pins_results = cls._guard_pins_results
        self._guard_unbuffered = cls._guard_unbuffered

    # For type checkers, what the PyMySQL cursor class this is mixed into has, and the
    # mixins' own that go with it: annotations only (nothing at run time).
    connection: Any
    description: Any
    rowcount: Any
    rownumber: Any
    lastrowid: Any
    warning_count: Any
    arraysize: int
    _rows: Any
    _result: Any
    _executed: Any
    mogrify: Callable[[Any, Any], Any]
    _mogrify: Callable[[Any, Any], Any]
    read_next: Callable[[], Any]
    _get_db: Callable[[], Any]
    _clear_result: Callable[[], None]
    _do_get_result: Callable[[], None]
    _guard_states: dict[int, dict[str, Any]]  # PerThreadResultsMixIn's (mutex mode)
    _pt_description: Any  # and its slots
    _pt_rowcount: Any
    _pt_lastrowid: Any
    _pt_rownumber: Any
    _pt_warning_count: Any

    def execute(self, query: Any, args: Any = None) -> Any:
        # The hottest call there is: _guard_statement() and PyMySQL's execute()
        # written out, one frame and no super() (bench/callgrind_roundtrip.py).
        # A class with an execute() or nextset() of its own gets
        # _execute_through() instead (guarded_class).
        db = self.connection
        try:
            guard = db._guard
        except AttributeError:
            if db is None:  # closed: PyMySQL's own error
                return _pc.Cursor.execute(self, query, args)
            guard = UNGUARDED  # a plain PyMySQL connection
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
                kinds = _KINDS[query]  # what it does to the transaction, by its text
            except (KeyError, TypeError):  # not classified yet, or unhashable
                kinds = None
            if kinds is _WRITE:  # inline: every write statement passes here
                guard.wrote = True
            elif kinds is not _READ:
                kinds = guard.statement_starts(query, kinds)
        # The connection calls PyMySQL makes for this statement are inside it already.
        guard.inside = me
        try:
            # PyMySQL's execute().  Its first step, ``while self.nextset():
            # pass``, reads nothing unless a further result of this cursor's is
            # there, and is skipped then.
            result = self._result
            if result is not None and result is db._result and result.has_next:
                while self.nextset():
                    pass
            if _EXECUTE_MOGRIFIES:
                query = self.mogrify(query, args)
            elif args is not None:
                query = self._mogrify(query, args)
            if self._guard_direct:
                # _query() below, inline (a frame less: 143.3k -> see the README's
                # cost table; plain PyMySQL 141.8k).  Change it together with the
                # per-thread branch below and the two _query() methods.
                self.rownumber = 0
                self._result = None
                self.rowcount = 0
                self.warning_count = 0
                self.description = None
                self.lastrowid = None
                self._rows = None
                try:
                    db._pymysql_query(query, self._guard_unbuffered)  # PyMySQL's own
                except AttributeError:
                    if hasattr(db, "_pymysql_query"):
                        raise  # from inside query()
                    db.query(query, self._guard_unbuffered)  # a plain PyMySQL connection
                # (PyMySQL looks at self.connection again: nothing in between can
                # close the cursor, while this thread holds the guard.)
                self._result = result = db._result
                self.rowcount = rows = result.affected_rows
                self.warning_count = result.warning_count
                self.description = result.description
                self.lastrowid = result.insert_id
                self._rows = result.rows
            elif self._guard_direct_slots:
                # mutex mode: PerThreadResultsMixIn._query() inline, the same as
                # above over the per-thread slots (a frame less: 142.8k -> 141.7k
                # instructions; plain PyMySQL 141.8k).  Change it together with
                # the branch above and the two _query() methods.
                self._pt_rownumber = 0
                self._result = None
                self._pt_rowcount = 0
                self._pt_warning_count = 0
                self._pt_description = None
                self._pt_lastrowid = None
                self._rows = None
                try:
                    db._pymysql_query(query, self._guard_unbuffered)
                except AttributeError:
                    if hasattr(db, "_pymysql_query"):
                        raise
                    db.query(query, self._guard_unbuffered)
                self._result = result = db._result
                self._pt_rowcount = rows = result.affected_rows
                self._pt_warning_count = result.warning_count
                self._pt_description = result.description
                self._pt_lastrowid = result.insert_id
                self._rows = result.rows
            else:
                rows = self._query(query)
            self._executed = query
            if kinds is not _READ and kinds is not _WRITE:
                guard.statement_done(kinds, db)  # transaction control in SQL text
            return rows
        finally:
            guard.inside = outer
            if self._guard_pins_results:
                self._guard_settle(guard, db)
            if guard.holds_transactions:
                guard.hold_transaction(db)
            if flags >= 0 and _c_leave(guard.slot):
                guard.wake()  # greenlets wait to enter

    def _guard_statement(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run a statement method of PyMySQL's inside the connection's guard (see execute)."""
        db = self.connection
        if db is None:
            return method(*args)  # a closed cursor: PyMySQL raises its own error
        guard = getattr(db, "_guard", UNGUARDED)
        guard.enter(self)
        me = get_ident()
        if self._guard_tid != me:
            if guard.per_thread_results:
                self._guard_swap_state(me)
            self._guard_tid = me
        self._guard_epoch = _guard.epoch
        statement = args[0] if args else None
        if method.__name__ == "callproc":  # a procedure may do anything: a write, as CALL is
            statement = f"CALL {statement}"
        guard.statement = statement or method.__name__
        kinds = guard.statement_starts(statement, None) if statement is not None else _READ
        outer, guard.inside = guard.inside, me
        try:
            result = method(*args)
            if kinds is not _READ and kinds is not _WRITE:
                guard.statement_done(kinds, db)  # transaction control in SQL text
            return result
        finally:
            guard.inside = outer
            if self._guard_pins_results:
                self._guard_settle(guard, db)
            if guard.holds_transactions:
                guard.hold_transaction(db)
            guard.leave()

    def executemany(self, query: Any, args: Any) -> Any:
        return self._guard_statement(super().executemany, query, args)  # type: ignore[misc]

    def callproc(self, procname: Any, args: Any = ()) -> Any:
        return self._guard_statement(super().callproc, procname, args)  # type: ignore[misc]

    def nextset(self) -> Any:
        # PyMySQL's execute() starts with ``while self.nextset(): pass``: when
        # there is no further result to read, PyMySQL's _nextset() returns None
        # without a word to the server, and so does this, for the thread whose
        # result it is, without the guard (once per statement).
        result, db = self._result, self.connection
        if (
            get_ident() == self._guard_tid
            and self._guard_epoch == _guard.epoch
            and db is not None
            and (result is None or result is not db._result or not result.has_next)
        ):
            return None
        return self._guard_nextset()

    def _guard_nextset(self) -> Any:
        """nextset() in full: a statement (it reads the next result from the server)."""
        db = self.connection
        if db is not None and getattr(db, "_guard", UNGUARDED).inside == get_ident():
            return super().nextset()  # type: ignore[misc]  # inside this thread's statement
        return self._guard_statement(super().nextset)  # type: ignore[misc]

    #: Unbuffered cursors (SSCursor) read their rows from the server as they are fetched.
    _guard_unbuffered = False

    # PyMySQL's per-statement internals, re-implemented with its exact
    # behaviour: inside a statement the guard is held already, so they call
    # PyMySQL's own Connection.query, not guarddb's guarded one; and _query()
    # has _get_db(), _clear_result() and _do_get_result() written out (four
    # frames less on the hottest path, bench/callgrind_roundtrip.py).  A class
    # with its own of those gets _guard_query_calling() instead (guarded_class).

    def _query(self, q: Any) -> Any:
        conn = self.connection
        if not conn:
            raise ProgrammingError("Cursor closed")
        self.rownumber = 0
        self._result = None

        self.rowcount = 0
        self.warning_count = 0
        self.description = None
        self.lastrowid = None
        self._rows = None
        try:
            conn._pymysql_query(q, self._guard_unbuffered)  # PyMySQL's own, past the guard
        except AttributeError:
            if hasattr(conn, "_pymysql_query"):
                raise  # from inside query()
            conn.query(q, self._guard_unbuffered)  # a plain PyMySQL connection
        conn = self.connection
        if not conn:
            raise ProgrammingError("Cursor closed")
        self._result = result = conn._result

        self.rowcount = result.affected_rows
        self.warning_count = result.warning_count
        self.description = result.description
        self.lastrowid = result.insert_id
        self._rows = result.rows
        return self.rowcount

    def _guard_query_calling(self, q: Any) -> Any:
        """_query() for a class with its own _get_db(), _clear_result() or _do_get_result()."""
        conn = self._get_db()
        self._clear_result()
        try:
            conn._pymysql_query(q, self._guard_unbuffered)
        except AttributeError:
            if hasattr(conn, "_pymysql_query"):
                raise
            conn.query(q, self._guard_unbuffered)
        self._do_get_result()
        return self.rowcount

    def _guard_swap_state(self, me: int) -> None:
        """mutex mode: put the last thread's result aside and bring back this thread's.

        Runs inside the guard.  ``_guard_tid`` changes first, so a fetch by the
        thread whose state goes aside takes the slow path and waits.
        """
        states = self._guard_states
        previous, self._guard_tid = self._guard_tid, me
        for ended in [tid for tid in states if not identity.alive(tid)]:
            del states[ended]  # results of threads that ended without coming back
        if identity.alive(previous):
            states[previous] = {name: getattr(self, name, None) for name in _RESULT_STATE}
        for name, value in states.pop(me, _FRESH_RESULT_STATE).items():
            setattr(self, name, value)

    def _guard_settle(self, guard: Any, db: Any) -> None:
        """Unbuffered cursors: hold the connection while rows are unread (see the SS mixin)."""

    def close(self) -> None:
        """Close the cursor (PyMySQL reads out what is left of its results first).

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
        if guard is UNGUARDED:
            return super().close()  # type: ignore[misc,no-any-return]  # a plain connection
        if guard.slot is None or guard.detached():
            self._guard_close_locally(guard)  # the parent's session, or closed by guarddb
            return
        try:
            with violations.unreported():  # a refusal here is handled: closed locally
                entered = guard.enter_to_close(self)
        except GuardError as error:
            if guard.pending is not None and guard.pending() is self:
                # another thread reads this very cursor's rows
                raise guard.violation(error) from None
            self._guard_close_locally(guard)
            return
        if not entered:  # guarddb closed the connection a moment ago
            self._guard_close_locally(guard)
            return
        outer, guard.inside = guard.inside, get_ident()
        try:
            super().close()  # type: ignore[misc]
        finally:
            guard.inside = outer
            self._guard_closed = guard
            if guard.pending is not None and guard.pending() is self:
                guard.unpin_result()
            guard.leave()

    def _guard_close_locally(self, guard: Any) -> None:
        """Close without a word to the server (as PyMySQL's close, its rows stay readable)."""
        result = self._result
        if (
            result is not None
            and result.unbuffered_active
            and guard.slot is not None
            and guard.detached()
        ):
            # A forked child's copy of the parent's unread result: PyMySQL
            # would read the rest of it from the socket when it is freed.
            result.unbuffered_active = False
        self._guard_closed = guard
        self.connection = None

    def _guard_fetch_slow(self, fetch: Callable[..., Any], *args: Any) -> Any:
        """A fetch in another thread or process than the statement that made the rows.

        ``fetch`` is PyMySQL's own method.  A statement's rows belong to the
        thread that executed it: in exclusive and strict mode another thread's
        fetch overlaps that statement and is refused; in mutex mode it waits
        its turn and reads its own thread's result.
        """
        db = self.connection
        guard = getattr(db, "_guard", UNGUARDED) if db is not None else self._guard_closed
        if guard is None or guard.mode == "off":
            self._guard_tid = get_ident()
            return fetch(*args)
        if self._guard_epoch != _guard.epoch and self._executed:
            raise guard.violation(guard.forked_error())
        if not guard.per_thread_results:
            if not self._executed:
                return fetch(*args)  # never executed: PyMySQL's own error
            raise guard.foreign_rows(self._guard_tid)
        if db is None or guard.slot is None:
            return fetch(*args)  # a closed cursor: nothing to wait for
        guard.enter(self)
        try:
            me = get_ident()
            if self._guard_tid != me:
                self._guard_swap_state(me)
            return fetch(*args)
        finally:
            guard.leave()


class GuardedBufferedMixIn(GuardedCursorMixIn):
    """Buffered fetches re-implemented with PyMySQL's exact behaviour, plus the guard check.

    They run once per row, so the check is inlined: one get_ident() and two
    compares, no C call, no extra frame.
    """

    # Each reads the cursor's state into locals *before* the check: a statement
    # of another thread marks the cursor first thing (execute), so a fetch that
    # passes the check read state no other statement had touched.  get_ident()
    # is called before the loads it is compared with, and nothing between the
    # check and the store calls a Python function, so no other thread can run
    # in between: CPython switches threads only at calls and loops.
    # (PerThreadBufferedMixIn has the same over its rownumber slot.)

    def fetchone(self) -> Any:
        """Fetch the next row."""
        rows, number = self._rows, self.rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchone)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None or number >= len(rows):
            return None
        self.rownumber = number + 1
        return rows[number]

    def __next__(self) -> Any:
        rows, number = self._rows, self.rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            row = self._guard_fetch_slow(self.fetchone)
            if row is None:
                raise StopIteration
            return row
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None or number >= len(rows):
            raise StopIteration
        self.rownumber = number + 1
        return rows[number]

    def fetchmany(self, size: int | None = None) -> Any:
        """Fetch several rows."""
        rows, number = self._rows, self.rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchmany, size)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None:
            # Django expects () for EOF.
            return ()
        end = number + (size or self.arraysize)
        result = rows[number:end]
        self.rownumber = min(end, len(rows))
        return result

    def fetchall(self) -> Any:
        """Fetch all the rows."""
        rows, number = self._rows, self.rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchall)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None:
            return []
        if number:
            result = rows[number:]
        else:
            result = rows
        self.rownumber = len(rows)
        return result

    def scroll(self, value: int, mode: str = "relative") -> None:
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().scroll, value, mode)  # type: ignore[misc,no-any-return]
        return super().scroll(value, mode)  # type: ignore[misc,no-any-return]


class GuardedUnbufferedMixIn(GuardedCursorMixIn):
    """Unbuffered results hold the connection until read out or closed.

    The execute (or nextset) that produced the result leaves the guard held
    by its thread (``pin_result``); the fetch that sees the end of the rows,
    the next execute or the close lets go (``unpin_result``).  Fetches read
    the socket without a C call: while the rows are unread nobody but the
    executing thread can be inside the connection, and a fetch by another
    thread or process is caught by the same inline check as a buffered one.
    """

    _guard_pins_results = True
    _guard_unbuffered = True

    def _guard_settle(self, guard: Any, db: Any) -> None:
        """Still inside the statement's guard: unread rows keep it held, read-out ones not."""
        result = self._result
        if result is not None and result.unbuffered_active and db._sock is not None:
            if guard.pending is None and guard.mode != "off":
                guard.pin_result(self, result._finish_unbuffered_query)
        elif guard.pending is not None and guard.pending() is self:
            guard.unpin_result()

    def _guard_settle_read(self) -> None:
        """After a fetch: rows read out (or the result or connection broken) let go."""
        db = self.connection
        if db is None:
            return
        guard = getattr(db, "_guard", UNGUARDED)
        pending = guard.pending
        if pending is not None and pending() is self:
            result = self._result
            if result is None or not result.unbuffered_active or db._sock is None:
                guard.unpin_result()

    def fetchone(self) -> Any:
        """Fetch next row."""
        # PyMySQL's own, with the check in front: it runs once per row.
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchone)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        try:
            row = self.read_next()
        except BaseException:
            self._guard_settle_read()  # an error packet ends the result; a lost one, the session
            raise
        if row is None:
            self.warning_count = self._result.warning_count
            self._guard_settle_read()
            return None
        self.rownumber += 1
        return row

    def __next__(self) -> Any:
        # PyMySQL's __next__ (fetchone(), StopIteration at the end) with fetchone()
        # above written out: it runs once per row, and the frame saved pays for the
        # thread check (callgrind, client instructions per row of SSCursor iteration
        # on CPython 3.11: plain PyMySQL 21.79k, guarded 22.08k through fetchone(),
        # 21.67k written out).  Change it, fetchone() and PerThreadUnbufferedMixIn's
        # two together.
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            row = self._guard_fetch_slow(super().fetchone)  # type: ignore[misc]
            if row is None:
                raise StopIteration
            return row
        if not self._executed:
            raise ProgrammingError("execute() first")
        try:
            row = self.read_next()
        except BaseException:
            self._guard_settle_read()  # an error packet ends the result; a lost one, the session
            raise
        if row is None:
            self.warning_count = self._result.warning_count
            self._guard_settle_read()
            raise StopIteration
        self.rownumber += 1
        return row

    def fetchall(self) -> Any:
        """Fetch all, as per MySQLdb (a list, read row by row)."""
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchall)  # type: ignore[misc]
        return super().fetchall()  # type: ignore[misc]

    def fetchmany(self, size: int | None = None) -> Any:
        """Fetch many."""
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchmany, size)  # type: ignore[misc]
        try:
            return super().fetchmany(size)  # type: ignore[misc]
        finally:
            self._guard_settle_read()

    def scroll(self, value: int, mode: str = "relative") -> None:
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().scroll, value, mode)  # type: ignore[misc,no-any-return]
        try:
            return super().scroll(value, mode)  # type: ignore[misc,no-any-return]
        finally:
            self._guard_settle_read()

    def __del__(self) -> None:
        # PyMySQL's SSCursor.__del__ is its close(), which reads what is left
        # from the socket, unguarded, in whatever thread the garbage collector
        # runs.  The rows this cursor holds the connection for are drained (the
        # slot is held for them: nobody else is inside); nothing else is read.
        try:
            db = self.connection
            if db is None:
                return
            guard = getattr(db, "_guard", None)
            if guard is None:
                _pc.SSCursor.close(self)  # a plain PyMySQL connection: as PyMySQL does
                return
            if guard.slot is None or guard.detached():
                self._guard_close_locally(guard)
                return
            result = self._result
            pending = guard.pending
            if pending is not None and pending() is self:
                try:
                    if result is not None and result.unbuffered_active and db._sock is not None:
                        result._finish_unbuffered_query()
                finally:
                    guard.unpin_result()
            if result is not None and result.unbuffered_active and db._sock is None:
                # The session is gone: PyMySQL would try to read the rest when the
                # result is freed, and print the error it gets.
                result.unbuffered_active = False
            self.connection = None
        except Exception:
            pass  # nothing may escape a finalizer; a broken session shows at its next use


class Cursor(GuardedBufferedMixIn, _pc.Cursor):
    """The standard cursor: rows as tuples, the result read into the client."""

    __module__ = "guarddb.pymysql.cursors"  # its public path (pickles, reprs)


class DictCursor(GuardedBufferedMixIn, _pc.DictCursor):
    """Rows as dictionaries, the result read into the client."""

    __module__ = "guarddb.pymysql.cursors"
    _query = GuardedCursorMixIn._guard_query_calling  # DictCursorMixin's _do_get_result


class SSCursor(GuardedUnbufferedMixIn, _pc.SSCursor):
    """Rows as tuples, read from the server row by row (unbuffered)."""

    __module__ = "guarddb.pymysql.cursors"


class SSDictCursor(GuardedUnbufferedMixIn, _pc.SSDictCursor):
    """Rows as dictionaries, read from the server row by row (unbuffered)."""

    __module__ = "guarddb.pymysql.cursors"
    _query = GuardedCursorMixIn._guard_query_calling  # DictCursorMixin's _do_get_result


_PREDEFINED = {
    _pc.Cursor: Cursor,
    _pc.DictCursor: DictCursor,
    _pc.SSCursor: SSCursor,
    _pc.SSDictCursor: SSDictCursor,
}


def _per_thread_attribute(name: str) -> property:
    """A result attribute that reads the calling thread's own value (mutex mode).

    The value lives in the slot ``_pt_<name>`` of :class:`PerThreadResultsMixIn`.
    """
    slot = f"_pt_{name}"

    def read(self: Any) -> Any:
        if get_ident() == self._guard_tid or not self._guard_tid:
            return getattr(self, slot)
        return self._guard_fetch_slow(getattr, self, slot)  # waits, brings its state back

    def write(self: Any, value: Any) -> None:
        setattr(self, slot, value)

    return property(read, write, doc=f"The calling thread's own ``{name}`` (mutex mode).")


_PER_THREAD_ATTRIBUTES = ("description", "rowcount", "lastrowid", "rownumber", "warning_count")


class PerThreadResultsMixIn:
    """mutex mode: a cursor shared by threads keeps each thread's result its own.

    The rows and these attributes are swapped per thread under the
    connection's lock (``_guard_swap_state``); reading one from a thread
    whose result is not the one in place waits its turn and reads its own.
    """

    # Slots, not __dict__: the fast fetches below use them directly (no
    # Python call between the check and the store).
    __slots__ = tuple(f"_pt_{name}" for name in _PER_THREAD_ATTRIBUTES)

    # For type checkers, what the guarded PyMySQL cursor class this is mixed into has
    # (GuardedCursorMixIn's and PyMySQL's): annotations only (nothing at run time).
    connection: Any
    arraysize: int
    _rows: Any
    _result: Any
    _executed: Any
    _guard_tid: int
    _guard_epoch: int
    _guard_unbuffered: bool
    _guard_direct_slots: bool
    _guard_fetch_slow: Callable[..., Any]
    _guard_settle_read: Callable[[], None]
    read_next: Callable[[], Any]
    _get_db: Callable[[], Any]
    _pt_description: Any
    _pt_rowcount: Any
    _pt_lastrowid: Any
    _pt_rownumber: Any
    _pt_warning_count: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # GuardedCursorMixIn.execute() runs this _query() inline (not a class's own).
        cls._guard_direct_slots = getattr(cls, "_query", None) is PerThreadResultsMixIn._query

    def __init__(self, connection: Any) -> None:
        self._guard_states: dict[int, dict[str, Any]] = {}  # thread -> its result, put aside
        super().__init__(connection)  # type: ignore[call-arg]

    description = _per_thread_attribute("description")
    rowcount = _per_thread_attribute("rowcount")
    lastrowid = _per_thread_attribute("lastrowid")
    rownumber = _per_thread_attribute("rownumber")
    warning_count = _per_thread_attribute("warning_count")

    # A statement writes these a dozen times; inside it the state in place is
    # the calling thread's, so PyMySQL's per-statement internals, re-implemented
    # here with its exact behaviour, write the slots, not through the
    # properties (each a Python call).  guarded_class() keeps a class's own.

    def _clear_result(self) -> None:
        self._pt_rownumber = 0
        self._result = None

        self._pt_rowcount = 0
        self._pt_warning_count = 0
        self._pt_description = None
        self._pt_lastrowid = None
        self._rows = None

    def _do_get_result(self) -> None:
        conn = self._get_db()

        self._result = result = conn._result

        self._pt_rowcount = result.affected_rows
        self._pt_warning_count = result.warning_count
        self._pt_description = result.description
        self._pt_lastrowid = result.insert_id
        self._rows = result.rows

    def _query(self, q: Any) -> Any:
        # GuardedCursorMixIn._query, over the slots (execute() has both written out:
        # change the four together).
        conn = self.connection
        if not conn:
            raise ProgrammingError("Cursor closed")
        self._pt_rownumber = 0
        self._result = None

        self._pt_rowcount = 0
        self._pt_warning_count = 0
        self._pt_description = None
        self._pt_lastrowid = None
        self._rows = None
        try:
            conn._pymysql_query(q, self._guard_unbuffered)
        except AttributeError:
            if hasattr(conn, "_pymysql_query"):
                raise
            conn.query(q, self._guard_unbuffered)
        conn = self.connection
        if not conn:
            raise ProgrammingError("Cursor closed")
        self._result = result = conn._result

        self._pt_rowcount = result.affected_rows
        self._pt_warning_count = result.warning_count
        self._pt_description = result.description
        self._pt_lastrowid = result.insert_id
        self._rows = result.rows
        return self._pt_rowcount


class PerThreadBufferedMixIn(PerThreadResultsMixIn):
    """mutex mode, buffered cursors: the fast fetches over the per-thread rownumber slot.

    The same as :class:`GuardedBufferedMixIn`'s, with ``rownumber`` read and
    written in its slot: past the per-thread property, a Python call (a point
    where another thread could run) that would break the lock-free check.
    Change both together.
    """

    __slots__ = ()

    def fetchone(self) -> Any:
        """Fetch the next row."""
        rows, number = self._rows, self._pt_rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchone)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None or number >= len(rows):
            return None
        self._pt_rownumber = number + 1
        return rows[number]

    def __next__(self) -> Any:
        rows, number = self._rows, self._pt_rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            row = self._guard_fetch_slow(self.fetchone)
            if row is None:
                raise StopIteration
            return row
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None or number >= len(rows):
            raise StopIteration
        self._pt_rownumber = number + 1
        return rows[number]

    def fetchmany(self, size: int | None = None) -> Any:
        """Fetch several rows."""
        rows, number = self._rows, self._pt_rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchmany, size)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None:
            return ()
        end = number + (size or self.arraysize)
        result = rows[number:end]
        self._pt_rownumber = min(end, len(rows))
        return result

    def fetchall(self) -> Any:
        """Fetch all the rows."""
        rows, number = self._rows, self._pt_rownumber
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchall)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        if rows is None:
            return []
        if number:
            result = rows[number:]
        else:
            result = rows
        self._pt_rownumber = len(rows)
        return result


class PerThreadUnbufferedMixIn(PerThreadResultsMixIn):
    """mutex mode, unbuffered cursors: fetchone and _query over the per-thread slots.

    GuardedUnbufferedMixIn's, with rownumber and warning_count read and written
    in their slots: once per row.  While rows are unread the connection's lock
    is held, so no other thread's state can come in between.
    """

    __slots__ = ()

    def fetchone(self) -> Any:
        """Fetch next row."""
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(super().fetchone)  # type: ignore[misc]
        if not self._executed:
            raise ProgrammingError("execute() first")
        try:
            row = self.read_next()
        except BaseException:
            self._guard_settle_read()
            raise
        if row is None:
            self._pt_warning_count = self._result.warning_count
            self._guard_settle_read()
            return None
        self._pt_rownumber += 1
        return row

    def __next__(self) -> Any:
        # fetchone() above written out, as GuardedUnbufferedMixIn.__next__ has its
        # own: a frame less per row (callgrind, client instructions per row of
        # SSCursor iteration in mutex mode: plain PyMySQL 21.76k, through
        # fetchone() 22.09k, written out 21.67k).  Change the four together.
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            row = self._guard_fetch_slow(super().fetchone)  # type: ignore[misc]
            if row is None:
                raise StopIteration
            return row
        if not self._executed:
            raise ProgrammingError("execute() first")
        try:
            row = self.read_next()
        except BaseException:
            self._guard_settle_read()
            raise
        if row is None:
            self._pt_warning_count = self._result.warning_count
            self._guard_settle_read()
            raise StopIteration
        self._pt_rownumber += 1
        return row


_FETCH_METHODS = ("fetchone", "fetchmany", "fetchall", "scroll", "__next__")
#: What guarddb's _query() has written out: a class with its own gets the calling one.
_QUERY_INTERNALS = ("_get_db", "_clear_result", "_do_get_result")


def _checked(method: Any, settles: bool) -> Any:
    """Wrap a user's own fetch method with the guard's check (the slow, general way).

    ``settles``: an unbuffered cursor's, which lets go of the connection once
    the rows are read out.
    """

    @functools.wraps(method)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        if get_ident() != self._guard_tid or self._guard_epoch != _guard.epoch:
            return self._guard_fetch_slow(functools.partial(method, self, *args, **kwargs))
        if not settles:
            return method(self, *args, **kwargs)
        try:
            return method(self, *args, **kwargs)
        finally:
            self._guard_settle_read()

    # Messages name the call ("fetchone()"), not the wrapper.
    checked.__code__ = checked.__code__.replace(co_name=method.__name__)  # type: ignore[attr-defined]
    return checked


def _execute_through(own_execute: Callable[..., Any]) -> Callable[..., Any]:
    """The guarded execute() of a class with its own: that one runs inside the guard."""

    def execute(self: Any, query: Any, args: Any = None) -> Any:
        return self._guard_statement(own_execute.__get__(self), query, args)

    return execute


def guarded_class(cls: type[Any], per_thread_results: bool = False) -> type:
    """The guarded version of a PyMySQL cursor class (itself if it is guarded already).

    The guard goes first in the bases.  PyMySQL's four classes give guarddb's
    (:class:`Cursor`, :class:`DictCursor`, :class:`SSCursor`,
    :class:`SSDictCursor`); a class of the user's own gets the fast fetches,
    except where it defines a fetch method of its own: that one is kept and
    checked before it runs.  ``per_thread_results`` (mutex mode) adds
    :class:`PerThreadResultsMixIn` in front.
    """
    return _guarded_class(cls, bool(per_thread_results))  # type: ignore[arg-type]


@functools.cache
def _guarded_class(cls: type[Any], per_thread_results: bool) -> type:
    if per_thread_results:
        if issubclass(cls, PerThreadResultsMixIn):
            return cls
        guarded = _guarded_class(cls, False)  # type: ignore[arg-type]
        mixin: type = (
            PerThreadUnbufferedMixIn if issubclass(cls, _pc.SSCursor) else PerThreadBufferedMixIn
        )
        # A fetch method or statement internal of the class's own stays in front
        # of the re-implemented ones (DictCursor's _do_get_result, for one), also
        # when it is inherited: a subclass of guarddb's DictCursor has its _query.
        base = SSCursor if issubclass(guarded, _pc.SSCursor) else Cursor
        own = {
            name: getattr(guarded, name)
            for name in (*_FETCH_METHODS, "_query")
            if getattr(guarded, name) is not getattr(base, name)
        }
        for name in ("_clear_result", "_do_get_result"):
            if getattr(cls, name) is not getattr(_pc.Cursor, name):
                own[name] = getattr(cls, name)
        return type(guarded.__name__, (mixin, guarded), {"__module__": guarded.__module__, **own})
    if issubclass(cls, GuardedCursorMixIn):
        return cls
    if not (isinstance(cls, type) and issubclass(cls, _pc.Cursor)):
        raise TypeError(f"{cls!r} is not a PyMySQL cursor class")
    if cls in _PREDEFINED:
        return _PREDEFINED[cls]
    unbuffered = issubclass(cls, _pc.SSCursor)
    mixin, plain = (
        (GuardedUnbufferedMixIn, _pc.SSCursor) if unbuffered else (GuardedBufferedMixIn, _pc.Cursor)
    )
    own = {
        name: _checked(getattr(cls, name), unbuffered)
        for name in _FETCH_METHODS
        if getattr(cls, name) is not getattr(plain, name)
    }
    if "fetchone" in own and "__next__" not in own:
        own["__next__"] = _pc.Cursor.__next__  # iteration goes through the class's own fetchone
    if cls._query is not plain._query:
        own["_query"] = cls._query  # a class's own statement internal wins over guarddb's
    elif any(getattr(cls, name) is not getattr(_pc.Cursor, name) for name in _QUERY_INTERNALS):
        own["_query"] = GuardedCursorMixIn._guard_query_calling  # calls the class's own
    if cls.nextset is not plain.nextset or cls._nextset is not plain._nextset:
        own["nextset"] = GuardedCursorMixIn._guard_nextset  # the class's own, always
        own["execute"] = _execute_through(cls.execute)  # PyMySQL's calls it
    if cls.execute is not _pc.Cursor.execute:
        own["execute"] = _execute_through(cls.execute)  # the class's own, under the guard
    return type(cls.__name__, (mixin, cls), {"__module__": cls.__module__, **own})
