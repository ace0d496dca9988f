"""URLs of the test project: one view, for live-server tests."""

from __future__ import annotations

from django.urls import path
from notes.views import notes

urlpatterns = [path("notes/", notes)]
