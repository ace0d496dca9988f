"""Where a call comes from, for messages: the caller's ``file:line`` and the method it called.

Frames inside guarddb, and inside the drivers' own packages (each driver's
layer registers its directory with :func:`add_library_dir`), are skipped: the
"site" of a connect or an execute is the first frame of the application.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Frames in these directories are guarddb's or a driver's own.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_LIBRARY_DIRS: tuple[str, ...] = (_PACKAGE_DIR,)
# guarddb's driver-neutral policy: the frames between a public method and the guard.
_CORE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def add_library_dir(path: str) -> None:
    """Skip frames under ``path`` (a driver's package directory) when finding a call's site."""
    global _LIBRARY_DIRS
    directory = os.path.abspath(path) + os.sep
    if directory not in _LIBRARY_DIRS:
        _LIBRARY_DIRS = (*_LIBRARY_DIRS, directory)


def caller_site() -> str:
    """``file:line`` of the nearest caller outside guarddb and the drivers (cheap: no traceback)."""
    frame: Any = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def operation() -> str:
    """Name of the public method that asked to enter (for messages only)."""
    frame: Any = sys._getframe(1)
    while frame is not None and (
        frame.f_code.co_filename.startswith(_CORE_DIR) or frame.f_code.co_name.startswith("_")
    ):
        frame = frame.f_back
    return f"{frame.f_code.co_name}()" if frame is not None else "a call"
