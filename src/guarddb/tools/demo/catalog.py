"""The demo's scenarios: :data:`SCENARIOS`, and each one's body, found by name.

The seeds of DESIGN.md that PyMySQL shares (threads sharing a cursor, a
connection used across fork, a forked child closing it) run on PyMySQL too, as
scenarios of their own (``shared_cursor_pymysql``, ...: plain PyMySQL against
:mod:`guarddb.pymysql`), beside mysqlclient's, with the same bodies.

A body lives in a module of its own (:mod:`~guarddb.tools.demo.threads`,
:mod:`~guarddb.tools.demo.greenlets`, :mod:`~guarddb.tools.demo.fork`,
:mod:`~guarddb.tools.demo.sscursor`: the seeds of DESIGN.md;
:mod:`~guarddb.tools.demo.celery_prefork`, :mod:`~guarddb.tools.demo.leaks`,
:mod:`~guarddb.tools.demo.idle_pool`: the frameworks and the lifecycle),
imported by :func:`body` in the child that runs it, and only there: the command
line and the other scenarios' children never load what a scenario needs.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections import OrderedDict
from typing import Any, Callable

from .framework import Context, Expected, Outcome, Recorder, Scenario, Variant

SCENARIOS: OrderedDict[str, Scenario] = OrderedDict(
    (s.name, s)
    for s in (
        Scenario(
            "shared_cursor",
            "8 threads share one connection and one cursor (execute + fetchall)",
            Expected("clean error", "ConcurrentUseError"),
        ),
        Scenario(
            "shared_cursor_pymysql",
            "the same on PyMySQL: 8 threads share one connection and one cursor "
            "(plain PyMySQL, then guarddb.pymysql)",
            Expected("clean error", "ConcurrentUseError"),
            library="pymysql",
        ),
        Scenario(
            "greenlets_shared_cursor",
            "8 greenlets (gevent) share one connection and one cursor, yielding between "
            "execute and fetchall",
            Expected("clean error", "ConcurrentUseError"),
            more=(
                Variant((("guard", "strict"),), Expected("clean error", "ThreadOwnershipError")),
                Variant((("guard", "mutex"),), Expected("correct")),
            ),
            requires=(("gevent", "pip install 'gevent>=24'"),),
            gevent=True,
        ),
        Scenario(
            "fork_shared",
            "a connection opened before fork, used by 8 multiprocessing children",
            Expected("clean error", "ForkedConnectionError"),
        ),
        Scenario(
            "fork_shared_pymysql",
            "the same on PyMySQL: a connection opened before fork, used by 8 multiprocessing "
            "children (plain PyMySQL, then guarddb.pymysql)",
            Expected("clean error", "ForkedConnectionError"),
            library="pymysql",
        ),
        Scenario(
            "fork_child_close",
            "a forked child closes, or drops and exits with, the inherited connection",
            Expected("correct"),
        ),
        Scenario(
            "fork_child_close_pymysql",
            "the same on PyMySQL: a forked child closes, or drops and exits with, the "
            "inherited connection (plain PyMySQL, then guarddb.pymysql)",
            Expected("correct"),
            library="pymysql",
        ),
        Scenario(
            "sscursor_pending",
            "SSCursor with rows unread, then a second query on the same connection",
            Expected("clean error", "PendingResultError"),
        ),
        Scenario(
            "celery_prefork",
            "a Celery prefork worker (2 children) whose module opens a connection at import; "
            "8 tasks each insert a row and make 200 round trips",
            Expected("clean error", "ForkedConnectionError"),
            options=(("on_fork", "raise"),),
            more=(Variant((("on_fork", "reconnect"),), Expected("correct")),),
            requires=(("celery", "pip install 'celery[redis]>=5.3'"),),
            broker=True,
            extra_time=20.0,
        ),
        Scenario(
            "thread_pool_leak",
            "a thread pool whose threads each open a connection and end without closing it "
            "(references kept, as a framework's reference cycles keep them)",
            Expected("reported"),
            more=(Variant((("close_orphans", True),), Expected("correct")),),
            extra_time=5.0,
        ),
        Scenario(
            "idle_pool",
            "a SQLAlchemy QueuePool (pool_size 10, pool_pre_ping) used by a burst of 15 "
            "threads, then left idle; then one more checkout",
            Expected("correct"),
            options=(("max_idle", 2),),
            requires=(("sqlalchemy", "pip install 'sqlalchemy>=2'"),),
            extra_time=8.0,
        ),
    )
)


def matches(scenario: Scenario | str, outcome: Outcome, expected: Expected | None = None) -> bool:
    """True if ``outcome`` is what guarddb must give for ``scenario`` (or ``expected``).

    ``expected`` defaults to the scenario's main guarddb run; give a
    :class:`Variant`'s for the others.  A clean error must be of exactly the
    expected GuardError class, no other.  A skipped run matches nothing.
    """
    if isinstance(scenario, str):
        scenario = SCENARIOS[scenario]
    if expected is None:
        expected = scenario.expected_guarded
    if outcome.kind != expected.kind:
        return False
    return expected.error is None or outcome.guard_errors == (expected.error,)


def missing_requirement(scenario: Scenario | str) -> str | None:
    """Why ``scenario`` cannot run in this interpreter (its driver, a module it needs), or None."""
    if isinstance(scenario, str):
        scenario = SCENARIOS[scenario]
    library = scenario.driver_library
    for module, how in ((library.plain, library.how), *scenario.requires):
        if not _importable(module):
            name = library.name if module == library.plain else module
            return f"{name} is not installed ({how}, or guarddb's test extra)"
    return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # refused by an import hook; None in sys.modules
        return False


# -- the bodies ------------------------------------------------------------------------------

#: Each scenario's body: its module in this package, its function, and whether it is one of
#: DESIGN.md's, run with the connect arguments alone (else it gets the :class:`Context`).
_BODIES: dict[str, tuple[str, str, bool]] = {
    "shared_cursor": ("threads", "shared_cursor", True),
    "shared_cursor_pymysql": ("threads", "shared_cursor", True),
    "greenlets_shared_cursor": ("greenlets", "greenlets_shared_cursor", False),
    "fork_shared": ("fork", "fork_shared", True),
    "fork_shared_pymysql": ("fork", "fork_shared", True),
    "fork_child_close": ("fork", "fork_child_close", True),
    "fork_child_close_pymysql": ("fork", "fork_child_close", True),
    "sscursor_pending": ("sscursor", "sscursor_pending", True),
    "celery_prefork": ("celery_prefork", "celery_prefork", False),
    "thread_pool_leak": ("leaks", "thread_pool_leak", False),
    "idle_pool": ("idle_pool", "idle_pool", False),
}


def body(name: str) -> Callable[[Context], None]:
    """Scenario ``name``'s body, its module imported now (in the child that runs it)."""
    module, function, classic = _BODIES[name]
    found = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    return _classic(found) if classic else found


def _classic(
    body: Callable[[Any, dict[str, Any], Recorder], None],
) -> Callable[[Context], None]:
    """A DESIGN.md scenario's body, run with the connect arguments alone."""

    def run_body(ctx: Context) -> None:
        body(ctx.db, ctx.connect_args, ctx.rec)

    return run_body
