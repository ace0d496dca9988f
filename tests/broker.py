"""A message broker for the Celery tests: guarddb's own finder, :mod:`guarddb.tools.broker`.

The demo's Celery scenario needs a broker too, so the logic lives in the package; this
module keeps the names the tests import.  The order of preference:

1. ``GUARDDB_TEST_BROKER`` (any Celery broker URL) when set;
2. a Redis answering ``PING`` on 127.0.0.1:6379;
3. a private ``redis-server`` (Debian's) started on a free loopback port, stopped at the end
   of the session;
4. a RabbitMQ answering the AMQP handshake on 127.0.0.1:5672 (guest/guest);

else the Celery tests are skipped, naming what is missing.
"""

from __future__ import annotations

from guarddb.tools.broker import (
    AMQP_PORT,
    ENV_BROKER,
    ENV_RESULT_BACKEND,
    LOOPBACK,
    RABBITMQ_URL,
    REDIS_PORT,
    NoBroker,
    PrivateRedis,
    amqp_answers,
    find_broker,
    redis_answers,
    result_backend_for,
)

__all__ = [
    "AMQP_PORT",
    "ENV_BROKER",
    "ENV_RESULT_BACKEND",
    "LOOPBACK",
    "RABBITMQ_URL",
    "REDIS_PORT",
    "NoBroker",
    "PrivateRedis",
    "amqp_answers",
    "find_broker",
    "redis_answers",
    "result_backend_for",
]
