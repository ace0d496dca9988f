"""``guarddb.pymysql.cursors`` (``pymysql.cursors`` once installed): the guarded cursor classes.

They live in PyMySQL's layer, :mod:`guarddb.drivers.pymysql.cursors`.  Any
subclass of a PyMySQL cursor class (of these too) given to ``conn.cursor(cls)``
or ``cursorclass=`` is guarded.  Whatever else ``pymysql.cursors`` has is
PyMySQL's own, found (and set) here too.
"""

from __future__ import annotations

import pymysql.cursors as _pymysql_cursors

from ..drivers.pymysql.cursors import (
    RE_INSERT_VALUES,
    Cursor,
    DictCursor,
    DictCursorMixin,
    GuardedBufferedMixIn,
    GuardedCursorMixIn,
    GuardedUnbufferedMixIn,
    PerThreadResultsMixIn,
    SSCursor,
    SSDictCursor,
    guarded_class,
)
from ._forward import stand_in

__all__ = [
    "RE_INSERT_VALUES",
    "Cursor",
    "DictCursor",
    "DictCursorMixin",
    "GuardedBufferedMixIn",
    "GuardedCursorMixIn",
    "GuardedUnbufferedMixIn",
    "PerThreadResultsMixIn",
    "SSCursor",
    "SSDictCursor",
    "guarded_class",
]

stand_in(__name__, _pymysql_cursors)
