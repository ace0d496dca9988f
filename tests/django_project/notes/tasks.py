"""Celery tasks: ORM writes and reads, and writes through a raw module-level connection.

At import (in the worker's main process, before the pool forks):

- a module-level ORM query opens the main process's Django connection (Celery's Django fixup
  closes it again at ``worker_init``: reported in ``module.json``);
- ``RAW``, a module-level ``MySQLdb.connect()`` (guarddb when the settings installed it), is
  opened: the seed, a connection no framework knows about, which the fixup does not close.
"""

from __future__ import annotations

import os
from typing import Any

import MySQLdb
from celery import shared_task
from celery_apps.state import rendezvous, write_json
from django.conf import settings
from django.db import connection, connections

from notes.models import Note


def django_connection_id() -> int:
    """CONNECTION_ID() of this thread's Django connection (opening it if needed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def raw_connection_id(conn: Any) -> int:
    cursor = conn.cursor()
    cursor.execute("SELECT CONNECTION_ID()")
    (value,) = cursor.fetchone()
    cursor.close()
    return int(value)


_STATE_DIR = settings.CONFIG["state_dir"]

# The module-level ORM query.
Note.objects.exists()
write_json(_STATE_DIR, "module.json", {"django_connection_id": django_connection_id()})

# The seed: a raw connection for the module.  autocommit, so no transaction is open at fork.
_RAW_ARGS = {
    k: v for k, v in settings.CONFIG["connect_args"].items() if k not in ("db", "database")
}
RAW = MySQLdb.connect(**_RAW_ARGS, database=settings.DATABASES["default"]["NAME"], autocommit=True)
RAW_PARENT = {"raw_connection_id": raw_connection_id(RAW)}


@shared_task(name="notes.orm_note")
def orm_note(tag: str) -> dict[str, Any]:
    """Write a Note through the ORM and read it back."""
    session = django_connection_id()
    Note.objects.create(tag=tag, pid=os.getpid(), connection_id=session)
    rows = [list(row) for row in Note.objects.filter(tag=tag).values_list("tag", "pid")]
    dbapi = connection.connection
    return {
        "pid": os.getpid(),
        "connection_id": session,
        "rows": rows,
        "connection_class": qualified_name(type(dbapi)),
        "guard_mode": getattr(dbapi, "guard_mode", None),
    }


#: The Django connections of orm_greenlet_note's greenlets, kept as reference cycles keep
#: them in real programs until a full garbage collection (without it, some of them would be
#: collected, and so closed, at a moment nobody chooses).
KEPT: list[Any] = []


@shared_task(name="notes.orm_greenlet_note")
def orm_greenlet_note(tag: str) -> dict[str, Any]:
    """orm_note's ORM write and read, saying which greenlet ran it (a gevent pool's task).

    ``ident`` is guarddb's identity of the caller (a greenlet's is never reused, unlike
    gevent's names and ``threading.get_ident()``), ``greenlet`` gevent's name for it.
    """
    import greenlet

    from guarddb.core import identity

    session = django_connection_id()
    Note.objects.create(tag=tag, pid=os.getpid(), connection_id=session)
    rows = [list(row) for row in Note.objects.filter(tag=tag).values_list("tag", "pid")]
    KEPT.append(connections["default"])
    return {
        "pid": os.getpid(),
        "connection_id": session,
        "rows": rows,
        "greenlet": getattr(greenlet.getcurrent(), "name", None),
        "ident": identity.get_ident(),
        "guard_mode": getattr(connection.connection, "guard_mode", None),
    }


@shared_task(name="notes.raw_note")
def raw_note(tag: str, rounds: int) -> dict[str, Any]:
    """Write a Note through the module-level raw connection, echo values, read it back."""
    rendezvous(_STATE_DIR, tag)
    cursor = RAW.cursor()
    cursor.execute(
        "INSERT INTO notes_note (tag, pid, connection_id) VALUES (%s, %s, CONNECTION_ID())",
        (tag, os.getpid()),
    )
    echoes = []
    for n in range(rounds):
        cursor.execute("SELECT %s", (f"{tag}:{n}",))
        echoes.append(cursor.fetchone()[0])
    cursor.execute("SELECT CONNECTION_ID()")
    (session,) = cursor.fetchone()
    cursor.execute("SELECT tag, pid FROM notes_note WHERE tag = %s", (tag,))
    rows = [[row[0], int(row[1])] for row in cursor.fetchall()]
    cursor.close()
    return {
        "pid": os.getpid(),
        "connection_id": int(session),
        "echoes": echoes,
        "rows": rows,
        "connection_class": qualified_name(type(RAW)),
    }
