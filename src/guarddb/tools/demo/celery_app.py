"""The Celery app of the demo's ``celery_prefork`` scenario: a connection opened at import.

Run by :mod:`guarddb.tools.demo.celery_prefork` as ``celery -A
guarddb.tools.demo.celery_app worker --pool=prefork --concurrency=2``; never
imported otherwise (importing it opens a connection).  The seed: the module
opens one MySQL connection when the worker's main process imports it, before
the pool forks its children, so every child inherits it.  Each task inserts a
row naming itself, makes many round trips on the connection and reads its row
back.

The environment variable ``GUARDDB_DEMO_CELERY`` (JSON) says which driver to use
(``plain`` mysqlclient or ``guarddb``), guarddb's connect keywords (``on_fork``),
the connect arguments, the table, the broker, the result backend, the task time
limit and the directory through which the worker reports (atomic JSON files):

- ``parent.json``: the main process's pid and its connection's CONNECTION_ID();
- ``ready.json``: written at ``worker_ready`` (the pool is up, the consumer consumes);
- ``shutdown.json``: at ``worker_shutdown``, in the main process, what a query on
  the module's connection answered (or raised): did its session survive the children?
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery, signals

from .celery_prefork import CELERY_ENV as ENV_CONFIG
from .celery_prefork import CELERY_TASK_NAME as TASK_NAME

CONFIG: dict[str, Any] = json.loads(os.environ[ENV_CONFIG])
STATE_DIR: str = CONFIG["state_dir"]
TABLE: str = CONFIG["table"]

if CONFIG["driver"] == "guarddb":
    import guarddb as MySQLdb

    _keywords: dict[str, Any] = dict(CONFIG["options"])
else:
    import MySQLdb  # type: ignore[no-redef]

    _keywords = {}


def write_json(name: str, data: Any) -> None:
    """Write ``data`` to the state directory atomically: a reader sees all of it or nothing."""
    path = os.path.join(STATE_DIR, name)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as out:
        json.dump(data, out, default=repr)
    os.replace(temporary, path)


app = Celery("guarddb_demo", broker=CONFIG["broker"], backend=CONFIG["backend"])
app.conf.update(
    # A child stuck on a reply that another process took is killed here (plain mysqlclient).
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


# The seed: one connection for the whole module, opened before the pool forks.  autocommit,
# so that no transaction is open at fork (on_fork="reconnect" refuses to replace one).
conn = MySQLdb.connect(**CONFIG["connect_args"], autocommit=True, **_keywords)
PARENT = {"pid": os.getpid(), "connection_id": _connection_id(conn)}
write_json("parent.json", PARENT)


@signals.worker_ready.connect  # type: ignore[untyped-decorator]  # Celery has no types
def _report_ready(**_: Any) -> None:
    write_json("ready.json", {"pid": os.getpid()})


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _check_parent_session(**_: Any) -> None:
    """In the main process, at shutdown: is the module's connection still the same session?"""
    if os.getpid() != PARENT["pid"]:
        return
    # Written first: if the query below hangs (plain mysqlclient), the demo still knows.
    write_json("shutdown.json", {"started": True})
    try:
        connection_id = _connection_id(conn)
        cursor = conn.cursor()
        cursor.execute("SELECT 41 + 1")
        answer = cursor.fetchone()[0]
        report: dict[str, Any] = {"connection_id": connection_id, "answer": int(answer)}
    except Exception as exc:
        code = exc.args[0] if exc.args and type(exc.args[0]) is int else None
        report = {"error": type(exc).__name__, "code": code, "message": str(exc)[:120]}
    write_json("shutdown.json", {"started": True, **report})


def _rendezvous(tag: str, processes: int = 2, timeout: float = 5.0) -> None:
    """Wait until tasks have started in ``processes`` pool children (or ``timeout``).

    So that the two children really use the inherited connection at the same
    time, whatever order the broker hands the tasks out in.
    """
    started = os.path.join(STATE_DIR, "started")
    os.makedirs(started, exist_ok=True)
    with open(os.path.join(started, f"{os.getpid()}-{tag}"), "w"):
        pass
    deadline = time.monotonic() + timeout
    while len({name.split("-", 1)[0] for name in os.listdir(started)}) < processes:
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)  # polling files other processes write; there is nothing to wait on


@app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
def record(tag: str, rounds: int) -> dict[str, Any]:
    """Insert a row naming this task, echo ``rounds`` values, and read the row back."""
    _rendezvous(tag)
    cursor = conn.cursor()
    cursor.execute(
        f"INSERT INTO {TABLE} (tag, pid, connection_id) VALUES (%s, %s, CONNECTION_ID())",
        (tag, os.getpid()),
    )
    # Many round trips: two children on one shared socket read each other's replies.
    echoes = []
    for n in range(rounds):
        cursor.execute("SELECT %s", (f"{tag}:{n}",))
        row = cursor.fetchone()
        echoes.append(row[0] if row else None)
    cursor.execute("SELECT CONNECTION_ID()")
    (connection_id,) = cursor.fetchone()
    cursor.execute(f"SELECT tag, pid, connection_id FROM {TABLE} WHERE tag = %s", (tag,))
    rows = [[row[0], int(row[1]), int(row[2])] for row in cursor.fetchall()]
    cursor.close()
    return {
        "pid": os.getpid(),
        "connection_id": int(connection_id),
        "echoes": echoes,
        "rows": rows,
    }
