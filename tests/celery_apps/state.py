"""Files through which a worker's processes report to the test (atomic writes, JSON)."""

from __future__ import annotations

import json
import os
import time
from typing import Any


def write_json(directory: str, name: str, data: Any) -> None:
    """Write ``data`` to ``directory/name`` atomically: a reader sees all of it or nothing."""
    path = os.path.join(directory, name)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as out:
        json.dump(data, out, default=repr)
    os.replace(temporary, path)


def read_json(directory: str, name: str) -> Any:
    """The JSON in ``directory/name``, or None if it was never written."""
    try:
        with open(os.path.join(directory, name)) as src:
            return json.load(src)
    except FileNotFoundError:
        return None


def rendezvous(directory: str, tag: str, processes: int = 2, timeout: float = 10.0) -> None:
    """In a task: wait until tasks have started in ``processes`` pool children (or ``timeout``).

    So that two children really use an inherited connection at the same time, whatever order
    the broker hands the tasks out in.
    """
    started = os.path.join(directory, "started")
    os.makedirs(started, exist_ok=True)
    with open(os.path.join(started, f"{os.getpid()}-{tag}"), "w"):
        pass
    deadline = time.monotonic() + timeout
    while len({name.split("-", 1)[0] for name in os.listdir(started)}) < processes:
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)  # polling files other processes write; there is nothing to wait on
