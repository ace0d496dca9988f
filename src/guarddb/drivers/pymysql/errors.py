"""guarddb's errors for PyMySQL: each kind is also the ``pymysql.err`` class frameworks handle.

Public on :mod:`guarddb.pymysql`, the module these classes name, so that
pickles and tracebacks stay the same.  See :mod:`guarddb.core.errors` for what
each kind means: the thread errors derive from ``pymysql.err.ProgrammingError``
(a bug in the caller, never a disconnect code), the fork and guarddb-closed
errors from ``pymysql.err.OperationalError`` with ``args[0] == 2006``.
"""

from __future__ import annotations

from pymysql.err import OperationalError, ProgrammingError

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

#: Where the classes are public (their ``__module__``: pickles find them there).
PUBLIC_MODULE = "guarddb.pymysql"


class ThreadOwnershipError(_kinds.ThreadOwnershipError, ProgrammingError):
    __doc__ = _kinds.ThreadOwnershipError.__doc__
    __module__ = PUBLIC_MODULE


class ConcurrentUseError(_kinds.ConcurrentUseError, ProgrammingError):
    __doc__ = _kinds.ConcurrentUseError.__doc__
    __module__ = PUBLIC_MODULE


#: What the driver-neutral message says the driver would do with unread rows, and
#: what PyMySQL does: it reads them out and drops them, with only a warning.
_MYSQLCLIENT_CONSEQUENCE = "libmysqlclient would answer 'Commands out of sync'"
_PYMYSQL_CONSEQUENCE = (
    "PyMySQL would read them out and drop them, warning 'Previous unbuffered result "
    "was left incomplete'"
)


class PendingResultError(_kinds.PendingResultError, ProgrammingError):
    __doc__ = _kinds.PendingResultError.__doc__
    __module__ = PUBLIC_MODULE

    def __init__(self, *args: object) -> None:
        super().__init__(
            *(
                arg.replace(_MYSQLCLIENT_CONSEQUENCE, _PYMYSQL_CONSEQUENCE)
                if isinstance(arg, str)
                else arg
                for arg in args
            )
        )


class ForkedConnectionError(_kinds.ForkedConnectionError, OperationalError):
    __doc__ = _kinds.ForkedConnectionError.__doc__
    __module__ = PUBLIC_MODULE


class LockTimeoutError(_kinds.LockTimeoutError, OperationalError):
    __doc__ = _kinds.LockTimeoutError.__doc__
    __module__ = PUBLIC_MODULE


class IdleClosedError(_kinds.IdleClosedError, OperationalError):
    __doc__ = _kinds.IdleClosedError.__doc__
    __module__ = PUBLIC_MODULE
