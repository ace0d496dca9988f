"""The failure scenarios of ``python -m guarddb demo``, each run in a child process.

Sharing one MySQL connection between threads, greenlets or across ``fork`` crashes,
hangs or silently mixes up results on plain mysqlclient (and PyMySQL); connections
left open by ended threads, or idle in a pool, pile up on the server.  Each scenario
reproduces one such bug, with the plain driver and with guarddb (mysqlclient
against ``guarddb``, PyMySQL against ``guarddb.pymysql``), in a child process
with a time limit, and what happened is classified into one outcome
kind (a signal, a hang, wrong rows, ..., a clean error, correct).

- :mod:`~guarddb.tools.demo.framework`: what a scenario, its variants and
  outcomes are; the child's recorder; the classification;
- :mod:`~guarddb.tools.demo.catalog`: the scenarios, and each one's body by name;
- :mod:`~guarddb.tools.demo.process`: one run in a child process (the child is
  ``python -m guarddb.tools.demo``);
- :mod:`~guarddb.tools.demo.command`: ``python -m guarddb demo``, every run and the table;
- the bodies: :mod:`~guarddb.tools.demo.threads`, :mod:`~guarddb.tools.demo.greenlets`
  (gevent), :mod:`~guarddb.tools.demo.fork`, :mod:`~guarddb.tools.demo.sscursor` (the
  seeds of DESIGN.md);
  :mod:`~guarddb.tools.demo.celery_prefork` (with the worker's app,
  :mod:`~guarddb.tools.demo.celery_app`), :mod:`~guarddb.tools.demo.leaks`,
  :mod:`~guarddb.tools.demo.idle_pool` (the frameworks and the lifecycle), and
  what those share: :mod:`~guarddb.tools.demo.observe`,
  :mod:`~guarddb.tools.demo.application`.
"""
