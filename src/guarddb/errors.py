"""guarddb's exceptions, as mysqlclient's users catch them.

Every one derives from :class:`GuardError` (shared by every driver: see
:mod:`guarddb.core.errors`) and from the MySQLdb class a framework already
handles: the thread errors from ``ProgrammingError`` (a bug in the caller,
never a disconnect code), :class:`ForkedConnectionError` and
:class:`IdleClosedError` from ``OperationalError`` with ``args[0] == 2006``
(CR_SERVER_GONE_ERROR), so that SQLAlchemy's and Django's disconnect handling
throw the connection away and make a new one.  They pickle.
"""

from __future__ import annotations

from .core.errors import GUARD_ERRNO
from .drivers.mysqldb.errors import (
    CR_SERVER_GONE_ERROR,
    ConcurrentUseError,
    ForkedConnectionError,
    GuardError,
    IdleClosedError,
    LockTimeoutError,
    PendingResultError,
    ThreadOwnershipError,
)

__all__ = [
    "CR_SERVER_GONE_ERROR",
    "GUARD_ERRNO",
    "ConcurrentUseError",
    "ForkedConnectionError",
    "GuardError",
    "IdleClosedError",
    "LockTimeoutError",
    "PendingResultError",
    "ThreadOwnershipError",
]
