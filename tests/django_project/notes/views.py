"""A view that queries the database, for live-server tests (pytest-django's ``live_server``)."""

from __future__ import annotations

import os
import threading

from django.db import connection
from django.http import HttpRequest, JsonResponse

from notes.models import Note


def notes(request: HttpRequest) -> JsonResponse:
    """The tags of every note, and who served them: the request thread and its session."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        (session,) = cursor.fetchone()
    return JsonResponse(
        {
            "tags": sorted(Note.objects.values_list("tag", flat=True)),
            "session": int(session),
            "thread": threading.current_thread().name,
            "pid": os.getpid(),
            "guard_mode": getattr(connection.connection, "guard_mode", None),
        }
    )
