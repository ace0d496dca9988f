"""Tests for Django's own runner (``manage.py test --parallel 2``), run by tests/test_django.py.

Each test writes a line to ``$GUARDDB_RUNNER_REPORT`` (pid, database, the DB-API connection's
class and guard mode, session) so the outer test can see that they ran in the runner's forked
workers, on the cloned databases, through the driver the settings installed.
Three TestCase classes: the parallel runner hands out whole classes.
"""

from __future__ import annotations

import json
import os

from django.conf import settings
from django.db import connection
from django.test import TestCase, TransactionTestCase

from notes.models import Note


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def report(test: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID(), DATABASE()")
        session, database = cursor.fetchone()
    line = {
        "test": test,
        "pid": os.getpid(),
        # The settings were loaded by the runner's own process, before it forked its workers.
        "runner_pid": settings.LOADED_IN_PID,
        "database": database,
        "connection_class": qualified_name(type(connection.connection)),
        "guard_mode": getattr(connection.connection, "guard_mode", None),
        "session": int(session),
    }
    with open(os.environ["GUARDDB_RUNNER_REPORT"], "a") as out:
        out.write(json.dumps(line) + "\n")


class NoteTests(TestCase):
    def test_create_and_read(self) -> None:
        Note.objects.create(tag="a", pid=os.getpid(), connection_id=0)
        self.assertEqual(list(Note.objects.values_list("tag", flat=True)), ["a"])
        report(self.id())

    def test_each_test_starts_empty(self) -> None:
        self.assertEqual(Note.objects.count(), 0)
        report(self.id())


class MoreNoteTests(TestCase):
    def test_update(self) -> None:
        note = Note.objects.create(tag="b", pid=os.getpid(), connection_id=0)
        Note.objects.filter(pk=note.pk).update(tag="c")
        self.assertEqual(Note.objects.get(pk=note.pk).tag, "c")
        report(self.id())


class CommittedNoteTests(TransactionTestCase):
    def test_commit_and_delete(self) -> None:
        Note.objects.create(tag="d", pid=os.getpid(), connection_id=0)
        self.assertEqual(Note.objects.filter(tag="d").count(), 1)
        Note.objects.all().delete()
        report(self.id())
