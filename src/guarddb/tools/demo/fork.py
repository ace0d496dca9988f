"""The scenarios ``fork_shared`` and ``fork_child_close`` (DESIGN.md): a connection across fork."""

from __future__ import annotations

import gc
import json
import multiprocessing
import multiprocessing.connection
import os
import threading
from typing import Any, Callable

from .framework import Recorder, exit_status, signal_name

FORK_CHILDREN = 8
FORK_LOOPS = 20


def fork_shared(db: Any, connect_args: dict[str, Any], rec: Recorder) -> None:
    """A connection opened before fork, used by 8 fork-context children and by the parent."""
    context = multiprocessing.get_context("fork")
    conn = db.connect(**connect_args)
    go = context.Event()

    def query_loop(number: int, report: Callable[[tuple[Any, ...]], None]) -> None:
        worker = f"child {number}" if number else "parent"
        go.wait(10)
        for _ in range(FORK_LOOPS):
            try:
                cursor = conn.cursor()
                cursor.execute("SELECT %s", (number,))
                rows = cursor.fetchall()
            except Exception as exc:
                report(rec.error_event(exc))
                continue
            report(rec.check_event(worker, rows, ((number,),)))
        report(("done",))

    def child(number: int, pipe: Any) -> None:
        query_loop(number, pipe.send)
        pipe.close()

    readers: dict[Any, str] = {}
    processes: dict[str, Any] = {}
    for number in range(1, FORK_CHILDREN + 1):
        worker = f"child {number}"
        rec.add(worker)
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(target=child, args=(number, writer), daemon=True)
        process.start()
        writer.close()
        rec.children.append(process.pid)  # type: ignore[arg-type]  # started: it has one
        readers[reader] = worker
        processes[worker] = process
    rec.add("parent")
    parent = threading.Thread(
        target=query_loop, args=(0, lambda event: rec.apply("parent", event)), daemon=True
    )
    parent.start()
    go.set()
    while readers:
        for reader in multiprocessing.connection.wait(list(readers)):  # type: ignore[assignment]
            try:
                event = reader.recv()
            except (EOFError, OSError):
                del readers[reader]
                continue
            rec.apply(readers[reader], event)
    for worker, process in processes.items():
        process.join(10)
        if process.exitcode is not None:
            rec.reaped(process.pid)
        if process.exitcode is not None and process.exitcode < 0:
            rec.status(worker, "signal:" + signal_name(-process.exitcode))
        elif process.exitcode:
            rec.status(worker, f"exit:{process.exitcode}")
    parent.join()
    conn.close()


def fork_child_close(db: Any, connect_args: dict[str, Any], rec: Recorder) -> None:
    """A forked child closes the inherited connection; another drops it and exits.

    Each case gets a fresh connection; after the child is gone the parent
    checks that its session is the same one and still answers.
    """
    for action in ("close", "del"):
        child_worker = f"child ({action})"
        parent_worker = f"parent after child ({action})"
        rec.add(parent_worker)
        rec.add(child_worker)
        conn = db.connect(**connect_args)
        cursor = conn.cursor()
        cursor.execute("SELECT CONNECTION_ID()")
        before = cursor.fetchall()
        cursor.close()
        del cursor
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no return from here
            code = 0
            os.close(reader)
            try:
                if action == "close":
                    conn.close()
                else:
                    del conn
                    gc.collect()
            except BaseException as exc:
                os.write(writer, json.dumps(rec.error_event(exc)).encode())
                code = 3
            os._exit(code)
        os.close(writer)
        rec.children.append(pid)
        with os.fdopen(reader, "rb") as pipe:
            said = pipe.read()
        _, status = os.waitpid(pid, 0)
        rec.reaped(pid)
        if said:
            rec.apply(child_worker, json.loads(said))
        rec.status(child_worker, exit_status(status))
        for sql, want in (("SELECT CONNECTION_ID()", before), ("SELECT %s", ((7,),))):
            try:
                cursor = conn.cursor()
                cursor.execute(sql, (7,) if "%s" in sql else None)
                rec.check(parent_worker, cursor.fetchall(), want)
            except Exception as exc:
                rec.error(parent_worker, exc)
        rec.done(parent_worker)
        try:
            conn.close()
        except Exception as exc:
            rec.error(parent_worker, exc)
