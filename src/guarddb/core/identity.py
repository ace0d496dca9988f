"""Who is calling: the identity that owns connections, enters them and holds their results.

guarddb's "thread" is whatever the application's threads are.  The C guard
knows nothing of it: it is handed :func:`get_ident` values from here.
"""

from __future__ import annotations

import threading

#: The calling thread's identity (``threading.get_ident()``).
get_ident = threading.get_ident


def describe(ident: int) -> str:
    """``thread 'Name' (id N)``, or say that the thread no longer runs."""
    thread = threading._active.get(ident)  # type: ignore[attr-defined]
    if thread is None:
        for candidate in threading.enumerate():
            if candidate.ident == ident:
                thread = candidate
                break
    if thread is None:
        return f"thread id {ident} (no longer running)"
    return f"thread {thread.name!r} (id {ident})"
