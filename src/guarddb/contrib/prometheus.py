"""Prometheus metrics: guarddb's connections, violations, closes and waits in this process.

::

    from prometheus_client import start_http_server
    from guarddb.contrib.prometheus import register

    register()  # into prometheus_client.REGISTRY; register(registry) for another
    start_http_server(9100)

(``pip install 'guarddb[prometheus]'``.)  :class:`GuarddbCollector` is a custom
collector: each scrape reads what guarddb already keeps, with no round trip to
the server and without taking any lock a call takes, so a scrape never waits
for a connection in use.  Every guarded connection of the process counts,
mysqlclient's (``import guarddb as MySQLdb``) and PyMySQL's
(``guarddb.pymysql``) alike.  Exported:

``guarddb_connections{state}`` (gauge)
    Open guarded connections by state, each in the first that applies:
    ``inherited`` (a forked child's connection of its parent, unusable here),
    ``orphan`` (its owner thread has ended), ``in_call`` (a thread is inside a
    call on it, or holds it for unread unbuffered rows or, in mutex mode with
    ``mutex_scope="transaction"``, for its transaction), ``in_transaction`` (a
    transaction may be open), ``idle``.
``guarddb_violations_total{kind}`` (counter)
    Violations (see ``guarddb.on_violation``) by kind: ``ThreadOwnershipError``,
    ``ConcurrentUseError``, ``PendingResultError``, ``ForkedConnectionError``,
    ``orphan``.
``guarddb_connections_closed_total{reason}`` (counter)
    Connections guarddb closed: ``max_idle`` (idle too long), ``orphan`` (its
    owner thread ended, ``close_orphans=True``).
``guarddb_mutex_waits_total``, ``guarddb_mutex_wait_seconds_total`` (counters)
    Calls that waited for a connection another thread was inside (mutex mode;
    also a call that found guarddb's lifecycle thread closing it), and the
    seconds they waited: ``conn.guard_stats()``'s ``waits`` and ``wait_total``,
    summed over every connection the process has had.

The counters only grow; a forked child starts from its parent's counts (each
process is scraped on its own: prometheus_client's multiprocess mode does not
run custom collectors).  Importing :mod:`guarddb` never imports
``prometheus_client``; this module does.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, CollectorRegistry

from ..core import lifecycle, metrics

#: The violation kinds exported even before the first one (a series at 0 from the start).
VIOLATION_KINDS = (
    "ThreadOwnershipError",
    "ConcurrentUseError",
    "PendingResultError",
    "ForkedConnectionError",
    "orphan",
)


class GuarddbCollector:
    """A prometheus_client collector of guarddb's metrics (see the module's documentation)."""

    def collect(self) -> Iterator[Metric]:
        """The metrics as they are now (called on every scrape)."""
        connections, violations, closed, waits, wait_seconds = self._families()
        for state, count in lifecycle.connection_states().items():
            connections.add_metric([state], count)
        by_kind = dict.fromkeys(VIOLATION_KINDS, 0)
        by_kind.update(metrics.VIOLATIONS.counts())
        for kind, count in sorted(by_kind.items()):
            violations.add_metric([kind], count)
        by_reason = dict.fromkeys(metrics.CLOSE_REASONS, 0)
        by_reason.update(metrics.CLOSED.counts())
        for reason, count in sorted(by_reason.items()):
            closed.add_metric([reason], count)
        count, seconds = metrics.waits()
        waits.add_metric([], count)
        wait_seconds.add_metric([], seconds)
        yield from (connections, violations, closed, waits, wait_seconds)

    def describe(self) -> Iterator[Metric]:
        """The metrics' names and types, without samples (so registering reads nothing)."""
        yield from self._families()

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
    ]:
        return (
            GaugeMetricFamily(
                "guarddb_connections",
                "Open guarded connections of this process, by state",
                labels=["state"],
            ),
            CounterMetricFamily(
                "guarddb_violations",
                "Uses of a connection guarddb refused (and orphans), by kind",
                labels=["kind"],
            ),
            CounterMetricFamily(
                "guarddb_connections_closed",
                "Connections guarddb closed, by reason (max_idle, orphan)",
                labels=["reason"],
            ),
            CounterMetricFamily(
                "guarddb_mutex_waits",
                "Calls that waited for a connection another thread was inside",
            ),
            CounterMetricFamily(
                "guarddb_mutex_wait_seconds",
                "Seconds calls waited for a connection another thread was inside",
                unit="seconds",
            ),
        )


def register(registry: CollectorRegistry | None = None) -> GuarddbCollector:
    """Register a :class:`GuarddbCollector` with ``registry`` (prometheus_client's
    default ``REGISTRY`` if None) and return it (``registry.unregister()`` takes it out).

    Once per registry: a second one there is prometheus_client's ``ValueError``
    (duplicated timeseries).
    """
    collector = GuarddbCollector()
    (REGISTRY if registry is None else registry).register(collector)
    return collector
