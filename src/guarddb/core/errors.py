"""guarddb's exceptions, as every driver shares them.

Each kind here is driver-neutral: it derives from :class:`GuardError` only.
What a caller catches is a driver's own subclass of it, which derives from
the DB-API class that driver's users (and their frameworks) already handle:
the thread errors from ``ProgrammingError`` (a bug in the caller, never a
disconnect code), :class:`ForkedConnectionError` and :class:`IdleClosedError`
from ``OperationalError`` with ``args[0] == 2006`` (CR_SERVER_GONE_ERROR), so
that SQLAlchemy's and Django's disconnect handling throw the connection away
and make a new one.  A driver's layer defines those subclasses (for
mysqlclient: :mod:`guarddb.drivers.mysqldb.errors`, public as
:mod:`guarddb.errors`) and hands them to the guard as a :class:`DriverErrors`.

``except guarddb.GuardError`` catches every one of them, whichever driver
raised it.  The exceptions keep their message in ``args`` so that they pickle
(Celery and multiprocessing ship them between processes).
"""

from __future__ import annotations

from typing import Protocol

#: CR_SERVER_GONE_ERROR: what libmysqlclient says of a connection that is gone.
CR_SERVER_GONE_ERROR = 2006

#: guarddb's code for a thread-sharing error: outside the client (2000-2999)
#: and server ranges, so no framework reads it as a disconnect.
GUARD_ERRNO = 0


class GuardError(Exception):
    """Base of every error guarddb raises in place of a crash, a hang or mixed-up rows."""


class ThreadOwnershipError(GuardError):
    """strict mode: a thread other than the owner used the connection or one of its cursors.

    The owner is the thread that opened the connection, or the last one that
    called ``conn.adopt()``.
    """


class ConcurrentUseError(GuardError):
    """A thread called into a connection while another thread was inside a call on it."""


class PendingResultError(GuardError):
    """A statement was sent while an unbuffered (SSCursor) result was still unread.

    The driver would answer "(2014) Commands out of sync" or read the wrong
    packets; read the rows out or close that cursor first.
    """


class ForkedConnectionError(GuardError):
    """A forked child used a connection inherited from its parent.

    ``args[0] == 2006`` so that connection pools treat it as a disconnect and
    open a fresh connection in the child.  The inherited socket was pointed at
    /dev/null at fork, so nothing the child does reaches the parent's session.
    """


class LockTimeoutError(GuardError):
    """mutex mode: waiting for the connection took longer than ``mutex_timeout``.

    Not a disconnect: the connection is fine, another thread holds it.  The
    message names that thread, how long it has held the connection, and the
    statement it runs.
    """


class IdleClosedError(GuardError):
    """guarddb closed the connection: idle longer than ``max_idle``, or left by its thread.

    ``args[0] == 2006``, so SQLAlchemy's and Django's disconnect handling
    replace the connection (and ``pool_pre_ping`` does so silently).  Not a
    violation: the connection was closed on purpose, while nobody used it.
    With ``on_idle="reconnect"`` the next call opens a fresh session instead.
    """


class DriverErrors(Protocol):
    """A driver's own subclasses of each kind (its errors module has them by these names)."""

    # Read-only: a driver's subclass is each kind too.
    @property
    def ThreadOwnershipError(self) -> type[ThreadOwnershipError]: ...
    @property
    def ConcurrentUseError(self) -> type[ConcurrentUseError]: ...
    @property
    def PendingResultError(self) -> type[PendingResultError]: ...
    @property
    def ForkedConnectionError(self) -> type[ForkedConnectionError]: ...
    @property
    def LockTimeoutError(self) -> type[LockTimeoutError]: ...
    @property
    def IdleClosedError(self) -> type[IdleClosedError]: ...
