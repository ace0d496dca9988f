"""gunicorn config for tests/test_gunicorn.py: a master-side check of wsgi_app's connection.

``on_exit`` runs in the master after every worker has exited: it queries the connection
the master opened when it preloaded wsgi_app, and writes what it got (JSON) to the file
named by ``GUARDDB_WSGI_EXIT_REPORT``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def on_exit(server: Any) -> None:
    """Query the preloaded module's connection in the master; write the outcome."""
    module = sys.modules.get("wsgi_app")
    report: dict[str, Any] = {"pid": os.getpid()}
    if module is None:
        report["error"] = "wsgi_app was not imported in the master (no --preload?)"
    else:
        try:
            report["session"] = module.session()
            report["master_session"] = module.MASTER_SESSION
        except Exception as exc:
            report["error"] = type(exc).__name__
            report["args0"] = exc.args[0] if exc.args else None
    with open(os.environ["GUARDDB_WSGI_EXIT_REPORT"], "w") as out:
        json.dump(report, out)
