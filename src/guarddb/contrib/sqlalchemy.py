"""SQLAlchemy 2.x: pool events that hand guarded connections from thread to thread.

::

    import guarddb
    import sqlalchemy
    from guarddb.contrib.sqlalchemy import guard_engine

    engine = guard_engine(sqlalchemy.create_engine("mysql+mysqldb://app@db/app", module=guarddb))

or the same in one call, :func:`create_engine`.  SQLAlchemy's ``mysql+mysqldb`` dialect
runs on guarddb unchanged (``module=guarddb``, or ``guarddb.install_as_MySQLdb()``
before the engine is made), and its ``mysql+pymysql`` dialect on guarddb's PyMySQL
(``module=guarddb.pymysql``, or ``guarddb.pymysql.install_as_pymysql()`` before the
engine is made; the cursor classes the dialect takes from PyMySQL itself, such as
``SSCursor`` for ``stream_results``, are guarded when a connection makes them).
:func:`guard_engine` adds what a pool needs, whose connections move from thread to
thread and may be inherited by a forked child:

- **checkout**: the checking-out thread becomes the connection's owner
  (``conn.adopt()``), so ``guard="strict"`` works with a pool: the pool's hand-over
  passes, while a connection or a result used by a thread that did not check it out
  fails on every run.  A connection inherited across fork() is found here, without a
  round trip and without a guard violation, and the pool replaces it
  (``DisconnectionError``) before the application sees it; the pool's ``connect``
  events then run on the child's new session.
- **pre-ping** (``pool_pre_ping=True``) runs on the new thread before the checkout
  event: the ping adopts first, so strict mode and pre-ping go together.
- **checkin**: the connection is disowned (``conn.disown()``): a connection resting in
  the pool belongs to no thread, so it is never reported as an orphan when the thread
  that used it last ends, and ``close_orphans=True`` leaves it to the pool (``max_idle``
  closes it if it rests too long).

(Closing needs nothing: any thread may close a guarddb connection nobody is inside,
so ``engine.dispose()`` and recycling from other threads work in strict mode too.)

Connections that are not guarddb's (no ``adopt()``) are left alone, so an engine on
plain mysqlclient or plain PyMySQL may be given to :func:`guard_engine` too.

Fork: SQLAlchemy's documentation asks that a child process not use pooled connections
inherited from its parent: call ``engine.dispose(close=False)`` in the child, or add
``connect``/``checkout`` events that record ``os.getpid()`` and raise
``DisconnectionError`` in another process.  With guarddb the pid check is not needed:
the guard knows each connection's fork generation, and the child's copy of the socket
was pointed at /dev/null at fork, so whatever the child does with an inherited
connection (use, close, garbage collection, exit) never reaches the parent's session.
Without :func:`guard_engine` the child's first use raises
:class:`guarddb.ForkedConnectionError` (``guarddb.pymysql.ForkedConnectionError``),
``args[0] == 2006``, which the MySQL dialects read as a disconnect: the statement
fails with ``sqlalchemy.exc.OperationalError`` (``connection_invalidated`` true) and
the pool replaces the connection for the next one.  With :func:`guard_engine`, or
``pool_pre_ping=True``, or ``engine.dispose(close=False)`` in the child, the child's
first statement already runs on a fresh session.
``connect_args={"on_fork": "reconnect"}`` alone works too, but reopens the same
object in place and replays only the session state guarddb saw (autocommit,
character set, SQL mode, database), not settings that the pool's ``connect`` events
made in SQL; with :func:`guard_engine` the pool replaces the connection first and
those events run again.

Thread-sharing errors (:class:`guarddb.ThreadOwnershipError`,
:class:`guarddb.ConcurrentUseError`, :class:`guarddb.PendingResultError`, and
``guarddb.pymysql``'s of those names) carry no error code, so SQLAlchemy does not
take them for a disconnect: they surface as
``sqlalchemy.exc.ProgrammingError`` whose ``.orig`` is guarddb's exception, and the
connection is not invalidated.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import create_engine as _sa_create_engine
from sqlalchemy import event, exc
from sqlalchemy.engine import make_url

import guarddb

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Dialect, Engine
    from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

__all__ = ["create_engine", "guard_engine"]

#: Set on the dialect's wrapped ``do_ping`` so that guarding an engine twice wraps it once.
_ADOPTING_PING = "_guarddb_adopts"


def _adopt(dbapi_connection: Any) -> None:
    """Make the calling thread the owner of a guarddb connection; ignore anything else."""
    adopt = getattr(dbapi_connection, "adopt", None)
    if adopt is not None:
        adopt()


def _inherited(dbapi_connection: Any) -> bool:
    """True for a guarddb connection this process inherited across fork() (no round trip)."""
    return getattr(dbapi_connection, "forked", False) is True


def _on_checkout(
    dbapi_connection: Any,
    connection_record: ConnectionPoolEntry,
    connection_proxy: PoolProxiedConnection,
) -> None:
    if _inherited(dbapi_connection):
        # The pool closes it (harmless in the child: its socket is /dev/null since
        # the fork), connects again, and runs the connect events and this one on the
        # new connection.  Also with on_fork="reconnect": a pool's own connect events
        # (session settings made in SQL) then run on the fresh session too.
        raise exc.DisconnectionError(
            "guarddb: a pooled connection was inherited across fork(); the pool replaces it"
        )
    _adopt(dbapi_connection)


def _on_checkin(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    # Back in the pool: nobody owns it, so the end of the thread that used it
    # last does not make it an orphan (and close_orphans leaves it alone).
    disown = getattr(dbapi_connection, "disown", None)
    if disown is not None and not _inherited(dbapi_connection):
        disown()


_POOL_EVENTS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("checkout", _on_checkout),
    ("checkin", _on_checkin),
)


def _adopt_before_ping(dialect: Dialect) -> None:
    """Wrap ``dialect.do_ping`` (pool pre-ping) so the pinging thread adopts first.

    The pre-ping runs on the checking-out thread before the ``checkout`` event; in
    strict mode a ping by a thread that does not own the connection yet would be
    refused.  A connection inherited across fork() is reported dead (the pool then
    replaces it) without a ping, which would raise ForkedConnectionError.
    """
    ping = dialect.do_ping
    if getattr(ping, _ADOPTING_PING, False):
        return

    def do_ping(dbapi_connection: Any) -> bool:
        if _inherited(dbapi_connection):
            return False  # not alive here: the pool replaces it (and the pool's older ones)
        _adopt(dbapi_connection)
        return ping(dbapi_connection)

    setattr(do_ping, _ADOPTING_PING, True)
    dialect.do_ping = do_ping  # type: ignore[method-assign]


def guard_engine(engine: Engine) -> Engine:
    """Attach guarddb's pool events to ``engine`` and return it.

    On checkout (and on pool pre-ping) the checking-out thread adopts the
    connection, so strict mode works with a pool; a connection inherited across
    fork() is replaced on checkout.  The events stay with the engine across
    ``engine.dispose()``.  Calling it again on the same engine changes nothing.
    Connections that are not guarddb's are left alone.
    """
    for name, listener in _POOL_EVENTS:
        if not event.contains(engine, name, listener):
            event.listen(engine, name, listener)
    _adopt_before_ping(engine.dialect)
    return engine


def create_engine(url: str | URL, **kwargs: Any) -> Engine:
    """``sqlalchemy.create_engine()`` on guarddb's module for the driver, then :func:`guard_engine`.

    For a ``mysqldb`` URL (``mysql+mysqldb://``, ``mariadb+mysqldb://``, or plain
    ``mysql://``, whose default driver is mysqldb) ``module=guarddb`` is passed,
    for a ``pymysql`` URL (``mysql+pymysql://``, ``mariadb+pymysql://``)
    ``module=guarddb.pymysql``, unless ``module=`` is given; other URLs are passed
    as they are.  Guard keywords go in ``connect_args``, e.g.
    ``connect_args={"guard": "strict"}``.
    """
    driver = make_url(url).get_driver_name()
    if driver == "mysqldb":
        kwargs.setdefault("module", guarddb)
    elif driver == "pymysql" and "module" not in kwargs:
        # PyMySQL's face, imported for its URLs only (PyMySQL is an extra).
        kwargs["module"] = importlib.import_module("guarddb.pymysql")
    return guard_engine(_sa_create_engine(url, **kwargs))
