"""A row that says which task (or thread, or test) wrote it, from which process and session."""

from __future__ import annotations

from django.db import models


class Note(models.Model):
    tag = models.CharField(max_length=64)
    pid = models.IntegerField()
    connection_id = models.BigIntegerField()

    def __str__(self) -> str:
        return self.tag
