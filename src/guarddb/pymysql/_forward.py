"""Face modules that stand in for one of PyMySQL's: what they do not define is PyMySQL's own.

``pymysql.connections.DEBUG = True`` (PyMySQL's packet dump), a test's
``mock.patch("pymysql.connections.ssl...")``: names a face does not define
are read, set and deleted in PyMySQL's module, so that such code works the
same once guarddb stands in for PyMySQL.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _StandIn(types.ModuleType):
    _pymysql_module: types.ModuleType

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pymysql_module, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__ or name.startswith("__"):
            super().__setattr__(name, value)
        else:
            setattr(self._pymysql_module, name, value)

    def __delattr__(self, name: str) -> None:
        if name in self.__dict__:
            super().__delattr__(name)
        else:
            delattr(self._pymysql_module, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(dir(self._pymysql_module)))


def stand_in(name: str, pymysql_module: types.ModuleType) -> None:
    """Make the module ``name`` (a face being imported) forward to ``pymysql_module``."""
    module = sys.modules[name]
    module.__dict__["_pymysql_module"] = pymysql_module
    module.__class__ = _StandIn
