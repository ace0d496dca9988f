"""PyMySQL's layer: the guarded Connection, the guarded cursors, PyMySQL's flavour of each error.

Public as :mod:`guarddb.pymysql` (``import guarddb.pymysql as pymysql``).  It
imports PyMySQL only: mysqlclient (MySQLdb) need not be installed.
"""
