"""guarddb's errors for mysqlclient: each kind is also the MySQLdb class frameworks handle.

Public as :mod:`guarddb.errors` (and on :mod:`guarddb` itself), which is the
module these classes name, so that pickles and tracebacks stay the same.
See :mod:`guarddb.core.errors` for what each kind means.
"""

from __future__ import annotations

from MySQLdb import OperationalError, ProgrammingError

from ...core import errors as _kinds
from ...core.errors import CR_SERVER_GONE_ERROR, GuardError

__all__ = [
    "CR_SERVER_GONE_ERROR",
    "ConcurrentUseError",
    "ForkedConnectionError",
    "GuardError",
    "IdleClosedError",
    "LockTimeoutError",
    "PendingResultError",
    "ThreadOwnershipError",
]


class ThreadOwnershipError(_kinds.ThreadOwnershipError, ProgrammingError):
    __doc__ = _kinds.ThreadOwnershipError.__doc__
    __module__ = "guarddb.errors"


class ConcurrentUseError(_kinds.ConcurrentUseError, ProgrammingError):
    __doc__ = _kinds.ConcurrentUseError.__doc__
    __module__ = "guarddb.errors"


class PendingResultError(_kinds.PendingResultError, ProgrammingError):
    __doc__ = _kinds.PendingResultError.__doc__
    __module__ = "guarddb.errors"


class ForkedConnectionError(_kinds.ForkedConnectionError, OperationalError):
    __doc__ = _kinds.ForkedConnectionError.__doc__
    __module__ = "guarddb.errors"


class LockTimeoutError(_kinds.LockTimeoutError, OperationalError):
    __doc__ = _kinds.LockTimeoutError.__doc__
    __module__ = "guarddb.errors"


class IdleClosedError(_kinds.IdleClosedError, OperationalError):
    __doc__ = _kinds.IdleClosedError.__doc__
    __module__ = "guarddb.errors"
