"""Guard violations: every one is logged and handed to the ``on_violation`` hooks.

A violation is a use of a connection that guarddb refused because it crossed a
thread or a fork: the GuardError it raised (ThreadOwnershipError,
ConcurrentUseError, PendingResultError, ForkedConnectionError), or an orphan
(a connection left open by a thread that ended).  The error reaches the caller
as always; the report also reaches the hooks, so a violation that application
code catches and swallows is still seen: the pytest plugin fails the test, the
runner counts it, a production service can count and alert on near-misses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

from . import identity, metrics

_log = logging.getLogger("guarddb")
_hooks: list[Callable[[Violation], Any]] = []
_quiet = threading.local()
# guarddb's own frames (the whole package) are left out of a violation's stack.
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


@dataclass(frozen=True)
class Violation:
    """One violation, as the hooks receive it."""

    #: The error class name ("ThreadOwnershipError", ...), or "orphan".
    kind: str
    #: What guarddb says of it (the error's message).
    message: str
    #: ``file:line`` where the connection was opened.
    connection_site: str
    #: ``file:line`` of the violating call (for an orphan, where it was noticed).
    site: str
    #: The guard mode of the connection.
    mode: str
    #: The violating thread's (or greenlet's) name, and the process.
    thread: str = field(default_factory=lambda: identity.current_name())
    pid: int = field(default_factory=os.getpid)
    #: The violating call's stack, outermost frame first, guarddb's own frames left out.
    stack: tuple[str, ...] = ()
    #: The exception raised to the caller (None for an orphan).
    error: BaseException | None = field(default=None, compare=False)


def on_violation(callback: Callable[[Violation], Any]) -> Callable[[Violation], Any]:
    """Call ``callback(violation)`` for every violation in this process, in the violating thread.

    Returns ``callback``, so it can be used as a decorator.  An exception in a
    hook is logged, never raised into the violating call.
    """
    if not callable(callback):
        raise TypeError(f"on_violation() needs a callable, not {type(callback).__name__}")
    _hooks.append(callback)
    return callback


def remove_violation_hook(callback: Callable[[Violation], Any]) -> None:
    """Stop calling ``callback``; a callback that was never added is ignored."""
    with contextlib.suppress(ValueError):
        _hooks.remove(callback)


@contextlib.contextmanager
def unreported() -> Iterator[None]:
    """Refusals inside this block are guarddb's own probes, handled quietly: not violations."""
    before, _quiet.on = getattr(_quiet, "on", False), True
    try:
        yield
    finally:
        _quiet.on = before


def _stack() -> tuple[str, ...]:
    frames = [
        frame
        for frame in traceback.extract_stack(sys._getframe(2))
        if not frame.filename.startswith(_OWN_DIR)
    ]
    return tuple(traceback.format_list(frames))


def report(
    kind: str,
    message: str,
    connection_site: str,
    site: str,
    mode: str,
    error: BaseException | None = None,
) -> None:
    """Log a violation on the "guarddb" logger and hand it to every hook."""
    if getattr(_quiet, "on", False):
        return
    metrics.VIOLATIONS.add(kind)
    violation = Violation(
        kind=kind,
        message=message,
        connection_site=connection_site,
        site=site,
        mode=mode,
        stack=_stack(),
        error=error,
    )
    _log.warning("guarddb violation (%s) at %s: %s", kind, site, message)
    for hook in list(_hooks):
        try:
            hook(violation)
        except Exception:
            _log.exception("guarddb: on_violation hook %r failed", hook)
