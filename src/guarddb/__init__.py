"""guarddb: a guarded drop-in for MySQLdb (mysqlclient).

``import guarddb as MySQLdb``: the same module surface, with connections and
cursors whose every call is checked by a small C guard.  A connection used by
the wrong thread, at the same time by two threads, or in a forked child raises
a clean, explained exception (see :mod:`guarddb.errors`) instead of crashing,
hanging, or mixing up results.

(PYTEST_DONT_REWRITE: the package carries a pytest plugin, and may be imported
before pytest starts, e.g. under ``python -m guarddb run -m pytest``.)
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from typing import Any

from .core.errors import GuardError
from .core.lifecycle import ConnectionInfo, live_connections
from .core.settings import MODES, default_mode, set_default_mode, set_defaults
from .core.violations import Violation, on_violation, remove_violation_hook

# mysqlclient is an extra (guarddb[mysqlclient]): without it this package still
# imports (guarddb.pymysql and the driver-neutral names work), and its MySQLdb
# names raise an ImportError that says what to install.
try:
    import MySQLdb as _MySQLdb
    from MySQLdb import (
        BINARY,
        DATE,
        DATETIME,
        FIELD_TYPE,
        NUMBER,
        ROWID,
        STRING,
        TIME,
        TIMESTAMP,
        Binary,
        DatabaseError,
        DataError,
        Date,
        DateFromTicks,
        DBAPISet,
        Error,
        IntegrityError,
        InterfaceError,
        InternalError,
        MySQLError,
        NotSupportedError,
        OperationalError,
        ProgrammingError,
        Time,
        TimeFromTicks,
        Timestamp,
        TimestampFromTicks,
        Warning,
        apilevel,
        constants,
        converters,
        debug,
        get_client_info,
        paramstyle,
        string_literal,
        times,
        version_info,
    )
    from MySQLdb._mysql import escape, escape_string
except ImportError as _error:
    _MISSING_MYSQLCLIENT: ImportError | None = _error
else:
    _MISSING_MYSQLCLIENT = None
    from . import connections, cursors
    from .errors import (
        ConcurrentUseError,
        ForkedConnectionError,
        IdleClosedError,
        LockTimeoutError,
        PendingResultError,
        ThreadOwnershipError,
    )

__version__ = "0.2.0"

#: DB-API: threads may share the module, not connections (mutex mode raises it).
threadsafety = 1


if _MISSING_MYSQLCLIENT is None:

    def Connect(*args: Any, **kwargs: Any) -> connections.Connection:
        """Open a guarded connection: mysqlclient's arguments, plus guarddb's keywords.

        ``guard=`` (the mode), ``on_fork=``, ``mutex_timeout=``, ``mutex_scope=``,
        ``max_idle=``, ``on_idle=``, ``close_orphans=``: see
        :class:`guarddb.connections.Connection`.
        """
        return connections.Connection(*args, **kwargs)

    connect = Connect
    Connection = connections.Connection

    def install_as_MySQLdb() -> None:
        """Make ``import MySQLdb`` (and ``MySQLdb.connections`` / ``.cursors``) give guarddb.

        ``MySQLdb.constants``, ``.converters``, ``.times`` and ``._exceptions``
        stay mysqlclient's own modules.  Call it before the code that imports
        MySQLdb (Django settings, a conftest, a sitecustomize).
        """
        _install_as_mysqldb(sys.modules[__name__])

    class _NamedMySQLdb(types.ModuleType):
        """A guarddb face as ``import MySQLdb`` gives it once installed.

        Every attribute is the face's own (read through, so the two never
        differ), but the module is named ``MySQLdb``: code that finds a driver's
        exceptions by its module's name (SQLAlchemy: ``MySQLdb._exceptions``
        under ``MySQLdb``) finds them, and ``MySQLdb.OperationalError`` is
        still ``guarddb.OperationalError``.  Submodules not installed are
        mysqlclient's own (its package path).
        """

        _face: types.ModuleType

        def __getattr__(self, name: str) -> Any:
            return getattr(self._face, name)

        def __dir__(self) -> list[str]:
            return dir(self._face)

    def _install_as_mysqldb(face: types.ModuleType) -> None:
        """``import MySQLdb`` gives ``face`` (guarddb, or guarddb.mutex), named MySQLdb."""
        named = _NamedMySQLdb("MySQLdb", face.__doc__)
        named._face = face
        named.__file__ = face.__file__
        named.__path__ = list(_MySQLdb.__path__)
        named.__spec__ = importlib.machinery.ModuleSpec(
            "MySQLdb", None, origin=face.__file__, is_package=True
        )
        named.__spec__.submodule_search_locations = named.__path__
        sys.modules["MySQLdb"] = named
        sys.modules["MySQLdb.connections"] = connections
        sys.modules["MySQLdb.cursors"] = cursors

    # Submodules stay mysqlclient's own, under guarddb's name too: frameworks do
    # `__import__(dbapi.__name__ + ".constants.CLIENT")` (SQLAlchemy's mysqldb dialect).
    _SHARED_SUBMODULES = (
        "_exceptions",
        "_mysql",
        "constants",
        "constants.CLIENT",
        "constants.CR",
        "constants.ER",
        "constants.FIELD_TYPE",
        "constants.FLAG",
        "converters",
        "release",
        "times",
    )
    for _sub in _SHARED_SUBMODULES:
        sys.modules.setdefault(f"{__name__}.{_sub}", importlib.import_module(f"MySQLdb.{_sub}"))
    del _sub
    _exceptions = _MySQLdb._exceptions
    _mysql = _MySQLdb._mysql
    release = _MySQLdb.release


def __getattr__(name: str) -> Any:
    # Anything else MySQLdb has (present or future) is found here too.
    if _MISSING_MYSQLCLIENT is None:
        return getattr(_MySQLdb, name)
    if name in _MYSQLDB_NAMES:
        raise ImportError(
            f"guarddb.{name} is part of guarddb's MySQLdb surface, which needs mysqlclient "
            f"({_MISSING_MYSQLCLIENT}): pip install 'guarddb[mysqlclient]'. For PyMySQL, "
            f"use guarddb.pymysql (pip install 'guarddb[pymysql]')."
        ) from _MISSING_MYSQLCLIENT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BINARY",
    "DATE",
    "DATETIME",
    "FIELD_TYPE",
    "MODES",
    "NUMBER",
    "ROWID",
    "STRING",
    "TIME",
    "TIMESTAMP",
    "Binary",
    "ConcurrentUseError",
    "Connect",
    "Connection",
    "ConnectionInfo",
    "DBAPISet",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "ForkedConnectionError",
    "GuardError",
    "IdleClosedError",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "LockTimeoutError",
    "MySQLError",
    "NotSupportedError",
    "OperationalError",
    "PendingResultError",
    "ProgrammingError",
    "ThreadOwnershipError",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "Violation",
    "Warning",
    "apilevel",
    "connect",
    "connections",
    "constants",
    "converters",
    "cursors",
    "debug",
    "default_mode",
    "escape",
    "escape_string",
    "get_client_info",
    "install_as_MySQLdb",
    "live_connections",
    "on_violation",
    "paramstyle",
    "remove_violation_hook",
    "set_default_mode",
    "set_defaults",
    "string_literal",
    "threadsafety",
    "times",
    "version_info",
]

#: The names that need mysqlclient (without it they raise ImportError, saying so).
_MYSQLDB_NAMES = frozenset(
    {"_exceptions", "_mysql", "release", *(name for name in __all__ if name not in globals())}
)
if _MISSING_MYSQLCLIENT is not None:
    __all__ = [name for name in __all__ if name not in _MYSQLDB_NAMES]
