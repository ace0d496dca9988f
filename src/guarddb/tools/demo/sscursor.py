"""The scenario ``sscursor_pending`` (DESIGN.md): a second query while an SSCursor has rows left."""

from __future__ import annotations

from typing import Any

from .framework import Recorder

SS_ROWS = 1000

#: Rows 1..SS_ROWS, with no table (MariaDB >= 10.2, MySQL >= 8.0).
_ROWS_SQL = (
    "WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq "
    f"WHERE n < {SS_ROWS}) SELECT n FROM seq"
)


def sscursor_pending(db: Any, connect_args: dict[str, Any], rec: Recorder) -> None:
    """An SSCursor with rows unread; a second query on another cursor, same thread."""
    conn = db.connect(**connect_args)
    for worker in ("SSCursor", "second query", "query after read-out"):
        rec.add(worker)
    unbuffered = conn.cursor(db.cursors.SSCursor)
    other = conn.cursor()
    try:
        unbuffered.execute(_ROWS_SQL)
        rec.check("SSCursor", unbuffered.fetchone(), (1,))
    except Exception as exc:
        rec.error("SSCursor", exc)
    try:
        other.execute("SELECT %s", (2,))
        rec.check("second query", other.fetchall(), ((2,),))
    except Exception as exc:
        rec.error("second query", exc)
    rec.done("second query")
    try:
        rows = unbuffered.fetchall()
        rec.check("SSCursor", tuple(rows), tuple((n,) for n in range(2, SS_ROWS + 1)))
    except Exception as exc:
        rec.error("SSCursor", exc)
    rec.done("SSCursor")
    try:
        other.execute("SELECT %s", (3,))
        rec.check("query after read-out", other.fetchall(), ((3,),))
    except Exception as exc:
        rec.error("query after read-out", exc)
    rec.done("query after read-out")
    conn.close()
