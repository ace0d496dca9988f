"""Helpers that fit guarddb into frameworks: :mod:`guarddb.contrib.sqlalchemy` (pool events),
:mod:`guarddb.contrib.prometheus` (a metrics collector).

Each submodule imports its framework; importing :mod:`guarddb.contrib` itself imports nothing.
"""
