"""``guarddb.pymysql.connections`` (``pymysql.connections`` once installed): the guarded Connection.

The class lives in PyMySQL's layer, :mod:`guarddb.drivers.pymysql.connections`.
Whatever else ``pymysql.connections`` has is PyMySQL's own, found (and set) here too.
"""

from __future__ import annotations

import pymysql.connections as _pymysql_connections

from ..drivers.pymysql.connections import Connection
from ..drivers.pymysql.cursors import Cursor
from ._forward import stand_in

__all__ = ["Connection", "Cursor"]

stand_in(__name__, _pymysql_connections)
