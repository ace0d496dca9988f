"""Django scenarios run by tests/test_django.py, each in a fresh interpreter.

``python scenarios.py NAME`` sets Django up (settings from ``GUARDDB_DJANGO``), runs the
scenario and prints its report as JSON on the last line of stdout.  Exceptions are reported
as the class's module-qualified name, its args, and the same for its ``__cause__``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guarddb_site.settings")
django.setup()

from django.db import connection, connections  # noqa: E402
from notes.models import Note  # noqa: E402

SCENARIOS: dict[str, Callable[[], Any]] = {}


def scenario(fn: Callable[[], Any]) -> Callable[[], Any]:
    SCENARIOS[fn.__name__] = fn
    return fn


def session_id() -> int:
    """CONNECTION_ID() of this thread's Django connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def describe(exc: BaseException | None) -> dict[str, Any] | None:
    """An exception as data: class (module.name), args, and its __cause__ the same way."""
    if exc is None:
        return None
    cls = type(exc)
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "mro": [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__],
        "args": [a if isinstance(a, (int, str)) else repr(a) for a in exc.args],
        "cause": describe(exc.__cause__),
        # Where it was raised: the innermost frames, file:line function.
        "where": [
            f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
            for f in traceback.extract_tb(exc.__traceback__)[-6:]
        ],
    }


def attempt(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn``: ``{"value": ...}`` or ``{"error": describe(exc)}``."""
    try:
        return {"value": fn()}
    except Exception as exc:
        return {"error": describe(exc)}


def in_thread(fn: Callable[[], Any]) -> dict[str, Any]:
    """``attempt(fn)`` in a new thread (joined with a time limit)."""
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(attempt(fn)), name="OtherThread")
    thread.start()
    thread.join(30)
    if thread.is_alive():
        raise AssertionError("thread hung")
    return box


def in_forked_child(fn: Callable[[], Any]) -> dict[str, Any]:
    """``attempt(fn)`` in an os.fork() child; its report comes back through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            data = json.dumps(attempt(fn), default=repr).encode()
            os.write(write_end, data)
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b'{"error": "child died"}')


@scenario
def options() -> dict[str, Any]:
    """What the backend's DB-API connection is, and which guarddb settings it got."""
    session_id()
    dbapi = connection.connection
    guard = getattr(dbapi, "_guard", None)
    return {
        "class": qualified_name(type(dbapi)),
        "guard_mode": getattr(dbapi, "guard_mode", None),
        "on_fork": getattr(guard, "on_fork", None),
        "database": connection.settings_dict["NAME"],
    }


@scenario
def thread_pool() -> dict[str, Any]:
    """ORM writes and reads from a ThreadPoolExecutor: each thread its own Django connection."""
    main_session = session_id()

    def work(n: int) -> dict[str, Any]:
        try:
            tag = f"pool-{os.getpid()}-{n}"
            session = session_id()
            Note.objects.create(tag=tag, pid=os.getpid(), connection_id=session)
            rows = list(Note.objects.filter(tag=tag).values_list("tag", "connection_id"))
            return {
                "tag": tag,
                "session": session,
                "rows": [list(r) for r in rows],
                "guard_mode": getattr(connection.connection, "guard_mode", None),
                "connection_class": qualified_name(type(connection.connection)),
                "thread": threading.get_ident(),
            }
        finally:
            # Django opens one connection per thread and never closes a pool thread's own.
            connections.close_all()

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [attempt(future.result) for future in [pool.submit(work, n) for n in range(16)]]
    return {
        "main_session": main_session,
        "main_session_after": session_id(),
        "main_thread": threading.get_ident(),
        "results": results,
    }


@scenario
def thread_sharing() -> dict[str, Any]:
    """Django's rule (a DatabaseWrapper belongs to its thread), then sharing allowed."""
    main_session = session_id()
    wrapper = connections["default"]  # this thread's DatabaseWrapper, handed to another thread

    def use_wrapper() -> int:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            return int(cursor.fetchone()[0])

    def orm_through_wrapper() -> int:
        # The ORM in another thread uses that thread's own connection; to push the shared
        # wrapper through the ORM, make it the other thread's "default" for the call.
        connections["default"] = wrapper
        try:
            return Note.objects.count()
        finally:
            del connections["default"]

    not_shared = in_thread(use_wrapper)
    wrapper.inc_thread_sharing()
    try:
        shared = in_thread(use_wrapper)
        shared_orm = in_thread(orm_through_wrapper)
    finally:
        wrapper.dec_thread_sharing()
    return {
        "guard_mode": getattr(wrapper.connection, "guard_mode", None),
        "main_session": main_session,
        "not_shared": not_shared,
        "shared": shared,
        "shared_orm": shared_orm,
        "main_after": attempt(session_id),
    }


@scenario
def bad_sql() -> dict[str, Any]:
    """A statement the server rejects: the same Django class as with plain mysqlclient."""

    def run() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELEC 1")

    return attempt(run)


@scenario
def fork() -> dict[str, Any]:
    """A forked child's ORM query on the Django connection it inherited, then Django's recovery."""
    main_session = session_id()

    def child_orm() -> dict[str, Any]:
        first = attempt(session_id)
        # Django's own recovery (what it does at the end of a request, and Celery's fixup
        # before a task): an unusable connection is closed; the next query opens a new one.
        connection.close_if_unusable_or_obsolete()
        second = attempt(session_id)
        count = attempt(lambda: Note.objects.count())
        return {"first": first, "second": second, "count": count}

    return {
        "main_session": main_session,
        "child": in_forked_child(child_orm),
        "main_after": attempt(session_id),
    }


@scenario
def thread_pool_leak() -> dict[str, Any]:
    """The lifecycle seed: rounds of pool threads run ORM code and end without closing.

    Counts this database's sessions on the server: at the start, right after
    the pools are done, and once back at the start (or after 3 s).
    """
    import time

    from guarddb_site.settings import DRIVER

    database = connection.settings_dict["NAME"]
    orphans: list[dict[str, Any]] = []
    if DRIVER == "guarddb":
        import guarddb

        guarddb.on_violation(
            lambda v: (
                orphans.append({"site": v.connection_site, "message": v.message})
                if v.kind == "orphan"
                else None
            )
        )

    def sessions() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", [database]
            )
            return int(cursor.fetchone()[0])

    baseline = sessions()
    kept = []  # what keeps a leaked connection alive in real programs (cycles, caches)

    def work(n: int, together: threading.Barrier) -> int:
        together.wait(30)  # four threads in every round, not one reused
        Note.objects.filter(tag=f"leak-{n}").count()  # opens this thread's connection
        kept.append(connections["default"])
        return n

    for _round in range(5):
        together = threading.Barrier(4)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(work, range(4), [together] * 4))
    after_pools = sessions()
    deadline = time.monotonic() + 3
    settled = after_pools
    while time.monotonic() < deadline:
        settled = sessions()
        if settled == baseline:
            break
        time.sleep(0.05)  # polling the server: nothing signals a session's end
    return {
        "connection_class": qualified_name(type(connection.connection)),
        "baseline": baseline,
        "after_pools": after_pools,
        "settled": settled,
        "orphans": orphans,
    }


if __name__ == "__main__":
    report = SCENARIOS[sys.argv[1]]()
    sys.stdout.write("\n" + json.dumps(report, default=repr) + "\n")
