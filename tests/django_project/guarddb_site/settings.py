"""Settings of the test project, driven by the environment variable ``GUARDDB_DJANGO`` (JSON).

Keys: ``driver`` (``"guarddb"``, the default, or ``"plain"`` for the driver itself),
``route`` (the driver under Django's MySQLdb: ``"mysqlclient"``, the default, or
``"pymysql"``: PyMySQL through ``install_as_MySQLdb()``, guarddb's or PyMySQL's own),
``connect_args`` (guarddb's test server: unix_socket or host/port, user, password,
database), ``name`` (the database to use), ``options`` (the backend's OPTIONS: guarddb's
connect keywords such as ``guard`` and ``on_fork``), and for Celery ``broker``,
``backend``, ``time_limit``, ``state_dir`` (where the worker's processes report),
``db_reuse_max`` (Celery's ``DB_REUSE_MAX``: keep Django's connections across tasks) and
``record_violations`` (the worker writes every guarddb violation to ``state_dir``).
"""

from __future__ import annotations

import json
import os

CONFIG = json.loads(os.environ["GUARDDB_DJANGO"])
DRIVER = CONFIG.get("driver", "guarddb")
ROUTE = CONFIG.get("route", "mysqlclient")

# Before anything imports MySQLdb: Django's mysql backend then gets guarddb's
# connections and cursors (or PyMySQL's), unchanged.
if ROUTE == "pymysql":
    if DRIVER == "guarddb":
        import guarddb.pymysql

        guarddb.pymysql.install_as_MySQLdb()
    else:
        import pymysql

        pymysql.install_as_MySQLdb()
elif ROUTE != "mysqlclient":
    raise ValueError(f"unknown route {ROUTE!r}")
elif DRIVER == "guarddb":
    import guarddb

    guarddb.install_as_MySQLdb()

_ARGS = CONFIG["connect_args"]

#: The process that loaded the settings (the test runner, before it forks its workers).
LOADED_IN_PID = os.getpid()

SECRET_KEY = "guarddb-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["notes"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
TEST_RUNNER = "guarddb_site.runner.SessionReportingRunner"
# notes/views.py, for live-server tests (whose static files handler needs STATIC_URL).
ROOT_URLCONF = "guarddb_site.urls"
STATIC_URL = "/static/"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": CONFIG.get("name") or _ARGS.get("database", "test"),
        "USER": _ARGS.get("user", ""),
        "PASSWORD": _ARGS.get("password", _ARGS.get("passwd", "")),
        # A HOST that starts with "/" is a unix socket for Django's mysql backend.
        "HOST": _ARGS.get("unix_socket") or _ARGS.get("host", ""),
        "PORT": str(_ARGS.get("port", "")),
        # The seed: persistent connections (a worker's connection lives for an hour).
        "CONN_MAX_AGE": 3600,
        # Passed by Django to MySQLdb.connect() as keywords: guarddb's reach guarddb.
        "OPTIONS": CONFIG.get("options", {}) if DRIVER == "guarddb" else {},
    }
}

if CONFIG.get("broker"):
    CELERY_BROKER_URL = CONFIG["broker"]
    CELERY_RESULT_BACKEND = CONFIG["backend"]
    CELERY_TASK_TIME_LIMIT = CONFIG.get("time_limit", 10)
    CELERY_WORKER_PREFETCH_MULTIPLIER = 1
    CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
    CELERY_RESULT_EXPIRES = 600
    CELERY_WORKER_HIJACK_ROOT_LOGGER = False
    if CONFIG.get("db_reuse_max") is not None:
        # Celery's Django fixup then closes Django's connections every 2*N tasks, not after
        # each one: a prefork child reuses its one connection; under a gevent pool every
        # task's greenlet opens its own, and they stay open.
        CELERY_DB_REUSE_MAX = CONFIG["db_reuse_max"]
