"""guarddb.contrib.prometheus: the collector's metrics, scraped as Prometheus would.

The main scenario runs in a fresh interpreter (tests/prometheus_scenario.py), so that what
it scrapes is its own connections and counts only, and the values can be exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from guarddb.contrib.prometheus import GuarddbCollector, register
from guarddb.core import lifecycle

from .helpers import child_pythonpath, hiding_driver, run_python

TESTS = Path(__file__).resolve().parent

STATES = ("inherited", "orphan", "in_call", "in_transaction", "idle")
KINDS = (
    "ConcurrentUseError",
    "ForkedConnectionError",
    "PendingResultError",
    "ThreadOwnershipError",
    "orphan",
)
FAMILIES = {
    "guarddb_connections": "gauge",
    "guarddb_violations": "counter",
    "guarddb_connections_closed": "counter",
    "guarddb_mutex_waits": "counter",
    "guarddb_mutex_wait_seconds": "counter",
}


def samples(text: str) -> dict[tuple[str, str], float]:
    """A scrape's samples: (name, its one label's value or "") -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert len(sample.labels) <= 1, sample
            found[sample.name, next(iter(sample.labels.values()), "")] = sample.value
    return found


def expected(
    states: dict[str, int] | None = None,
    violations: dict[str, int] | None = None,
    closed: dict[str, int] | None = None,
    waits: int = 0,
) -> dict[tuple[str, str], float]:
    """Every sample the collector exports (without the wait seconds), these not 0."""
    out: dict[tuple[str, str], float] = {}
    for state in STATES:
        out["guarddb_connections", state] = (states or {}).get(state, 0)
    for kind in KINDS:
        out["guarddb_violations_total", kind] = (violations or {}).get(kind, 0)
    for reason in ("max_idle", "orphan"):
        out["guarddb_connections_closed_total", reason] = (closed or {}).get(reason, 0)
    out["guarddb_mutex_waits_total", ""] = waits
    return out


def without_seconds(found: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {
        key: value for key, value in found.items() if key[0] != "guarddb_mutex_wait_seconds_total"
    }


def run_scenario(connect_args: dict[str, Any]) -> dict[str, Any]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GUARDDB_")},
        "PYTHONPATH": child_pythonpath(),
        "GUARDDB_TEST_CONNECT_ARGS": json.dumps(connect_args),
    }
    done = subprocess.run(
        [sys.executable, str(TESTS / "prometheus_scenario.py")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Exception ignored" not in done.stderr, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_every_state_violation_close_and_wait_is_exported(connect_args):
    seen = run_scenario(connect_args)
    assert seen["strict"] == "ThreadOwnershipError"
    assert seen["concurrent"] == "ConcurrentUseError"

    before = samples(seen["before"])
    assert before == {**expected(), ("guarddb_mutex_wait_seconds_total", ""): 0.0}

    # Both drivers' connections: 2 idle, 2 in a transaction, 1 strict (idle), 2 mutex
    # (idle again), 2 with a thread inside a call, 1 orphan; one orphan and one idle
    # connection closed by guarddb.
    during = samples(seen["during"])
    violations = {"ThreadOwnershipError": 1, "ConcurrentUseError": 1, "orphan": 2}
    closed = {"max_idle": 1, "orphan": 1}
    assert without_seconds(during) == expected(
        {"idle": 5, "in_transaction": 2, "in_call": 2, "orphan": 1}, violations, closed, waits=2
    )
    wait_seconds = during["guarddb_mutex_wait_seconds_total", ""]
    assert 0 < wait_seconds < seen["elapsed"]

    # In a forked child every connection is the parent's; the counts go on from the
    # parent's, and the child's use of one is a violation there.
    assert seen["child"]["refused"] == "ForkedConnectionError"
    child = samples(seen["child"]["scrape"])
    assert without_seconds(child) == expected(
        {"inherited": 10}, {**violations, "ForkedConnectionError": 1}, closed, waits=2
    )
    assert child["guarddb_mutex_wait_seconds_total", ""] == wait_seconds

    # Every connection closed: the gauges back to 0, the counters kept.
    after = samples(seen["after"])
    assert without_seconds(after) == expected({}, violations, closed, waits=2)
    assert after["guarddb_mutex_wait_seconds_total", ""] == wait_seconds


def test_the_families_their_types_and_help(connect):
    registry = CollectorRegistry()
    register(registry)
    conn = connect()
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert {name: f.type for name, f in families.items()} == FAMILIES
    assert all(f.documentation for f in families.values())
    # This process's connections, as lifecycle.connection_states() counts them.
    states = {s.labels["state"]: s.value for s in families["guarddb_connections"].samples}
    assert states == lifecycle.connection_states() and states["idle"] >= 1
    conn.close()


def test_register_describes_without_reading_and_once_per_registry(monkeypatch):
    def no_reading() -> dict[str, int]:
        raise AssertionError("registering read the connections")

    monkeypatch.setattr(lifecycle, "connection_states", no_reading)
    registry = CollectorRegistry(auto_describe=True)
    collector = register(registry)
    assert isinstance(collector, GuarddbCollector)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register(registry)
    registry.unregister(collector)
    register(registry)  # again, once it was taken out


def test_register_defaults_to_prometheus_clients_registry():
    collector = register()
    try:
        assert prometheus_client.REGISTRY.get_sample_value("guarddb_mutex_waits_total") >= 0
    finally:
        prometheus_client.REGISTRY.unregister(collector)


def test_import_guarddb_never_imports_prometheus_client():
    done = run_python(
        "import sys, guarddb, guarddb.pymysql, guarddb.mutex, guarddb.contrib\n"
        "print('prometheus_client' in sys.modules)",
        PYTHONPATH=child_pythonpath(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_scrape_without_mysqlclient(tmp_path):
    """The collector is driver-neutral: it works where only PyMySQL is installed."""
    done = run_python(
        "import sys, prometheus_client, guarddb.contrib.prometheus as p\n"
        "registry = prometheus_client.CollectorRegistry()\n"
        "p.register(registry)\n"
        "text = prometheus_client.generate_latest(registry).decode()\n"
        "print('MySQLdb' in sys.modules, 'guarddb_connections{state=\"idle\"} 0.0' in text)",
        PYTHONPATH=child_pythonpath(hiding_driver(tmp_path, "MySQLdb")),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
