"""DBUtils (PooledDB, PersistentDB, SteadyDB) on guarddb: connections handed between threads.

::

    import guarddb as MySQLdb
    from guarddb.contrib.dbutils import PooledDB

    pool = PooledDB(MySQLdb, maxcached=10, guard="strict", unix_socket=..., database="app")
    with pool.connection() as db:  # this thread adopts the connection
        cursor = db.cursor()
        cursor.execute("SELECT ...")
    # closed: back in the pool, owned by no thread

The classes here are DBUtils' own, subclassed (``PooledDB``, ``PersistentDB``) with
the same arguments, plus :func:`connect` for a lone SteadyDB connection; they work
with any creator (``guarddb``, ``guarddb.mutex``, ``guarddb.pymysql``, a function
returning guarddb connections) and leave connections that are not guarddb's alone.
DBUtils itself is not changed: only the pools made here behave differently.

**PooledDB** hands a connection from thread to thread.  Plain DBUtils on guarddb
works in exclusive (the default), mutex and off modes; in strict mode a connection
belongs to the thread that opened it, so the next thread's checkout ping is refused
(``ThreadOwnershipError``, a violation each time) and SteadyDB, taking the refusal
for a dead connection, opens a new session on every hand-over (with ``ping=0`` the
refusal reaches the application instead).  This ``PooledDB``:

- **checkout**: the checking-out thread adopts the connection (``conn.adopt()``)
  before the pool's ping, so strict mode works with the pool: its hand-over passes,
  while a connection used by a thread that did not check it out fails on every run;
- **return** (``db.close()``, leaving ``with``, or the proxy's garbage collection):
  after the pool's rollback the connection is disowned (``conn.disown()``): resting
  in the pool it belongs to no thread, so it is never an orphan when the thread that
  used it last ends (``close_orphans=True`` leaves it to the pool, ``max_idle``
  closes it if it rests too long; the next checkout's ping then opens a new one);
- **shared connections** (``maxshared > 0``, which DBUtils only uses for a module of
  DB-API ``threadsafety`` 2, such as ``guarddb.mutex``) are used by several threads at
  once: only mutex mode makes that safe.  A shared connection belongs to the pool (it
  is disowned while shared, so the end of one of its threads does not make it an
  orphan); a shareable checkout from a pool whose connections are in strict or exclusive
  mode is refused, before anything is shared, with :class:`SharedConnectionError`
  (strict would refuse every other thread, exclusive every overlapping call).  Ask
  for ``pool.connection(shareable=False)`` or ``pool.dedicated_connection()``, or set
  ``maxshared=0``, in those modes.

**PersistentDB** keeps one connection per thread in a ``threading.local``; the
thread that opens it is its owner, and nothing hands it to another thread, so
strict mode needs nothing.  But DBUtils' default thread-local storage is
``_threading_local``, which drops a thread's connection only when the ``Thread``
*object* is garbage (a ``ThreadPoolExecutor`` keeps its threads' objects while the
executor lives), and keeps the last thread's connection until another thread asks
for one: such a connection stays open after its thread ended, and guarddb reports
it as an orphan (and closes it with ``close_orphans=True``).  This ``PersistentDB``
defaults ``threadlocal`` to ``threading.local``, whose data goes as the thread ends:
SteadyDB's ``__del__`` then closes the connection in the ending thread, and the
server's session with it (pass ``threadlocal=`` to choose otherwise).

**SteadyDB** (every connection the above hand out, and :func:`connect`) reopens a
connection after an error of its ``failures`` (``OperationalError``,
``InterfaceError``, ``InternalError``):

- guarddb's thread errors (``ThreadOwnershipError``, ``ConcurrentUseError``,
  ``PendingResultError``) are ``ProgrammingError``\\ s: raised to the application,
  never taken for a disconnect;
- ``ForkedConnectionError`` and ``IdleClosedError`` (2006) are disconnects: SteadyDB
  opens a new session and runs the statement again.  A forked child's first statement
  on a plain SteadyDB connection inherited from its parent is refused twice (SteadyDB
  retries on a new cursor first), two violations, before SteadyDB reconnects; here a
  connection inherited across fork() is replaced before its next cursor, statement or
  checkout, with no round trip and no violation (not inside ``begin()``: the
  transaction is lost, and the error is the application's);
- ``LockTimeoutError`` (mutex mode, ``mutex_timeout``) is an ``OperationalError`` but
  no disconnect: plain SteadyDB would open a new session and run the statement there,
  past the lock; here it reaches the application (needs DBUtils >= 3.2, whose
  SteadyDB asks ``isfatal``; an ``isfatal=`` given is asked too).

Importing this module also makes guarddb's messages name the application's line
(``pool.connection()``, ``cursor.execute(...)``) rather than DBUtils' frames, as
they do for the drivers' own.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import dbutils
from dbutils import steady_db
from dbutils.persistent_db import PersistentDB as _PersistentDB
from dbutils.pooled_db import PooledDB as _PooledDB
from dbutils.pooled_db import PooledDBError, PooledSharedDBConnection
from dbutils.steady_db import SteadyDBConnection

from ..core.errors import LockTimeoutError
from ..core.sites import add_library_dir

__all__ = ["PersistentDB", "PooledDB", "SharedConnectionError", "connect"]

# A connection's site ("opened at") is the first frame outside guarddb and the drivers:
# with DBUtils' frames skipped too, it is the application's pool.connection() line.
add_library_dir(os.path.dirname(os.path.abspath(dbutils.__file__)))

#: Guard modes in which threads may use one connection at once.
_SHAREABLE_MODES = ("mutex", "off")


class SharedConnectionError(PooledDBError):
    """A shareable checkout of a connection whose guard mode forbids sharing it.

    DBUtils shares a connection between threads (``maxshared > 0``) that use it at
    the same time; only guarddb's mutex mode makes that safe.
    """


def _inherited(raw: Any) -> bool:
    """True for a guarddb connection this process inherited across fork() (no round trip)."""
    return getattr(raw, "forked", False) is True


class _SteadyDBConnection(SteadyDBConnection):
    """SteadyDB on guarddb: inherited connections replaced, lock timeouts not disconnects.

    Made by DBUtils' own constructors and given this class afterwards (see
    :func:`_guarded`): its arguments differ between DBUtils versions, its
    behaviour here does not.
    """

    def _ping_check(self, ping: int = 1, reconnect: bool = True) -> bool | None:
        # Called with ping=1 at checkout (PooledDB, PersistentDB), 2 before a cursor
        # and 4 before a statement (each only outside a transaction): whatever the
        # ping flags, an inherited connection is replaced before the child uses it.
        if reconnect and not self._transaction and _inherited(self._con):
            self._replace()
        return super()._ping_check(ping, reconnect)  # type: ignore[no-any-return]

    def _replace(self) -> None:
        """Open a fresh session in place of the inherited one, as SteadyDB's own failover does."""
        try:
            con = self._create()
        except Exception:  # as SteadyDB does: the ping or the statement will tell
            return
        self._close()  # harmless in the child: its copy of the socket is /dev/null
        self._store(con)

    def _fatal_check(self, error: BaseException) -> bool:
        # DBUtils >= 3.2: a mutex wait that timed out leaves the connection fine.
        if isinstance(error, LockTimeoutError):
            return False
        return bool(super()._fatal_check(error))


class _PooledSteadyDBConnection(_SteadyDBConnection):
    """A PooledDB connection: adopted at checkout, disowned when the pool takes it back."""

    #: Back in the pool (disowned): the next checkout adopts it.
    _guarddb_resting = False

    def _ping_check(self, ping: int = 1, reconnect: bool = True) -> bool | None:
        # PooledDB calls _ping_check() (ping=1) on a connection it takes from its idle
        # cache, under its lock, before handing it out: adopt before the ping, which
        # strict mode would refuse from a thread that does not own the connection.
        # A shared connection checked out again is not resting: its sharers keep it.
        if ping == 1 and self._guarddb_resting:
            self._guarddb_resting = False
            raw = self._con
            adopt = getattr(raw, "adopt", None)
            if adopt is not None and not self._closed:
                adopt()  # in a forked child it does nothing: the connection is replaced
        return super()._ping_check(ping, reconnect)

    def _reset(self, force: bool = False) -> None:
        # PooledDB.cache() calls _reset() (the rollback) under its lock just before
        # putting the connection in its idle cache: disown it there, so no other
        # thread can have checked it out (and adopted it) before it is disowned.
        super()._reset(force)
        self._guarddb_resting = True
        disown = getattr(self._con, "disown", None)
        if disown is not None and not self._closed and not _inherited(self._con):
            disown()


def _guarded(steady: SteadyDBConnection, cls: type[_SteadyDBConnection]) -> Any:
    """Give a connection DBUtils made the guarded behaviour of ``cls`` (a subclass adding
    no state of its own: the class is swapped, the connection is the same object)."""
    steady.__class__ = cls
    return steady


def connect(creator: Any, *args: Any, **kwargs: Any) -> Any:
    """``dbutils.steady_db.connect()``, with the SteadyDB behaviour on guarddb described above.

    The arguments are DBUtils' (``creator, maxusage, setsession, failures, ping,
    closeable, isfatal``, then the creator's).
    """
    return _guarded(steady_db.connect(creator, *args, **kwargs), _SteadyDBConnection)


class PooledDB(_PooledDB):
    """``dbutils.pooled_db.PooledDB`` whose checkout adopts and whose return disowns.

    Same arguments as DBUtils' ``PooledDB``.  See the module's documentation for
    shared connections (``maxshared``), forks and SteadyDB's failover.
    """

    def steady_connection(self) -> Any:
        """A new steady connection, opened by (and owned by) the calling thread."""
        return _guarded(super().steady_connection(), _PooledSteadyDBConnection)

    def connection(self, shareable: bool = True) -> Any:
        """Check out a connection: adopted by the calling thread, or shared (mutex mode only)."""
        if shareable and self._maxshared:
            # Before DBUtils shares anything: its ping of a connection another thread
            # shares would already be refused in strict mode.
            self._check_shareable()
        con = super().connection(shareable)
        if isinstance(con, PooledSharedDBConnection):
            raw = con._con._con
            disown = getattr(raw, "disown", None)
            if disown is not None and not _inherited(raw):
                # Shared, it belongs to the pool, not to the thread that checked it out
                # first: that thread's end must not make it an orphan.
                disown()
        return con

    #: The guard mode of this pool's connections, once seen ("" for connections not guarddb's).
    _guarddb_mode: str | None = None

    def _check_shareable(self) -> None:
        """Refuse a shareable checkout unless this pool's connections may be shared."""
        mode = self._guarddb_mode
        if mode is None:
            mode = self._guarddb_mode = self._connections_mode()
        if mode and mode not in _SHAREABLE_MODES:
            raise SharedConnectionError(
                f"guarddb: PooledDB(maxshared={self._maxshared}) shares a connection between "
                f"threads that use it at once, which {mode} mode refuses. Share connections in "
                f"mutex mode only (guarddb.mutex as the creator, or guard='mutex'), or check "
                f"out dedicated connections: pool.connection(shareable=False), "
                f"pool.dedicated_connection(), or maxshared=0."
            )

    def _connections_mode(self) -> str:
        """The guard mode of a connection of this pool: one it holds, else one checked out."""
        with self._lock:
            held = [*self._idle_cache, *(shared.con for shared in self._shared_cache)]
        if held:
            return str(getattr(held[0]._con, "guard_mode", ""))
        probe = self.dedicated_connection()  # a new one, back in the idle cache at once
        try:
            return str(getattr(probe._con._con, "guard_mode", ""))
        finally:
            probe.close()


class PersistentDB(_PersistentDB):
    """``dbutils.persistent_db.PersistentDB`` whose thread's connection goes as its thread ends.

    Same arguments as DBUtils' ``PersistentDB``; ``threadlocal`` defaults to
    ``threading.local`` (DBUtils' own default keeps a connection after its thread
    ended: see the module's documentation).
    """

    def __init__(self, creator: Any, *args: Any, **kwargs: Any) -> None:
        # threadlocal is the sixth parameter after creator: given positionally, it is kept.
        if len(args) < 6:
            kwargs.setdefault("threadlocal", threading.local)
        super().__init__(creator, *args, **kwargs)

    def steady_connection(self) -> Any:
        """A new steady connection for the calling thread (its owner)."""
        return _guarded(super().steady_connection(), _SteadyDBConnection)
