"""The scenario ``shared_cursor`` (DESIGN.md): threads sharing one connection and one cursor."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from .framework import Recorder

THREADS = 8
THREAD_LOOPS = 200  # round trips that did not raise, per thread
THREAD_ATTEMPTS = 1000  # at most, per thread


def shared_cursor(db: Any, connect_args: dict[str, Any], rec: Recorder) -> None:
    """8 threads share one connection and one cursor; each checks it gets its own number.

    A thread goes on until it has had THREAD_LOOPS answers (or made
    THREAD_ATTEMPTS attempts), retrying shortly after an error.
    """
    conn = db.connect(**connect_args)
    cursor = conn.cursor()
    start = threading.Barrier(THREADS)

    def work(number: int) -> None:
        worker = f"thread {number}"
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(timeout=10)
        answered = 0
        for _ in range(THREAD_ATTEMPTS):
            try:
                cursor.execute("SELECT %s", (number,))
                rows = cursor.fetchall()
            except Exception as exc:
                rec.error(worker, exc)
                time.sleep(0.0002)  # what legacy code does on an error: retry soon
                continue
            rec.check(worker, rows, ((number,),))
            answered += 1
            if answered == THREAD_LOOPS:
                break
        rec.done(worker)

    threads = []
    for number in range(1, THREADS + 1):
        rec.add(f"thread {number}")
        threads.append(threading.Thread(target=work, args=(number,), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    conn.close()
