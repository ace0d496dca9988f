"""``python -m guarddb bench``: what the guard costs, side by side with plain mysqlclient.

Every workload runs on plain mysqlclient and on guarddb in the same process,
against the same server, over equivalent connections (the same connect
arguments, the same cursor classes: guarddb guards whatever class it is
given).  They are interleaved finely: each round opens a fresh connection on
each side and runs a few chunks of the workload on each, alternating (A B B A
...), so that a burst of load on the machine, or the scheduler's placing of
one connection's server thread, hits both sides alike.  Only the workload is
timed: connecting, creating tables, emptying the insert table and rewinding a
result between passes are not.  The garbage collector is collected before
each chunk and off while it runs, as :mod:`timeit` does.

With its own private server the bench pins itself and the server to one CPU
(``--no-pin`` not to): on a virtual machine a round trip between two CPUs took
anywhere from 1x to 4x as long depending on the connection, which no amount of
interleaving evens out; on one CPU every connection's round trip is the same.

What is printed for each workload and guard mode is the median over the
rounds of the per-round ratio guarded/plain, with its spread (the
interquartile range; min and max are in ``--json``), next to the targets of
issue 5, under a control row of plain mysqlclient against itself (the noise
floor: ideally 1.000).  Timing never fails the command: the exit code is 0
whenever the bench ran.

guarddb.pymysql runs the same workloads in every guard mode against plain
PyMySQL, interleaved the same way, in the same process (its round trip's target,
issue 14: at most 1.02x plain PyMySQL's); skipped, saying why, without PyMySQL.

For reference the same workloads run with PyMySQL and mysql-connector-python
(its C extension when it loads), as ratios to plain mysqlclient.  They run in
a child process: mysql-connector-python's C extension needs the OpenSSL it
ships, which must be loaded before libmariadb (linked to the system's) is,
and that would change the process the guarddb figures are measured in.

Under gevent, guarddb's ``cooperative=True`` round trip (a statement waits for
the server by yielding to the hub) is timed against plain mysqlclient in a child
process patched with ``gevent.monkey.patch_all()`` (skipped, saying why,
without gevent): the patch must not reach the process the other figures come
from.

The modules: :mod:`~guarddb.tools.bench.workloads` (what is timed, its sizes,
the targets, the tables), :mod:`~guarddb.tools.bench.harness` (interleaving,
statistics, contention, CPU pinning, the environment),
:mod:`~guarddb.tools.bench.cooperative` (the cooperative round trip's patched
child), :mod:`~guarddb.tools.bench.references` (the reference drivers' child process),
:mod:`~guarddb.tools.bench.report` (the tables and the chart) and
:mod:`~guarddb.tools.bench.command` (the options, and the whole run).
"""
