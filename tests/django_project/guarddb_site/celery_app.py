"""The project's Celery app, configured from Django's settings (so Celery's Django fixup runs).

Run by tests/test_django.py as ``celery -A guarddb_site.celery_app worker --pool=prefork``.
Signal handlers here (main process) report through files in ``state_dir``:

- ``parent.json``: at ``worker_init``, after the Django fixup's own handler closed the
  connections opened so far, an ORM query opens the main process's Django connection again
  (CONN_MAX_AGE keeps it): it is open when the pool forks;
- ``ready.json``: ``worker_ready``;
- ``shutdown.json``: at ``worker_shutdown``, whether the main process's Django session and
  the module-level raw connection of notes.tasks are still theirs and still answer;
- ``violations/N.json``: with ``record_violations`` in the settings' config, every guarddb
  violation of the worker (an orphan is reported by guarddb's lifecycle, in the main
  process under a gevent pool).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guarddb_site.settings")

# Created after DJANGO_SETTINGS_MODULE is set: Celery installs its Django fixup.
app = Celery("guarddb_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_MAIN_PID = os.getpid()


def _state_dir() -> str:
    from django.conf import settings

    return str(settings.CONFIG["state_dir"])


@signals.worker_init.connect
def _open_parent_session(**_: Any) -> None:
    # Connected after the fixup's worker_init handler (the fixup is installed when the app is
    # created), so this runs after it closed the connections the module-level query opened.
    from celery_apps.state import write_json
    from notes.models import Note
    from notes.tasks import RAW_PARENT, django_connection_id

    Note.objects.exists()  # an ORM query in the main process, before the pool forks
    write_json(
        _state_dir(),
        "parent.json",
        {"pid": os.getpid(), "django_connection_id": django_connection_id(), **RAW_PARENT},
    )


@signals.worker_init.connect
def _record_violations(**_: Any) -> None:
    from django.conf import settings

    if not settings.CONFIG.get("record_violations") or settings.DRIVER != "guarddb":
        return
    import itertools

    from celery_apps.state import write_json

    import guarddb

    directory = os.path.join(_state_dir(), "violations")
    os.makedirs(directory, exist_ok=True)
    numbers = itertools.count(1)

    def record(violation: guarddb.Violation) -> None:
        report = {
            "kind": violation.kind,
            "message": violation.message,
            "connection_site": violation.connection_site,
            "thread": violation.thread,
            "pid": violation.pid,
        }
        write_json(directory, f"{os.getpid()}-{next(numbers)}.json", report)

    guarddb.on_violation(record)


@signals.worker_ready.connect
def _report_ready(**_: Any) -> None:
    from celery_apps.state import write_json

    write_json(_state_dir(), "ready.json", {"pid": os.getpid()})


@signals.worker_shutdown.connect
def _check_parent_sessions(**_: Any) -> None:
    if os.getpid() != _MAIN_PID:
        return
    from celery_apps.state import write_json
    from notes.tasks import RAW, django_connection_id, raw_connection_id

    report: dict[str, Any] = {"started": True}
    write_json(_state_dir(), "shutdown.json", report)  # first: a hang below still shows
    for name, probe in (
        ("django_connection_id", django_connection_id),
        ("raw_connection_id", lambda: raw_connection_id(RAW)),
    ):
        try:
            report[name] = probe()
        except Exception as exc:
            report[name] = f"{type(exc).__name__}: {exc}"
        write_json(_state_dir(), "shutdown.json", report)
