"""guarddb's MySQLdb surface, as ``import guarddb as MySQLdb`` gives it.

The package imports this module (and so mysqlclient) on first use of one of
its names, never by being imported: a program or a pytest plugin that imports
guarddb for PyMySQL, or for nothing yet, leaves ``MySQLdb`` unimported (PyMySQL's
own ``install_as_MySQLdb()`` then works, as without guarddb).  Every name here
is read through the package (:func:`guarddb.__getattr__`).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from typing import Any

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

from . import _SHARED_SUBMODULES, connections, cursors
from .errors import (
    ConcurrentUseError,
    ForkedConnectionError,
    IdleClosedError,
    LockTimeoutError,
    PendingResultError,
    ThreadOwnershipError,
)


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
    _install_as_mysqldb(sys.modules["guarddb"])


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
# An import of one before this module is loaded loads it (the package's finder).
for _sub in _SHARED_SUBMODULES:
    sys.modules.setdefault(f"guarddb.{_sub}", importlib.import_module(f"MySQLdb.{_sub}"))
del _sub
_exceptions = _MySQLdb._exceptions
_mysql = _MySQLdb._mysql
release = _MySQLdb.release

#: What the package takes from here once loaded, as its own attributes.
__all__ = [
    "BINARY",
    "DATE",
    "DATETIME",
    "FIELD_TYPE",
    "NUMBER",
    "ROWID",
    "STRING",
    "TIME",
    "TIMESTAMP",
    "Binary",
    "ConcurrentUseError",
    "Connect",
    "Connection",
    "DBAPISet",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "ForkedConnectionError",
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
    "Warning",
    "_exceptions",
    "_install_as_mysqldb",
    "_mysql",
    "apilevel",
    "connect",
    "connections",
    "constants",
    "converters",
    "cursors",
    "debug",
    "escape",
    "escape_string",
    "get_client_info",
    "install_as_MySQLdb",
    "paramstyle",
    "release",
    "string_literal",
    "times",
    "version_info",
]


def __getattr__(name: str) -> Any:
    # Anything else MySQLdb has (present or future) is found here too.
    return getattr(_MySQLdb, name)
