"""The demo's application code: compiled as a file of its own, :data:`APP_FILE`.

guarddb names the first frame outside its own package as the place a
connection was opened, and this package is guarddb's, so the application code
of the lifecycle scenarios (:mod:`~guarddb.tools.demo.leaks`,
:mod:`~guarddb.tools.demo.idle_pool`) is compiled under a file name of its own
for the sites guarddb reports to point at, as they would in a real program.
"""

from __future__ import annotations

import linecache
from typing import Any

#: The file name the lifecycle scenarios' application code is compiled under.
APP_FILE = "demo_app.py"


def load_app(source: str) -> dict[str, Any]:
    """Run ``source`` as the module :data:`APP_FILE`; returns its namespace."""
    # Known to linecache, so that tracebacks through it show its lines.
    linecache.cache[APP_FILE] = (len(source), None, source.splitlines(True), APP_FILE)
    namespace: dict[str, Any] = {"__name__": "demo_app", "__file__": APP_FILE}
    exec(compile(source, APP_FILE, "exec"), namespace)
    return namespace
