"""guarddb for PyMySQL: ``import guarddb.pymysql as pymysql``.

PyMySQL's module surface, with connections and cursors whose every call is
checked by guarddb's C guard, as for mysqlclient: a connection used by the
wrong thread, at the same time by two threads, or in a forked child raises a
clean, explained exception instead of "Packet sequence number wrong",
``InterfaceError(0, '')``, a hang or another thread's rows.  The exception
classes are PyMySQL's very objects (``guarddb.pymysql.OperationalError is
pymysql.err.OperationalError``); guarddb's own errors derive from them.

:func:`install_as_pymysql` makes an unchanged ``import pymysql`` give this
module; :func:`install_as_MySQLdb` is PyMySQL's function of that name,
guarded (Django's route to PyMySQL).  Only PyMySQL is imported: mysqlclient
need not be installed.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import pymysql as _pymysql
from pymysql import (
    BINARY,
    DATE,
    DATETIME,
    FIELD_TYPE,
    NULL,
    NUMBER,
    ROWID,
    STRING,
    TIME,
    TIMESTAMP,
    VERSION,
    VERSION_STRING,
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
    __version__,
    apilevel,
    constants,
    converters,
    err,
    get_client_info,
    paramstyle,
    thread_safe,
    times,
    version_info,
)

from ..core.lifecycle import ConnectionInfo, live_connections
from ..core.settings import MODES, default_mode, set_default_mode, set_defaults
from ..core.violations import Violation, on_violation, remove_violation_hook
from ..drivers.pymysql.errors import (
    CR_SERVER_GONE_ERROR,
    ConcurrentUseError,
    ForkedConnectionError,
    GuardError,
    IdleClosedError,
    LockTimeoutError,
    PendingResultError,
    ThreadOwnershipError,
)
from . import connections, cursors

#: DB-API: threads may share the module, not connections (mutex mode makes sharing safe).
threadsafety = 1

# As in PyMySQL, Connection is the factory too.
Connect = connect = Connection = connections.Connection

# PyMySQL's own submodules, under this package's name too (``from
# guarddb.pymysql.constants import CLIENT``), and under MySQLdb's once
# install_as_MySQLdb() has run.  connections and cursors are guarddb's.
_SHARED_SUBMODULES: dict[str, types.ModuleType] = {}
for _sub in (
    "_auth",
    "charset",
    "constants",
    "constants.CLIENT",
    "constants.COMMAND",
    "constants.CR",
    "constants.ER",
    "constants.FIELD_TYPE",
    "constants.FLAG",
    "constants.SERVER_STATUS",
    "converters",
    "err",
    "optionfile",
    "protocol",
    "times",
):
    try:
        _SHARED_SUBMODULES[_sub] = importlib.import_module(f"pymysql.{_sub}")
    except ImportError:  # not in every PyMySQL version
        continue
    sys.modules.setdefault(f"{__name__}.{_sub}", _SHARED_SUBMODULES[_sub])
del _sub


class _InstalledModule(types.ModuleType):
    """What ``import pymysql`` (or ``import MySQLdb``) gives once installed: this module.

    A module of PyMySQL's name, so that code which imports by a driver
    module's ``__name__`` (SQLAlchemy: ``__import__(dbapi.__name__ +
    ".constants.CLIENT")``) finds PyMySQL's submodules; everything it has is
    this module's (``guarddb.pymysql``).  Its ``__path__`` is PyMySQL's
    package directory, so that ``import pymysql.<anything else>`` (PyMySQL's
    own test suite, ``pymysql.tests``) finds PyMySQL's files.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(_face, name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(_face)) | set(self.__dict__))


_face = sys.modules[__name__]
_installed: _InstalledModule | None = None


def _installed_module() -> _InstalledModule:
    global _installed
    if _installed is None:
        module = _InstalledModule("pymysql", __doc__)
        module.__path__ = list(_pymysql.__path__)
        module.__package__ = "pymysql"
        _installed = module
    return _installed


def install_as_pymysql() -> None:
    """Make ``import pymysql`` (and ``pymysql.connections`` / ``.cursors``) give guarddb.

    ``pymysql.err``, ``.constants``, ``.converters`` and ``.times`` stay
    PyMySQL's own modules.  Call it before the code that imports pymysql (a
    conftest, a sitecustomize, the top of the program): a module that
    imported pymysql before keeps PyMySQL's unguarded classes.
    """
    sys.modules["pymysql"] = _installed_module()
    sys.modules["pymysql.connections"] = connections
    sys.modules["pymysql.cursors"] = cursors


def install_as_MySQLdb() -> None:
    """PyMySQL's ``install_as_MySQLdb()``, guarded: ``import MySQLdb`` gives this module.

    Code written for mysqlclient (Django's MySQL backend, with
    ``pymysql.install_as_MySQLdb()`` in its settings) then runs on PyMySQL
    with guarddb's guard.  ``MySQLdb.connections`` and ``MySQLdb.cursors``
    are guarddb's; ``MySQLdb.constants``, ``.converters``, ``.times`` and
    the rest are PyMySQL's own, as PyMySQL's function gives them, whatever
    an earlier ``import MySQLdb`` of mysqlclient left behind.
    """
    sys.modules["MySQLdb"] = _installed_module()
    sys.modules["MySQLdb.connections"] = connections
    sys.modules["MySQLdb.cursors"] = cursors
    for name, module in _SHARED_SUBMODULES.items():
        sys.modules[f"MySQLdb.{name}"] = module


def __getattr__(name: str) -> Any:
    # Anything else PyMySQL has (present or future) is found here too.
    return getattr(_pymysql, name)


__all__ = [
    "BINARY",
    "CR_SERVER_GONE_ERROR",
    "DATE",
    "DATETIME",
    "FIELD_TYPE",
    "MODES",
    "NULL",
    "NUMBER",
    "ROWID",
    "STRING",
    "TIME",
    "TIMESTAMP",
    "VERSION",
    "VERSION_STRING",
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
    "__version__",
    "apilevel",
    "connect",
    "connections",
    "constants",
    "converters",
    "cursors",
    "default_mode",
    "err",
    "get_client_info",
    "install_as_MySQLdb",
    "install_as_pymysql",
    "live_connections",
    "on_violation",
    "paramstyle",
    "remove_violation_hook",
    "set_default_mode",
    "set_defaults",
    "thread_safe",
    "threadsafety",
    "times",
    "version_info",
]
