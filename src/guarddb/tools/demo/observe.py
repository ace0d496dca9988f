"""What the framework and lifecycle scenarios watch: the server's sessions, guarddb's orphans.

The server is watched through a plain mysqlclient connection of the child's own
(never the connections under test); guarddb's orphan reports through an
``on_violation`` hook.  :func:`plural` words the counts in the scenarios' notes.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .framework import Context

#: Sessions closed by a client may linger a moment on the server: the watch polls this often.
POLL = 0.05


def connect_watcher(ctx: Context) -> Any:
    """A plain mysqlclient connection that looks at the server (not under test)."""
    import MySQLdb

    return MySQLdb.connect(**ctx.connect_args, autocommit=True)


def query(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall() or ())
    finally:
        cursor.close()


def open_sessions(watcher: Any) -> set[int]:
    """The ids of the sessions open on the server now (the watcher's own included)."""
    return {int(row[0]) for row in query(watcher, "SELECT ID FROM information_schema.PROCESSLIST")}


def wait_closed(watcher: Any, ids: set[int], until: float) -> tuple[set[int], float | None]:
    """Poll until none of ``ids`` is open on the server, or ``until`` passes.

    Returns the ids still open and when the last one closed (None if some stayed).
    """
    while True:
        still = ids & open_sessions(watcher)
        if not still:
            return still, time.monotonic()
        if time.monotonic() >= until:
            return still, None
        time.sleep(POLL)  # polling the server: it tells no one when a session ends


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def orphan_reports(ctx: Context) -> tuple[list[Any], Callable[[], None]]:
    """guarddb's orphan reports in this run (a hook), and how to remove the hook."""
    reports: list[Any] = []
    if ctx.driver != "guarddb":
        return reports, lambda: None

    def hook(violation: Any) -> None:
        if violation.kind == "orphan":
            reports.append(violation)

    ctx.db.on_violation(hook)
    return reports, lambda: ctx.db.remove_violation_hook(hook)
