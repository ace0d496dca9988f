"""Shared fixtures: one private MariaDB for the whole session, and helpers for threads and forks."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest

import guarddb
from guarddb.tools.server import ENV_DSN, PrivateServer, parse_dsn


@pytest.fixture(scope="session")
def server():
    """The private server (or the one GUARDDB_TEST_DSN names; then kill() is unavailable)."""
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        external = PrivateServer.__new__(PrivateServer)
        external.connect_args = parse_dsn(dsn)
        external.process = None
        yield external
        return
    with PrivateServer() as private:
        yield private


@pytest.fixture(scope="session")
def connect_args(server) -> dict[str, Any]:
    return dict(server.connect_args)


def _opener(module, connect_args):
    """A connect() for ``module`` whose connections are closed after the test."""
    opened = []

    def _connect(**overrides: Any):
        conn = module.connect(**{**connect_args, **overrides})
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        with contextlib.suppress(Exception):  # closed already, or broken on purpose
            conn.close()


@pytest.fixture
def connect(connect_args):
    """Open guarded connections that are closed after the test."""
    import guarddb

    yield from _opener(guarddb, connect_args)


@pytest.fixture
def plain_connect(connect_args):
    """Open plain mysqlclient connections (for side-by-side expectations)."""
    import MySQLdb

    yield from _opener(MySQLdb, connect_args)


@pytest.fixture(scope="session")
def broker_url():
    """A Celery broker URL (see tests/broker.py); a private Redis is stopped at the end."""
    from .broker import NoBroker, find_broker

    try:
        url, private = find_broker()
    except NoBroker as exc:
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        if private is not None:
            private.stop()


@pytest.fixture
def pymysql_connect(connect_args):
    """Open guarded PyMySQL connections (guarddb.pymysql) that are closed after the test."""
    import guarddb.pymysql

    yield from _opener(guarddb.pymysql, connect_args)


@pytest.fixture
def plain_pymysql_connect(connect_args):
    """Open plain PyMySQL connections (for side-by-side expectations)."""
    import pymysql

    yield from _opener(pymysql, connect_args)


@pytest.fixture
def violations(request):
    """The guard violations of this test in this process (kinds and all), as they happen."""
    try:  # guarddb's pytest plugin, when loaded: the test answers for its violations
        yield request.getfixturevalue("guarddb_violations")
        return
    except pytest.FixtureLookupError:
        pass
    seen: list[guarddb.Violation] = []
    hook = guarddb.on_violation(seen.append)
    try:
        yield seen
    finally:
        guarddb.remove_violation_hook(hook)
