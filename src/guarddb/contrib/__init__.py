"""Helpers that fit guarddb into frameworks and pools.

:mod:`guarddb.contrib.sqlalchemy` (pool events), :mod:`guarddb.contrib.dbutils` (DBUtils'
PooledDB and PersistentDB, and SteadyDB's failover), :mod:`guarddb.contrib.prometheus`
(a metrics collector).

Each submodule imports its framework; importing :mod:`guarddb.contrib` itself imports nothing.
"""
