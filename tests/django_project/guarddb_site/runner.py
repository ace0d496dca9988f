"""A test runner that reports whether its own session survives the parallel workers.

Django's parallel runner forks its workers with the runner's connection open; each worker
closes the connection it inherited (``setup_worker_connection``).  This runner notes the
runner process's CONNECTION_ID() before the suite runs and asks again after it, and writes
both to ``$GUARDDB_RUNNER_REPORT`` (JSON lines).
"""

from __future__ import annotations

import json
import os
from typing import Any

from django.db import connection
from django.test.runner import DiscoverRunner


def _session_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


class SessionReportingRunner(DiscoverRunner):
    def run_suite(self, suite: Any, **kwargs: Any) -> Any:
        report_path = os.environ.get("GUARDDB_RUNNER_REPORT")
        if not report_path:
            return super().run_suite(suite, **kwargs)
        before = _session_id()  # the runner's connection is open when the workers fork
        try:
            return super().run_suite(suite, **kwargs)
        finally:
            try:
                after: Any = _session_id()
            except Exception as exc:
                after = f"{type(exc).__name__}: {exc}"
            with open(report_path, "a") as out:
                out.write(json.dumps({"runner": os.getpid(), "before": before, "after": after}))
                out.write("\n")
