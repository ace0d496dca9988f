"""guarddb: a guarded drop-in for MySQLdb (mysqlclient).

``import guarddb as MySQLdb``: the same module surface, with connections and
cursors whose every call is checked by a small C guard.  A connection used by
the wrong thread, at the same time by two threads, or in a forked child raises
a clean, explained exception (see :mod:`guarddb.errors`) instead of crashing,
hanging, or mixing up results.

Importing guarddb imports no driver: mysqlclient is imported on the first use
of a name of its surface (``guarddb.connect``, ``guarddb.OperationalError``,
``import guarddb.constants``, ...), and PyMySQL by :mod:`guarddb.pymysql`.

(PYTEST_DONT_REWRITE: the package carries a pytest plugin, and may be imported
before pytest starts, e.g. under ``python -m guarddb run -m pytest``.)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from .core.errors import GuardError
from .core.lifecycle import ConnectionInfo, live_connections
from .core.settings import MODES, default_mode, set_default_mode, set_defaults
from .core.violations import Violation, on_violation, remove_violation_hook

if TYPE_CHECKING:  # what __getattr__ brings in from guarddb._face on first use
    from . import connections, cursors
    from ._face import (
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
        ConcurrentUseError,
        Connect,
        Connection,
        DatabaseError,
        DataError,
        Date,
        DateFromTicks,
        DBAPISet,
        Error,
        ForkedConnectionError,
        IdleClosedError,
        IntegrityError,
        InterfaceError,
        InternalError,
        LockTimeoutError,
        MySQLError,
        NotSupportedError,
        OperationalError,
        PendingResultError,
        ProgrammingError,
        ThreadOwnershipError,
        Time,
        TimeFromTicks,
        Timestamp,
        TimestampFromTicks,
        Warning,
        apilevel,
        connect,
        constants,
        converters,
        debug,
        escape,
        escape_string,
        get_client_info,
        install_as_MySQLdb,
        paramstyle,
        string_literal,
        times,
        version_info,
    )
    from ._face import _exceptions as _exceptions
    from ._face import _install_as_mysqldb as _install_as_mysqldb
    from ._face import _mysql as _mysql
    from ._face import release as release

__version__ = "0.2.0"

#: DB-API: threads may share the module, not connections (mutex mode raises it).
threadsafety = 1

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


#: mysqlclient's submodules that are guarddb's too, under its name (``guarddb.constants``).
_SHARED_SUBMODULES = frozenset(
    {
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
    }
)

#: The names of guarddb's MySQLdb surface, which need mysqlclient (guarddb._face).
_MYSQLDB_NAMES = frozenset(
    {"_exceptions", "_install_as_mysqldb", "_mysql", "release"}
    | {name for name in __all__ if name not in globals()}
)
try:
    _have_mysqlclient = importlib.util.find_spec("MySQLdb") is not None  # imports nothing
except ImportError:  # a finder that says so
    _have_mysqlclient = False
except ValueError:  # a module in sys.modules without a spec
    _have_mysqlclient = True
if not _have_mysqlclient:  # `from guarddb import *` gives the rest
    __all__ = [name for name in __all__ if name not in _MYSQLDB_NAMES]

# Not named _face: importing guarddb._face sets that attribute of the package
# itself, loaded here or not (a direct import would then skip the copy below).
_loaded_face: types.ModuleType | None = None
_missing_mysqlclient: ImportError | None = None


def _load_face() -> types.ModuleType | None:
    """Import guarddb._face (and mysqlclient) once: the module, or None without mysqlclient.

    Its names become this package's attributes.  mysqlclient is an extra
    (guarddb[mysqlclient]): without it (or with a build of it that does not
    import), guarddb.pymysql and the driver-neutral names still work.
    """
    global _loaded_face, _missing_mysqlclient
    if _loaded_face is None and _missing_mysqlclient is None:
        try:
            importlib.import_module("MySQLdb._mysql")
        except ImportError as exc:
            _missing_mysqlclient = exc
            return None
        face = importlib.import_module("._face", __name__)
        globals().update({name: getattr(face, name) for name in face.__all__})
        _loaded_face = face
    return _loaded_face


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # probes (copy, inspect, pickle) load nothing
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    face = _load_face()
    if face is not None:
        # Anything else MySQLdb has (present or future) is found here too.
        return getattr(face, name)
    if name in _MYSQLDB_NAMES:
        raise ImportError(
            f"guarddb.{name} is part of guarddb's MySQLdb surface, which needs mysqlclient "
            f"({_missing_mysqlclient}): pip install 'guarddb[mysqlclient]'. For PyMySQL, "
            f"use guarddb.pymysql (pip install 'guarddb[pymysql]')."
        ) from _missing_mysqlclient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _SharedSubmoduleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import guarddb.constants`` (and the other shared submodules) before first use.

    They are mysqlclient's own modules (guarddb._face registers them under
    guarddb's name once loaded): this finder, last on ``sys.meta_path``, loads
    the face for an import that comes first, and hands over mysqlclient's module.
    """

    PREFIX = f"{__name__}."

    def find_spec(
        self, fullname: str, path: Any = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if (
            not fullname.startswith(self.PREFIX)
            or fullname[len(self.PREFIX) :] not in _SHARED_SUBMODULES
        ):
            return None
        # Nothing is loaded here: a module that appeared in sys.modules under this
        # name while finding it would be imported again, from its own spec.
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        if _load_face() is None:
            raise ModuleNotFoundError(
                f"No module named {spec.name!r}: guarddb's MySQLdb surface needs mysqlclient "
                f"({_missing_mysqlclient}): pip install 'guarddb[mysqlclient]'",
                name=spec.name,
            )
        module = sys.modules[spec.name]  # mysqlclient's own, registered by guarddb._face
        # The import system now sets the module's __spec__ to this one: exec_module
        # puts its own back.
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        spec = module.__spec__
        if spec is not None and spec.loader is self and spec.loader_state is not None:
            module.__spec__ = spec.loader_state


if not any(isinstance(finder, _SharedSubmoduleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_SharedSubmoduleFinder())
