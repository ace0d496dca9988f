"""Helpers that fit guarddb into frameworks: :mod:`guarddb.contrib.sqlalchemy` (pool events).

Each submodule imports its framework; importing :mod:`guarddb.contrib` itself imports nothing.
"""
