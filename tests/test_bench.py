"""``python -m guarddb bench --quick`` runs and reports everything; no timing is asserted.

Benchmarks are not tests (issue 5): this only proves that the bench works, on
the test session's server, and that its JSON and chart are written.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from typing import Any
from urllib.parse import quote, urlencode

import pytest

import guarddb
from guarddb import MODES
from guarddb.tools.bench import command as bench_command
from guarddb.tools.bench import cooperative, harness, references, workloads
from guarddb.tools.bench import report as bench_report
from guarddb.tools.server import ENV_DSN

#: The quick bench takes a few seconds; this only stops a hang from stalling the suite.
TIME_LIMIT = 300


def dsn_of(connect_args: dict[str, Any]) -> str:
    """A GUARDDB_TEST_DSN naming the server that ``connect_args`` reach."""
    if "unix_socket" in connect_args:
        query = {"user": connect_args.get("user", "root"), "db": connect_args["database"]}
        if connect_args.get("password"):
            query["password"] = connect_args["password"]
        return f"unix://{quote(connect_args['unix_socket'])}?{urlencode(query)}"
    password = connect_args.get("password")
    credentials = quote(connect_args.get("user", "root"), safe="")
    if password:
        credentials += ":" + quote(password, safe="")
    return (
        f"mysql://{credentials}@{connect_args['host']}:{connect_args.get('port', 3306)}"
        f"/{connect_args['database']}"
    )


def run_bench(cwd: str, *args: str, dsn: str | None = None) -> subprocess.CompletedProcess:
    """``python -m guarddb bench ARGS`` with the guarddb under test (against ``dsn``)."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(guarddb.__file__)))
    env = dict(os.environ)
    env.pop(ENV_DSN, None)
    if dsn is not None:
        env[ENV_DSN] = dsn
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "guarddb", "bench", *args],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT,
        env=env,
        cwd=cwd,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(connect_args, tmp_path_factory):
    """One quick bench with --plot and --json: (process, JSON report, chart path)."""
    where = tmp_path_factory.mktemp("bench")
    done = run_bench(
        str(where), "--quick", "--plot", "tmp.png", "--json", "tmp.json", dsn=dsn_of(connect_args)
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    report = json.loads((where / "tmp.json").read_text())
    return done, report, where / "tmp.png"


def test_the_quick_bench_prints_every_workload_and_mode(quick_run):
    done, report, _ = quick_run
    out = done.stdout
    sizes = workloads.Sizes(**report["sizes"])
    assert sizes == workloads.QUICK
    for workload in workloads.WORKLOADS:
        assert workloads.describe_workload(workload, sizes) in out, workload.key
    mysqlclient_part, pymysql_head, pymysql_part = out.partition(
        "guarddb.pymysql vs plain PyMySQL "
    )
    parts = [mysqlclient_part, pymysql_part] if pymysql_head else [mysqlclient_part]
    for part in parts:
        for mode in MODES:
            # one table row per workload names the mode in its own column
            rows = re.findall(rf"^\|[^|\n]*\| {mode}( \(uncontended\))? +\|", part, re.MULTILINE)
            assert len(rows) == len(workloads.WORKLOADS), (mode, out)
    if importlib.util.find_spec("pymysql") is not None:
        assert pymysql_head, out  # guarddb.pymysql in every mode against plain PyMySQL
        roundtrip = r'^\| round trip: execute\("SELECT 1"\) \+ fetchone\(\) +\| exclusive +\|'
        assert re.search(roundtrip, pymysql_part, re.MULTILINE), out
        assert "| ≤ 1.02x |" in pymysql_part  # the round trip's target
        assert re.search(r"\| none +\| +\|", pymysql_part), out  # fetch loops: no target
    else:
        assert "guarddb.pymysql against plain PyMySQL: not run: PyMySQL is not installed" in out
    assert "threads share one connection" in out
    assert "every call in one threading.Lock" in out
    # Beside them, under gevent: measured, or said why not.
    assert cooperative.TITLE in out
    assert re.search(r"targets met: (all \d+|\d+ of \d+)", out), out
    for label in ("PyMySQL", "mysql-connector-python"):
        assert label in out  # measured, or said why not
    assert "bench [" in done.stderr  # the progress line


def _check_stats(stats: dict[str, Any], rounds: int, where: str) -> None:
    for key in ("median", "q1", "q3", "min", "max"):
        assert isinstance(stats[key], float) and math.isfinite(stats[key]), (where, key)
        assert stats[key] > 0, (where, key)
    assert stats["min"] <= stats["q1"] <= stats["median"] <= stats["q3"] <= stats["max"], where
    assert len(stats["ratios"]) == rounds, where


def test_the_json_has_every_number(quick_run):
    _, report, _ = quick_run
    rounds = report["rounds"]
    assert rounds == workloads.QUICK.rounds
    assert report["quick"] is True
    environment = report["environment"]
    assert environment["guarddb"] == guarddb.__version__
    for key in ("mysqlclient", "python", "server", "transport", "cpus"):
        assert environment[key], key
    assert set(report["workloads"]) == set(workloads.WORKLOAD_KEYS)

    assert set(report["modes"]) == set(MODES)
    for mode in MODES:
        assert set(report["modes"][mode]) == set(workloads.WORKLOAD_KEYS), mode
        for key, stats in report["modes"][mode].items():
            workload_rounds = report["workloads"][key]["rounds"]
            _check_stats(stats, workload_rounds, f"{mode}/{key}")
            assert stats["target"] == workloads.target(mode, key)
            assert isinstance(stats["met"], bool)
            assert len(stats["base_s"]) == len(stats["other_s"]) == workload_rounds
    # Cheap workloads get more rounds (a median of few moves by more than their margin).
    assert {key: entry["rounds"] for key, entry in report["workloads"].items()} == {
        w.key: rounds * w.rounds_factor for w in workloads.WORKLOADS
    }
    assert report["workloads"]["roundtrip"]["rounds"] == 3 * rounds
    assert report["targets"]["mutex"]["roundtrip"] == 1.04
    assert report["targets"]["exclusive"]["fetchone"] == 1.0

    contention = report["contention"]
    _check_stats(contention, rounds, "contention")
    assert contention["threads"] == 8
    assert contention["guarddb_calls_per_s"] > 0
    assert contention["plain_lock_calls_per_s"] > 0
    assert contention["target"] == 1.1

    entry = report["pymysql"]
    if importlib.util.find_spec("pymysql") is None:
        assert not entry["available"] and "PyMySQL is not installed" in entry["note"], entry
    else:
        assert entry["available"] and entry["version"], entry
        assert set(entry["modes"]) == set(MODES)
        for mode in MODES:
            assert set(entry["modes"][mode]) == set(workloads.WORKLOAD_KEYS), mode
            for key, stats in entry["modes"][mode].items():
                _check_stats(stats, report["workloads"][key]["rounds"], f"pymysql {mode}/{key}")
                assert stats["target"] == workloads.target(mode, key, "pymysql")
                if stats["target"] is None:  # issue 14 sets none for the fetch loops
                    assert stats["met"] is None
                else:
                    assert isinstance(stats["met"], bool)
                assert stats["base_per_op"] > 0 and stats["other_per_op"] > 0
            assert entry["modes"][mode]["roundtrip"]["target"] == 1.02  # issue 14, every mode
            assert entry["modes"][mode]["fetchone"]["target"] is None

    entry = report["cooperative"]
    assert entry["title"] == cooperative.TITLE
    if importlib.util.find_spec("gevent") is None:
        assert not entry["available"] and "gevent is not installed" in entry["note"], entry
    else:
        assert entry["available"] and entry["gevent"], entry
        _check_stats(entry, rounds, "cooperative")
        assert entry["base_per_op"] > 0 and entry["other_per_op"] > 0
        assert len(entry["base_s"]) == len(entry["other_s"]) == rounds

    assert set(report["reference"]) == set(references.REFERENCES)
    for name, entry in report["reference"].items():
        if not entry["available"]:
            assert entry["note"], name  # says why it was skipped
            continue
        assert entry["version"] and entry["implementation"], name
        assert set(entry["workloads"]) == set(workloads.WORKLOAD_KEYS), name
        for key, stats in entry["workloads"].items():
            if "error" not in stats:
                _check_stats(stats, report["reference_rounds"], f"{name}/{key}")


def test_the_chart_is_written(quick_run):
    done, _, chart = quick_run
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib" in done.stdout  # the bench said why there is no chart
        pytest.skip("matplotlib is not installed (pip install 'guarddb[bench]'): no chart to check")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_gevent_the_cooperative_row_is_skipped_saying_why(monkeypatch, capsys):
    """gevent made unimportable (None in sys.modules): nothing runs, the report says why."""
    monkeypatch.setitem(sys.modules, "gevent", None)
    progress = harness.Progress(1, out=sys.stderr)
    tables = workloads.Tables(rows="unused", many="unused")
    entry = cooperative.run_cooperative({}, workloads.QUICK, tables, 3, progress)
    assert not entry["available"] and progress.done == 0
    assert entry["note"] == "not run: gevent is not installed (pip install 'gevent>=24')"
    bench_report._cooperative_table(entry, sys.stdout)
    assert capsys.readouterr().out == f"{cooperative.TITLE}: {entry['note']}\n"


def test_without_pymysql_the_pymysql_table_is_skipped_saying_why(monkeypatch, capsys):
    """PyMySQL made unimportable (None in sys.modules): nothing runs, the report says why."""
    monkeypatch.setitem(sys.modules, "pymysql", None)
    progress = harness.Progress(1, out=sys.stderr)
    tables = workloads.Tables(rows="unused", many="unused")
    entry = bench_command.run_pymysql({}, workloads.QUICK, tables, 3, progress)
    assert not entry["available"] and progress.done == 0 and entry["modes"] == {}
    assert entry["note"] == "not run: PyMySQL is not installed (pip install 'guarddb[pymysql]')"
    bench_report._pymysql_table(entry, workloads.QUICK, sys.stdout)
    assert capsys.readouterr().out == (f"guarddb.pymysql against plain PyMySQL: {entry['note']}\n")


def test_a_bad_dsn_is_refused_without_running(tmp_path):
    done = run_bench(str(tmp_path), "--quick", "--dsn", "ftp://nowhere")
    assert done.returncode == 2
    assert "mysql://" in done.stderr  # says which forms a DSN takes


def test_summaries_of_ratios():
    stats = harness.summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (stats["min"], stats["q1"], stats["median"], stats["q3"], stats["max"]) == (
        1.0,
        2.0,
        3.0,
        4.0,
        5.0,
    )
    single = harness.summarize([1.25])
    assert single["q1"] == single["median"] == single["q3"] == 1.25
