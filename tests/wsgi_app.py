"""A WSGI app for tests/test_gunicorn.py: one connection, opened at import.

With ``gunicorn --preload`` the import runs in the master, before it forks its workers:
every worker inherits this connection.  Each request runs ``SELECT CONNECTION_ID()``
through it and answers JSON: the worker's pid, the session that answered, and the
master's pid and session as recorded at import.  An error propagates: gunicorn answers
500 and logs the traceback.

``GET /hold`` first blocks until the test has opened and closed the FIFO named by
``GUARDDB_WSGI_HOLD``: that worker stays busy, so the next request goes to another.

Environment: ``GUARDDB_TEST_CONNECT_ARGS`` (JSON), ``GUARDDB_WSGI_DRIVER`` (``guarddb``,
the default, or ``plain`` for mysqlclient itself); guarddb's own ``GUARDDB_ON_FORK``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

if os.environ.get("GUARDDB_WSGI_DRIVER") == "plain":
    import MySQLdb as driver
else:
    import guarddb as driver

conn = driver.connect(**json.loads(os.environ["GUARDDB_TEST_CONNECT_ARGS"]), autocommit=True)


def session() -> int:
    """CONNECTION_ID() of the session the module's connection talks to."""
    cursor = conn.cursor()
    cursor.execute("SELECT CONNECTION_ID()")
    ((number,),) = cursor.fetchall()
    cursor.close()
    return int(number)


#: The process that imported this module (the master, with --preload) and its session.
MASTER_PID = os.getpid()
MASTER_SESSION = session()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answer the worker's pid and the session its query reached."""
    if environ.get("PATH_INFO") == "/hold":
        with open(os.environ["GUARDDB_WSGI_HOLD"], "rb") as hold:
            hold.read()  # returns when the test closes its end
    body = json.dumps(
        {
            "pid": os.getpid(),
            "session": session(),
            "master_pid": MASTER_PID,
            "master_session": MASTER_SESSION,
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
