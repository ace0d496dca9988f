"""``guarddb.connections`` (``MySQLdb.connections`` once installed): the guarded Connection.

The class lives in mysqlclient's layer, :mod:`guarddb.drivers.mysqldb.connections`;
whatever else ``MySQLdb.connections`` has is found here too.
"""

from __future__ import annotations

from typing import Any

from .drivers.mysqldb import connections as _layer
from .drivers.mysqldb.connections import Connection

__all__ = ["Connection"]


def __getattr__(name: str) -> Any:
    return getattr(_layer, name)
