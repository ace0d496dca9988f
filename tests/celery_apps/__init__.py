"""Celery apps and the harness that runs them as real workers (see tests/test_celery.py)."""
