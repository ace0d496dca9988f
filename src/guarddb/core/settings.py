"""Modes and process defaults: what each guarddb connect keyword may be, and its default.

``set_defaults(**keywords)`` and the ``GUARDDB_*`` environment variables (read
once, at import) set the defaults; an explicit keyword to ``connect()`` always
wins.  Driver-neutral: every driver's connections take the same keywords.
"""

from __future__ import annotations

import os
from typing import Any

#: The modes a connection can be guarded with; see the README.
MODES = ("exclusive", "strict", "mutex", "off")

#: What a mutex-mode thread holds the connection for: one call, or a transaction.
MUTEX_SCOPES = ("call", "transaction")

#: What a forked child's first use of an inherited connection does.
ON_FORK = ("raise", "reconnect")

#: What the next use of a connection guarddb closed for being idle does.
ON_IDLE = ("raise", "reconnect")

#: Environment variables read once, at import, for the process defaults.
ENV_MODE = "GUARDDB_MODE"
ENV_MUTEX_TIMEOUT = "GUARDDB_MUTEX_TIMEOUT"
ENV_MUTEX_SCOPE = "GUARDDB_MUTEX_SCOPE"
ENV_ON_FORK = "GUARDDB_ON_FORK"
ENV_MAX_IDLE = "GUARDDB_MAX_IDLE"
ENV_ON_IDLE = "GUARDDB_ON_IDLE"
ENV_CLOSE_ORPHANS = "GUARDDB_CLOSE_ORPHANS"
ENV_COOPERATIVE = "GUARDDB_COOPERATIVE"

_defaults: dict[str, Any] = {
    "guard": "exclusive",
    "mutex_timeout": None,
    "mutex_scope": "call",
    "on_fork": "raise",
    "max_idle": None,
    "on_idle": "raise",
    "close_orphans": False,
    "cooperative": False,
}


def check_mode(mode: object, source: str = "guard") -> str:
    """Return ``mode`` if it names a guard mode, else raise ValueError listing the valid ones."""
    if mode in MODES:
        return mode
    valid = ", ".join(repr(m) for m in MODES)
    raise ValueError(f"{source}={mode!r} is not a guarddb mode; use one of {valid}")


def _check_timeout(timeout: object, source: str = "mutex_timeout") -> float | None:
    if timeout is None:
        return None
    try:
        seconds = float(timeout)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{source}={timeout!r}: give a number of seconds > 0, or None to wait")
    return seconds


def _check_scope(scope: object, source: str = "mutex_scope") -> str:
    if scope in MUTEX_SCOPES:
        return scope
    valid = ", ".join(repr(m) for m in MUTEX_SCOPES)
    raise ValueError(f"{source}={scope!r}: use one of {valid}")


def _check_choice(choices: tuple[str, ...], name: str) -> Any:
    def check(value: object, source: str = name) -> str:
        if value in choices:
            return value
        valid = ", ".join(repr(m) for m in choices)
        raise ValueError(f"{source}={value!r}: use one of {valid}")

    return check


def _check_max_idle(seconds: object, source: str = "max_idle") -> float | None:
    if seconds is None:
        return None
    return _check_timeout(seconds, source)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _check_flag(name: str) -> Any:
    def check(flag: object, source: str = name) -> bool:
        if isinstance(flag, bool):
            return flag
        if isinstance(flag, str) and flag.strip().lower() in _TRUE + _FALSE:
            return flag.strip().lower() in _TRUE
        raise ValueError(f"{source}={flag!r}: give True or False (or 1/0 in the environment)")

    return check


_CHECKS = {
    "guard": check_mode,
    "mutex_timeout": _check_timeout,
    "mutex_scope": _check_scope,
    "on_fork": _check_choice(ON_FORK, "on_fork"),
    "max_idle": _check_max_idle,
    "on_idle": _check_choice(ON_IDLE, "on_idle"),
    "close_orphans": _check_flag("close_orphans"),
    "cooperative": _check_flag("cooperative"),
}


def set_defaults(**guard_keywords: Any) -> None:
    """Set process-wide defaults for guarddb's connect keywords.

    ``guard`` (the mode), ``on_fork``, ``mutex_timeout``, ``mutex_scope``,
    ``max_idle``, ``on_idle``, ``close_orphans`` and ``cooperative``.  An explicit keyword
    given to ``connect()`` always wins over these.
    """
    unknown = sorted(set(guard_keywords) - set(_defaults))
    if unknown:
        raise TypeError(
            f"set_defaults() got unknown keyword(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_defaults))}"
        )
    _defaults.update({key: _CHECKS[key](value) for key, value in guard_keywords.items()})


def set_default_mode(mode: str) -> None:
    """Set the guard mode of connections opened from now on without ``guard=``."""
    set_defaults(guard=mode)


def default_mode() -> str:
    """The mode a connection gets without ``guard=``."""
    return _defaults["guard"]  # type: ignore[no-any-return]


def settings(**explicit: Any) -> dict[str, Any]:
    """A connection's guard settings: the explicit keywords (not None) over the defaults."""
    chosen = dict(_defaults)
    chosen.update(
        {key: _CHECKS[key](value) for key, value in explicit.items() if value is not None}
    )
    return chosen


def _read_environment() -> None:
    for key, variable in (
        ("guard", ENV_MODE),
        ("mutex_timeout", ENV_MUTEX_TIMEOUT),
        ("mutex_scope", ENV_MUTEX_SCOPE),
        ("on_fork", ENV_ON_FORK),
        ("max_idle", ENV_MAX_IDLE),
        ("on_idle", ENV_ON_IDLE),
        ("close_orphans", ENV_CLOSE_ORPHANS),
        ("cooperative", ENV_COOPERATIVE),
    ):
        value = os.environ.get(variable, "").strip()
        if value:
            _defaults[key] = _CHECKS[key](value, variable)


_read_environment()
