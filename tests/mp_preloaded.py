"""Preloaded into the forkserver by tests/mp_worker.py (``set_forkserver_preload``).

It opens a guarddb connection at import, so in the forkserver process, which every child
it forks then inherits: the pattern of an application module that connects at import.
``GUARDDB_TEST_ON_FORK`` chooses the policy (see mp_worker's ON_FORK); ``env`` and
``default`` give no keyword.
"""

from __future__ import annotations

import json
import os

import guarddb

_spec = os.environ.get("GUARDDB_TEST_ON_FORK", "default")
_keywords = {"on_fork": _spec} if _spec in ("raise", "reconnect") else {}

conn = guarddb.connect(
    **json.loads(os.environ["GUARDDB_TEST_CONNECT_ARGS"]), autocommit=True, **_keywords
)
#: The forkserver's pid and its session, as the children inherit them.
PID = os.getpid()
_cursor = conn.cursor()
_cursor.execute("SELECT CONNECTION_ID()")
SESSION = int(_cursor.fetchall()[0][0])
_cursor.close()
