"""Who is calling: the identity that owns connections, enters them and holds their results.

guarddb's "thread" is whatever the application's threads are: an OS thread,
or, once gevent has patched ``threading`` (``monkey.patch_all()``), the
current greenlet, for that is what ``threading.get_ident()`` and
``threading.local`` then are to the application (Django keeps a connection
per greenlet, a gevent pool runs each task in its own).

:func:`get_ident` is resolved at call time: it is rebound from the OS
thread's id to the greenlet's when gevent patches ``threading``, whether that
happens before guarddb is imported or after (gevent announces each module it
patches through ``zope.event``; a connect looks again, in case the
announcement was missed).  Hot paths therefore call ``identity.get_ident()``
through this module, never a copy of it.

A greenlet's identity is a number guarddb gives it on first use and keeps
on the greenlet object: never reused, unlike ``id(greenlet)``, so a new
greenlet cannot inherit a dead one's connection.  A thread's own (main)
greenlet keeps the OS thread's id, so what a thread owned before the patch
it still owns after it.  The C guard knows none of this: it is handed these
numbers.
"""

from __future__ import annotations

import _thread
import contextlib
import importlib.util
import sys
import threading
import weakref
from itertools import count
from typing import Any, Callable, TypeVar

_Mark = TypeVar("_Mark")

#: The OS thread's id (``_thread.get_ident`` as CPython has it, whatever gevent patched).
os_thread_ident: Callable[[], int] = _thread.get_ident
#: CPython's own thread-local storage class (gevent's ``local`` is per greenlet).
os_thread_local: type = _thread._local


def _originals() -> None:
    global os_thread_ident, os_thread_local
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:  # patched before guarddb was imported: ask gevent for them
        os_thread_ident = monkey.get_original("_thread", "get_ident")
        os_thread_local = monkey.get_original("_thread", "_local")


_originals()

#: The calling thread's (or greenlet's) identity: rebound by :func:`_use_greenlets`.
get_ident: Callable[[], int] = os_thread_ident

#: True once identities are greenlets (gevent patched ``threading``).
greenlets = False

_getcurrent: Any = None
_tokens = count(1)
#: Greenlet identities given out: a weak reference to the greenlet, and its name.
_greenlets: dict[int, tuple[weakref.ref[Any], str]] = {}
#: Called (no arguments) once, when identities become greenlets.
_on_switch: list[Callable[[], None]] = []


def _greenlet_ident() -> int:
    current = _getcurrent()
    try:
        return current._guarddb_ident  # type: ignore[no-any-return]
    except AttributeError:
        return _name_greenlet(current)


def _name_greenlet(current: Any) -> int:
    if current.parent is None:
        ident = os_thread_ident()  # a thread's own greenlet: the thread's identity
    else:
        ident = next(_tokens)
        name = getattr(current, "name", None) or threading.current_thread().name
        _greenlets[ident] = (weakref.ref(current, lambda _ref: _forget(ident)), str(name))
    current._guarddb_ident = ident
    return ident


def _forget(ident: int) -> None:
    entry = _greenlets.get(ident)
    if entry is not None and entry[0]() is None:
        del _greenlets[ident]


def _use_greenlets() -> None:
    global get_ident, greenlets, _getcurrent
    if greenlets:
        return
    from greenlet import getcurrent

    _getcurrent = getcurrent
    get_ident = _greenlet_ident
    greenlets = True
    for callback in list(_on_switch):
        callback()


def cooperative() -> None:
    """A ``cooperative=True`` connection opens: greenlets are identities from now on.

    Its statements yield to gevent's hub while inside the guard, so another
    greenlet may run mid-statement even where gevent patched nothing: the
    guard must tell greenlets apart.  ImportError if gevent is not installed.
    """
    if importlib.util.find_spec("gevent") is None:
        raise ImportError(
            "guarddb: cooperative=True waits for the server by yielding to gevent's hub, "
            "and gevent is not installed: pip install gevent (or leave cooperative off)"
        )
    _use_greenlets()


def on_switch(callback: Callable[[], None]) -> None:
    """Call ``callback()`` when identities become greenlets (at once if they are)."""
    _on_switch.append(callback)
    if greenlets:
        callback()


def _gevent_patched_threading() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("threading"))


def refresh() -> None:
    """Look whether gevent has patched ``threading`` since (cheap; connect calls it)."""
    if not greenlets and _gevent_patched_threading():
        _use_greenlets()


def _on_gevent_event(event: object) -> None:
    if getattr(event, "module_name", None) in ("threading", "thread") and (
        type(event).__name__ == "GeventDidPatchModuleEvent"
    ):
        _use_greenlets()


def _listen_for_gevent() -> None:
    # gevent announces every module it patches to zope.event's subscribers; it
    # depends on zope.event, so where gevent is installed, so is zope.event.
    try:
        if importlib.util.find_spec("gevent") is None:
            return
        import zope.event
    except ImportError:  # not installed, or an import hook keeps it out: nothing will patch
        return
    if _on_gevent_event not in zope.event.subscribers:
        zope.event.subscribers.append(_on_gevent_event)


refresh()
if not greenlets:
    _listen_for_gevent()


# -- what an identity is --------------------------------------------------------------------


def runs_a_hub() -> bool:
    """Whether the calling OS thread runs a gevent hub (so its greenlets wait by yielding)."""
    try:
        from gevent._hub_local import get_hub_if_exists
    except ImportError:  # an older or newer gevent: take any patched thread for one
        return True
    return get_hub_if_exists() is not None


def is_greenlet(ident: int) -> bool:
    """Whether ``ident`` names a greenlet (not a thread's own greenlet or an OS thread)."""
    return ident in _greenlets


def alive(ident: int) -> bool:
    """Whether the thread or greenlet ``ident`` still runs."""
    entry = _greenlets.get(ident)
    if entry is not None:
        current = entry[0]()
        return current is not None and not current.dead
    if ident in threading._active:  # type: ignore[attr-defined]
        return True
    return _thread_named(ident) is not None


def _thread_named(ident: int) -> threading.Thread | None:
    for thread in threading.enumerate():
        if thread.ident == ident or getattr(thread, "_guarddb_os_ident", None) == ident:
            return thread
    if ident == _main_os_ident:
        return threading.main_thread()
    return None


def describe(ident: int) -> str:
    """``thread 'Name' (id N)`` or ``greenlet 'Name' (id N)``, or say that it no longer runs."""
    entry = _greenlets.get(ident)
    if entry is not None:
        current = entry[0]()
        if current is None or current.dead:
            return f"greenlet {entry[1]!r} (id {ident}, no longer running)"
        return f"greenlet {entry[1]!r} (id {ident})"
    thread = threading._active.get(ident) or _thread_named(ident)  # type: ignore[attr-defined]
    if thread is None:
        return f"thread id {ident} (no longer running)"
    return f"thread {thread.name!r} (id {ident})"


def kind(ident: int) -> str:
    """``"greenlet"`` or ``"thread"``: what ``ident`` is (ask while it runs)."""
    return "greenlet" if ident in _greenlets else "thread"


def describe_caller() -> str:
    """:func:`describe` of the calling thread or greenlet."""
    return describe(get_ident())


def current_name() -> str:
    """The calling thread's or greenlet's name (as :func:`describe` gives it)."""
    ident = get_ident()
    entry = _greenlets.get(ident)
    if entry is not None:
        return entry[1]
    return threading.current_thread().name


def mark(factory: Callable[[], _Mark]) -> _Mark:
    """The calling thread's or greenlet's mark: made by ``factory()`` on first use.

    It is kept where it goes when its owner ends: in the OS thread's local
    storage, or on the greenlet (a gevent Greenlet drops it as it finishes;
    any greenlet's goes with the greenlet object).  A weak reference to it
    therefore dies with its owner; a finalizer on it notes the end.
    """
    entry = _greenlets.get(get_ident())
    if entry is None:
        made: _Mark | None = getattr(_marks, "mark", None)
        if made is None:
            made = _marks.mark = factory()
        return made
    current: Any = entry[0]()  # the calling greenlet: alive
    made = getattr(current, "_guarddb_mark", None)
    if made is None:
        made = factory()
        current._guarddb_mark = made
        rawlink = getattr(current, "rawlink", None)
        if rawlink is not None:
            rawlink(_drop_mark)
    return made


def _drop_mark(greenlet: Any) -> None:
    # Runs in the hub as the greenlet finishes: its mark's finalizer notes the end.
    with contextlib.suppress(AttributeError):
        del greenlet._guarddb_mark


#: CPython's own thread-local storage (never gevent's): the marks of OS threads.
_marks = os_thread_local()

#: The main thread's OS id (gevent gives the main thread its main greenlet's id).
_main_os_ident = os_thread_ident() if threading.current_thread() is threading.main_thread() else 0


def main_thread_ident() -> int | None:
    """The main thread's identity (its OS id, as its own greenlet keeps it under gevent)."""
    return _main_os_ident or threading.main_thread().ident
