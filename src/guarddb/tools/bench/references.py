"""The reference drivers, PyMySQL and mysql-connector-python, against plain mysqlclient.

The same workloads run with them (mysql-connector-python's C extension when it
loads), as ratios to plain mysqlclient.  They run in a child process:
mysql-connector-python's C extension needs the OpenSSL it ships, which must be
loaded before libmariadb (linked to the system's) is, and that would change the
process the guarddb figures are measured in.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any, Callable

from .harness import Progress, compare, installed
from .workloads import (
    WORKLOADS,
    Side,
    Sizes,
    Tables,
    connector_side,
    mysqlclient_side,
    pymysql_side,
)

REFERENCES = ("pymysql", "mysql-connector")
#: Seconds the reference child may take (it hangs only if something is badly wrong).
REFERENCE_TIME_LIMIT = 1800

_REFERENCE_NAMES = {
    "pymysql": ("PyMySQL", "pymysql", "PyMySQL"),
    "mysql-connector": ("mysql-connector-python", "mysql.connector", "mysql-connector-python"),
}

# The child loads mysql-connector-python's C extension before anything else:
# it needs the OpenSSL the wheel ships, and fails with the system's
# ("version `OPENSSL_3.2.0' not found") once libmariadb has loaded that one.
_CHILD = """
import sys
cext_error = ""
if sys.argv[2] == "1":
    try:
        import _mysql_connector  # noqa: F401
    except Exception as exc:
        cext_error = f"{type(exc).__name__}: {exc}"
from guarddb.tools.bench.references import reference_child
sys.exit(reference_child(sys.argv[1], cext_error))
"""


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def reference_plan() -> dict[str, dict[str, Any]]:
    """Which reference drivers are installed, and their versions."""
    plan: dict[str, dict[str, Any]] = {}
    for key in REFERENCES:
        label, module, dist = _REFERENCE_NAMES[key]
        available = installed(module)
        plan[key] = {
            "label": label,
            "available": available,
            "version": _dist_version(dist) if available else None,
            "implementation": None,
            "note": "" if available else f"not installed: pip install 'guarddb[bench]' ({dist})",
            "workloads": {},
        }
    return plan


def run_references(
    connect_args: dict[str, Any],
    sizes: Sizes,
    tables: Tables,
    rounds: int,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    """The reference drivers against plain mysqlclient, measured in a child process."""
    plan = reference_plan()
    if not any(entry["available"] for entry in plan.values()):
        return plan
    request = {
        "connect_args": connect_args,
        "sizes": asdict(sizes),
        "tables": asdict(tables),
        "rounds": rounds,
        "plan": plan,
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
    preload = "1" if plan["mysql-connector"]["available"] else "0"
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(request), preload],
            stdout=subprocess.PIPE,
            env=env,
            timeout=REFERENCE_TIME_LIMIT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        for entry in plan.values():
            if entry["available"]:
                entry["note"] = f"the reference run took over {REFERENCE_TIME_LIMIT}s: stopped"
        return plan
    progress.done += sum(len(WORKLOADS) * rounds for entry in plan.values() if entry["available"])
    if done.returncode != 0:
        for entry in plan.values():
            if entry["available"]:
                entry["note"] = f"the reference run failed (exit code {done.returncode})"
        return plan
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def reference_child(request_json: str, cext_error: str) -> int:
    """In the child: each available reference driver against plain mysqlclient; JSON on stdout."""
    import MySQLdb

    request = json.loads(request_json)
    connect_args: dict[str, Any] = request["connect_args"]
    sizes = Sizes(**request["sizes"])
    tables = Tables(**request["tables"])
    rounds: int = request["rounds"]
    plan: dict[str, dict[str, Any]] = request["plan"]
    progress = Progress(request["progress"]["total"])
    progress.done = request["progress"]["done"]
    progress.started -= request["progress"]["elapsed"]
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints (driver warnings) must not spoil the JSON

    def plain() -> Side:
        return mysqlclient_side(MySQLdb, "plain mysqlclient", connect_args)

    for key, entry in plan.items():
        if not entry["available"]:
            continue
        driver: Callable[[], Side]
        if key == "pymysql":
            driver = functools.partial(pymysql_side, connect_args)
        else:
            import mysql.connector

            use_pure = not getattr(mysql.connector, "HAVE_CEXT", False)
            driver = functools.partial(connector_side, connect_args, use_pure)
        try:
            probe = driver()
        except Exception as exc:
            entry["available"] = False
            entry["note"] = f"could not connect: {type(exc).__name__}: {exc}"
            progress.done += len(WORKLOADS) * rounds
            continue
        if type(probe.conn).__name__.startswith("CMySQL"):
            entry["implementation"] = "C extension"
        else:
            entry["implementation"] = "pure Python"
            if key == "mysql-connector":
                why = f" ({cext_error})" if cext_error else ""
                entry["note"] = f"its C extension did not load{why}"
        probe.close()
        for workload in WORKLOADS:
            section = f"reference {entry['label']}: {workload.title}"
            try:
                entry["workloads"][workload.key] = compare(
                    plain, driver, workload, sizes, tables, rounds, progress, section
                )
            except Exception as exc:
                entry["workloads"][workload.key] = {"error": f"{type(exc).__name__}: {exc}"}
    progress.finish()
    json.dump(plan, out)
    out.flush()
    return 0
