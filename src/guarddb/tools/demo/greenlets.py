"""The scenario ``greenlets_shared_cursor`` (DESIGN.md): greenlets sharing one cursor.

The child runs ``gevent.monkey.patch_all()`` before anything else (see
:mod:`guarddb.tools.demo.process`), so this runs as gevent programs do: every
worker a greenlet, all on one OS thread.  A greenlet never overlaps another
inside a call, so mysqlclient 2.3's try-lock has nothing to catch; what goes
wrong is the order: each greenlet yields to the hub between its execute and its
fetch (as a greenlet that logs, or waits for anything, does), and the others
execute on the same cursor meanwhile.
"""

from __future__ import annotations

from .framework import Context

GREENLETS = 8
ROUNDS = 50  # execute + yield + fetchall per greenlet


def greenlets_shared_cursor(ctx: Context) -> None:
    """8 greenlets share one connection and one cursor, yielding between execute and fetchall.

    Each checks that it gets its own number back; an error is counted and the
    greenlet goes on with its next round.
    """
    import gevent
    from gevent import monkey

    if not monkey.is_module_patched("threading"):
        raise RuntimeError("the child was to run gevent.monkey.patch_all() before anything else")
    rec = ctx.rec
    conn = ctx.db.connect(**ctx.connect_args, **ctx.options)
    cursor = conn.cursor()

    def work(number: int) -> None:
        worker = f"greenlet {number}"
        for _ in range(ROUNDS):
            try:
                cursor.execute("SELECT %s", (number,))
                gevent.sleep(0)  # yield to the hub: the other greenlets run meanwhile
                rows = cursor.fetchall()
            except Exception as exc:
                rec.error(worker, exc)
                continue
            rec.check(worker, rows, ((number,),))
        rec.done(worker)

    for number in range(1, GREENLETS + 1):
        rec.add(f"greenlet {number}")
    greenlets = [gevent.spawn(work, number) for number in range(1, GREENLETS + 1)]
    gevent.joinall(greenlets, timeout=max(ctx.remaining() - 1.0, 0.5))
    conn.close()
