"""Guarded objects, one layer per driver: where each driver's calls and socket are.

:mod:`guarddb.drivers.mysqldb` guards mysqlclient (MySQLdb),
:mod:`guarddb.drivers.pymysql` guards PyMySQL.  Each layer
subclasses or wraps its driver's connection and cursors, puts every call that
reaches the server behind the C guard, and leaves the policy (modes, messages,
fork, lifecycle) to :mod:`guarddb.core`.
"""
