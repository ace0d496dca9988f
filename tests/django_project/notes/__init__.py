"""One model, Celery tasks that use it, and tests for Django's own test runner."""
