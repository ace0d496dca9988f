"""mysqlclient's guarded Connection and cursors (public as guarddb.connections, guarddb.cursors)."""
