"""``guarddb.cursors`` (``MySQLdb.cursors`` once installed): the guarded cursor classes.

They live in mysqlclient's layer, :mod:`guarddb.drivers.mysqldb.cursors`;
whatever else ``MySQLdb.cursors`` has is found here too.
"""

from __future__ import annotations

from typing import Any

from .drivers.mysqldb import cursors as _layer
from .drivers.mysqldb.cursors import (
    RE_INSERT_VALUES,
    BaseCursor,
    Cursor,
    CursorDictRowsMixIn,
    CursorStoreResultMixIn,
    CursorTupleRowsMixIn,
    CursorUseResultMixIn,
    DictCursor,
    GuardedCursorMixIn,
    GuardedStoreResultMixIn,
    GuardedUseResultMixIn,
    PerThreadResultsMixIn,
    SSCursor,
    SSDictCursor,
    guarded_class,
)

__all__ = [
    "RE_INSERT_VALUES",
    "BaseCursor",
    "Cursor",
    "CursorDictRowsMixIn",
    "CursorStoreResultMixIn",
    "CursorTupleRowsMixIn",
    "CursorUseResultMixIn",
    "DictCursor",
    "GuardedCursorMixIn",
    "GuardedStoreResultMixIn",
    "GuardedUseResultMixIn",
    "PerThreadResultsMixIn",
    "SSCursor",
    "SSDictCursor",
    "guarded_class",
]


def __getattr__(name: str) -> Any:
    return getattr(_layer, name)
