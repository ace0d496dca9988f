"""guarddb's tools: everything around the guard that guarddb's connections never use.

- :mod:`~guarddb.tools.cli`: ``python -m guarddb demo|bench|run``;
- :mod:`~guarddb.tools.demo`: the failure scenarios of ``python -m guarddb demo``;
- :mod:`~guarddb.tools.bench`: ``python -m guarddb bench``, what the guard costs;
- :mod:`~guarddb.tools.runner`: ``python -m guarddb run``, a program under guarddb;
- :mod:`~guarddb.tools.pytest_plugin`: the ``pytest11`` plugin (``--guarddb=MODE``);
- :mod:`~guarddb.tools.install`: what those two install, guarddb as MySQLdb and pymysql;
- :mod:`~guarddb.tools.server`: a private MariaDB (the tests, the demo, the bench);
- :mod:`~guarddb.tools.broker`: a Celery broker (the demo, the Celery tests).

``import guarddb`` imports none of them.
"""
