"""``import guarddb.mutex as MySQLdb``: guarddb's surface with mutex mode by default.

For legacy code that shares connections (or one cursor) between threads:
every call waits its turn on a per-connection lock, and each thread gets its
own results, unchanged code included.  DB-API ``threadsafety`` is 2: threads
may share connections.
"""

from __future__ import annotations

import sys
from typing import Any

import guarddb
from guarddb import *  # noqa: F403 - the same surface as guarddb
from guarddb import __all__ as _all
from guarddb import connections

#: DB-API: threads may share the module and connections.
threadsafety = 2


def Connect(  # type: ignore[no-redef]  # guarddb's, mutex by default
    *args: Any, guard: str = "mutex", **kwargs: Any
) -> connections.Connection:
    """Open a guarded connection, in mutex mode unless ``guard=`` says otherwise."""
    return connections.Connection(*args, guard=guard, **kwargs)


# As in MySQLdb, Connection is the factory too (the class is guarddb.connections.Connection).
connect = Connection = Connect  # type: ignore[assignment]


def install_as_MySQLdb() -> None:  # type: ignore[no-redef]
    """Like :func:`guarddb.install_as_MySQLdb`, with this module (mutex by default) as MySQLdb."""
    guarddb._install_as_mysqldb(sys.modules[__name__])


__all__ = list(_all)
del _all


def __getattr__(name: str) -> Any:
    return getattr(guarddb, name)
