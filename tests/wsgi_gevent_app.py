"""A WSGI app for tests/test_gunicorn_gevent.py, served by ``gunicorn -k gevent``.

gunicorn's gevent worker runs ``gevent.monkey.patch_all()`` before it imports this module
(there is no ``--preload``): every request runs in a greenlet of its own, and guarddb's
"thread" is that greenlet.  Answers are JSON; an error propagates, so gunicorn answers 500
and logs the traceback.

- ``GET /own?n=N&gate=NAME``: a connection of the request's own, opened and closed in the
  request.  It first waits on the server for the user lock NAME, which the test holds
  (``SELECT GET_LOCK``), then gives it back and answers ``SELECT N, CONNECTION_ID()``.
- ``GET /shared?n=N``: the connection and the cursor this module opened at import, shared by
  every request: ``SELECT N, CONNECTION_ID()``, then a wait (yielding to the hub) until
  ``GUARDDB_WSGI_PARTY`` requests have executed theirs, then ``fetchall()``.  So every
  request's execute comes before any request's fetch, however the hub orders them.

Environment: ``GUARDDB_TEST_CONNECT_ARGS`` (JSON), ``GUARDDB_WSGI_DRIVER`` (``guarddb``, the
default, or ``plain`` for mysqlclient itself), ``GUARDDB_WSGI_PARTY`` (default 8); guarddb's
own ``GUARDDB_MODE`` and ``GUARDDB_COOPERATIVE``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Callable
from urllib.parse import parse_qs

from gevent import monkey

if os.environ.get("GUARDDB_WSGI_DRIVER") == "plain":
    import MySQLdb as driver
else:
    import guarddb as driver

CONNECT_ARGS = json.loads(os.environ["GUARDDB_TEST_CONNECT_ARGS"])
#: gevent's worker patched threading: the barrier below is one of greenlets.
PATCHED = monkey.is_module_patched("threading")
PARTY = int(os.environ.get("GUARDDB_WSGI_PARTY", "8"))

shared_conn = driver.connect(**CONNECT_ARGS, autocommit=True)
shared_cursor = shared_conn.cursor()
executed = threading.Barrier(PARTY)


def own(number: int, gate: str) -> dict[str, Any]:
    """The request's own connection: wait for the test's gate on the server, then answer."""
    conn = driver.connect(**CONNECT_ARGS, autocommit=True)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT GET_LOCK(%s, 30)", (gate,))
        (got,) = cursor.fetchone()
        cursor.execute("SELECT RELEASE_LOCK(%s)", (gate,))
        cursor.fetchall()
        cursor.execute("SELECT %s, CONNECTION_ID()", (number,))
        rows = cursor.fetchall()
        return {
            "gate": got,
            "rows": [[int(n), int(session)] for n, session in rows],
            "mode": getattr(conn, "guard_mode", None),
            "cooperative": getattr(conn, "guard_settings", {}).get("cooperative"),
        }
    finally:
        conn.close()


def shared(number: int) -> dict[str, Any]:
    """The module's connection and cursor: execute, wait for the others' executes, fetch."""
    shared_cursor.execute("SELECT %s, CONNECTION_ID()", (number,))
    executed.wait(10)  # yields to the hub: the other requests execute meanwhile
    rows = shared_cursor.fetchall()
    return {
        "rows": [[int(n), int(session)] for n, session in rows],
        "mode": getattr(shared_conn, "guard_mode", None),
    }


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Route /own and /shared; answer JSON with the worker's pid and the greenlet's identity."""
    query = {key: values[0] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}
    number = int(query.get("n", "0"))
    path = environ.get("PATH_INFO")
    if path == "/own":
        body = own(number, query["gate"])
    elif path == "/shared":
        body = shared(number)
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    body.update(n=number, pid=os.getpid(), ident=threading.get_ident(), patched=PATCHED)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]
