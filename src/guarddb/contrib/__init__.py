"""Helpers that fit guarddb into frameworks and pools.

:mod:`guarddb.contrib.sqlalchemy` (pool events), :mod:`guarddb.contrib.dbutils` (DBUtils'
PooledDB and PersistentDB, and SteadyDB's failover).

Each submodule imports its framework; importing :mod:`guarddb.contrib` itself imports nothing.
"""
