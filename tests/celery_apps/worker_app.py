"""A Celery app whose tasks use one module-level MySQL connection (the seed of issue 6).

Run by tests/test_celery.py as ``celery -A celery_apps.worker_app worker --pool=prefork``.
The connection is opened at import, in the worker's main process, before the pool forks its
children: every child inherits it.  The environment variable ``GUARDDB_CELERY_WORKER``
(JSON) says which driver to use (``plain`` mysqlclient or ``guarddb``), guarddb's
``on_fork``, the connect arguments, the table, the broker and where to write reports:

- ``parent.json``: the main process's pid and the module connection's CONNECTION_ID();
- ``ready.json``: written by ``worker_ready`` (the pool is up, the consumer consumes);
- ``shutdown.json``: at ``worker_shutdown``, in the main process, what a query on the
  module connection answered (or raised): does the parent's session survive its children?
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery, signals
from celery_apps.state import rendezvous, write_json

CONFIG: dict[str, Any] = json.loads(os.environ["GUARDDB_CELERY_WORKER"])
STATE_DIR: str = CONFIG["state_dir"]
TABLE: str = CONFIG["table"]

if CONFIG["driver"] == "guarddb":
    import guarddb as MySQLdb

    _guard_keywords: dict[str, Any] = {"on_fork": CONFIG["on_fork"]}
else:
    import MySQLdb

    _guard_keywords = {}

app = Celery("guarddb_celery_test", broker=CONFIG["broker"], backend=CONFIG["backend"])
app.conf.update(
    # A child stuck reading a reply that another process took is killed here (plain mysqlclient).
    task_time_limit=CONFIG["time_limit"],
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
)


def _connection_id(conn: Any) -> int:
    cursor = conn.cursor()
    cursor.execute("SELECT CONNECTION_ID()")
    (value,) = cursor.fetchone()
    cursor.close()
    return int(value)


# The seed: a connection for the whole module, opened before the pool forks.  autocommit so
# that no transaction is open at fork (on_fork="reconnect" refuses to replace one).
conn = MySQLdb.connect(**CONFIG["connect_args"], autocommit=True, **_guard_keywords)
PARENT = {"pid": os.getpid(), "connection_id": _connection_id(conn)}
write_json(STATE_DIR, "parent.json", PARENT)


@signals.worker_ready.connect
def _report_ready(**_: Any) -> None:
    write_json(STATE_DIR, "ready.json", {"pid": os.getpid()})


@signals.worker_shutdown.connect
def _check_parent_session(**_: Any) -> None:
    """In the main process, at shutdown: is the module connection still the same session?"""
    if os.getpid() != PARENT["pid"]:
        return
    # Written first: if the query below hangs (plain mysqlclient), the test still knows.
    write_json(STATE_DIR, "shutdown.json", {"started": True})
    try:
        connection_id = _connection_id(conn)
        cursor = conn.cursor()
        cursor.execute("SELECT 41 + 1")
        answer = cursor.fetchone()[0]
        report = {"connection_id": connection_id, "answer": int(answer)}
    except Exception as exc:
        report = {"error": f"{type(exc).__name__}: {exc}"}
    write_json(STATE_DIR, "shutdown.json", {"started": True, **report})


@app.task(name="guarddb_test.record")
def record(tag: str, rounds: int) -> dict[str, Any]:
    """Insert a row naming this task, echo ``rounds`` values, and read the row back."""
    rendezvous(STATE_DIR, tag)
    cursor = conn.cursor()
    cursor.execute(
        f"INSERT INTO {TABLE} (tag, pid, connection_id) VALUES (%s, %s, CONNECTION_ID())",
        (tag, os.getpid()),
    )
    # Several round trips: two children on one shared socket read each other's replies.
    echoes = []
    for n in range(rounds):
        cursor.execute("SELECT %s", (f"{tag}:{n}",))
        echoes.append(cursor.fetchone()[0])
    cursor.execute("SELECT CONNECTION_ID()")
    (connection_id,) = cursor.fetchone()
    cursor.execute(f"SELECT tag, pid, connection_id FROM {TABLE} WHERE tag = %s", (tag,))
    rows = [[row[0], int(row[1]), int(row[2])] for row in cursor.fetchall()]
    cursor.close()
    return {
        "pid": os.getpid(),
        "connection_id": int(connection_id),
        "autocommit": bool(conn.get_autocommit()),
        "echoes": echoes,
        "rows": rows,
    }
