"""The cooperative round trip: guarddb's ``cooperative=True`` under gevent against mysqlclient.

With ``cooperative=True`` a statement waits for the server by yielding to
gevent's hub (``send_query``, a wait on the socket, ``read_query_result``)
instead of blocking in ``mysql_real_query``.  It only means something once
gevent has patched the standard library, and that must not happen in the
process the other figures are measured in: the round trip runs in a child
process that runs ``gevent.monkey.patch_all()`` before anything else, as the
reference drivers run in one of their own (:mod:`~guarddb.tools.bench.references`).
Both sides run there, interleaved as everywhere in the bench: plain mysqlclient
(whose statements block the hub) and guarddb in its default mode with
``cooperative=True``, one greenlet making the round trips.  Without gevent it
is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

from .harness import Progress, compare, installed
from .workloads import WORKLOADS, Side, Sizes, Tables, mysqlclient_side

#: The workload it times: the round trip, ``execute("SELECT 1")`` + ``fetchone()``.
WORKLOAD = next(w for w in WORKLOADS if w.key == "roundtrip")
TITLE = 'cooperative round trip: execute("SELECT 1") + fetchone(), guarddb cooperative=True'
#: Seconds the child may take (it hangs only if something is badly wrong).
TIME_LIMIT = 600

# Patched before anything else is imported, as a gevent program is.
_CHILD = """
from gevent import monkey
monkey.patch_all()
import sys
from guarddb.tools.bench.cooperative import cooperative_child
sys.exit(cooperative_child(sys.argv[1]))
"""


def cooperative_plan() -> dict[str, Any]:
    """Whether the cooperative round trip can run here (gevent installed), and gevent's version."""
    available = installed("gevent")
    version = None
    if available:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            version = dist_version("gevent")
        except PackageNotFoundError:
            version = "?"
    return {
        "title": TITLE,
        "available": available,
        "gevent": version,
        "note": "" if available else "not run: gevent is not installed (pip install 'gevent>=24')",
    }


def run_cooperative(
    connect_args: dict[str, Any],
    sizes: Sizes,
    tables: Tables,
    rounds: int,
    progress: Progress,
) -> dict[str, Any]:
    """The cooperative round trip against plain mysqlclient, measured in a patched child."""
    entry = cooperative_plan()
    if not entry["available"]:
        return entry
    request = {
        "connect_args": connect_args,
        "sizes": asdict(sizes),
        "tables": asdict(tables),
        "rounds": rounds,
        "progress": {
            "total": progress.total,
            "done": progress.done,
            "elapsed": time.monotonic() - progress.started,
        },
    }
    import guarddb

    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(guarddb.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.pop("GUARDDB_COOPERATIVE", None)  # the child says which side is cooperative
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(request)],
            stdout=subprocess.PIPE,
            env=env,
            timeout=TIME_LIMIT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        entry["available"] = False
        entry["note"] = f"the cooperative run took over {TIME_LIMIT}s: stopped"
        return entry
    progress.done += rounds
    if done.returncode != 0:
        entry["available"] = False
        entry["note"] = f"the cooperative run failed (exit code {done.returncode})"
        return entry
    result = json.loads(done.stdout)
    if "error" in result:
        entry["available"] = False
        entry["note"] = f"the cooperative run failed: {result['error']}"
        return entry
    entry.update(result)
    return entry


def cooperative_child(request_json: str) -> int:
    """In the patched child: guarddb cooperative=True against plain mysqlclient; JSON on stdout."""
    import MySQLdb
    from gevent import monkey

    import guarddb

    request = json.loads(request_json)
    connect_args: dict[str, Any] = request["connect_args"]
    sizes = Sizes(**request["sizes"])
    tables = Tables(**request["tables"])
    rounds: int = request["rounds"]
    progress = Progress(request["progress"]["total"])
    progress.done = request["progress"]["done"]
    progress.started -= request["progress"]["elapsed"]
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not spoil the JSON

    def plain() -> Side:
        return mysqlclient_side(MySQLdb, "plain mysqlclient", connect_args)

    def cooperative() -> Side:
        return mysqlclient_side(guarddb, "guarddb cooperative", connect_args, cooperative=True)

    try:
        if not monkey.is_module_patched("socket"):
            raise RuntimeError("gevent did not patch the child")
        probe = cooperative()
        try:
            if not probe.conn.guard_settings["cooperative"]:
                raise RuntimeError("cooperative=True did not take")
        finally:
            probe.close()
        result: dict[str, Any] = compare(
            plain, cooperative, WORKLOAD, sizes, tables, rounds, progress, TITLE
        )
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    progress.finish()
    json.dump(result, out)
    out.flush()
    return 0
