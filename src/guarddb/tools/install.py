"""guarddb in place of the MySQL drivers a program imports: what the pytest plugin and ``run`` do.

An unchanged program or test suite is guarded whichever driver it imports:
``import MySQLdb`` gives guarddb (:func:`guarddb.install_as_MySQLdb`) and
``import pymysql`` gives :mod:`guarddb.pymysql`
(:func:`guarddb.pymysql.install_as_pymysql`), each only when its driver is
installed: guarddb works with mysqlclient alone, with PyMySQL alone, or with
both.  A program that calls ``pymysql.install_as_MySQLdb()`` itself (Django on
PyMySQL) then calls guarddb.pymysql's, and is guarded as well.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

#: The modules each installer puts in ``sys.modules``, by the name a program imports.
_REPLACED = {
    "MySQLdb": ("MySQLdb", "MySQLdb.connections", "MySQLdb.cursors"),
    "pymysql": ("pymysql", "pymysql.connections", "pymysql.cursors"),
}


@dataclass
class Installation:
    """What :func:`install` put in place, and what it could not."""

    #: The module names a program now imports guarded: ``"MySQLdb"``, ``"pymysql"``.
    modules: list[str] = field(default_factory=list)
    #: For each module name left alone, why: ``"PyMySQL is not installed (...)"``.
    missing: dict[str, str] = field(default_factory=dict)
    _before: dict[str, Any] = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        """``"MySQLdb and pymysql"``, ``"pymysql"``, ...: the names now guarded."""
        return " and ".join(self.modules) if self.modules else "nothing"

    def undo(self) -> None:
        """Put back in ``sys.modules`` what was there before :func:`install`."""
        for name, module in self._before.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        self._before.clear()


def install() -> Installation:
    """Install guarddb as ``MySQLdb`` (mysqlclient) and as ``pymysql``, where each is installed.

    Call it before the program imports its driver.  A driver that is not
    installed is left out, saying why in :attr:`Installation.missing`; any
    other failure to import guarddb's face for a driver is raised.
    """
    import guarddb

    done = Installation()
    try:
        install_mysqldb = guarddb.install_as_MySQLdb
    except ImportError as exc:  # guarddb's MySQLdb surface: mysqlclient is not installed
        done.missing["MySQLdb"] = f"mysqlclient is not installed ({exc.__cause__ or exc})"
    else:
        _remember(done, "MySQLdb")
        install_mysqldb()
        done.modules.append("MySQLdb")
    try:
        import guarddb.pymysql as face
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "pymysql":
            raise
        done.missing["pymysql"] = f"PyMySQL is not installed ({exc})"
    else:
        # After importing the face (which imports PyMySQL): undo puts PyMySQL's own back.
        _remember(done, "pymysql")
        face.install_as_pymysql()
        done.modules.append("pymysql")
    return done


def _remember(done: Installation, module: str) -> None:
    for name in _REPLACED[module]:
        done._before.setdefault(name, sys.modules.get(name))
