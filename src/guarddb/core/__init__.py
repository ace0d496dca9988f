"""guarddb's driver-neutral policy: modes, identity, the guard's Python face, errors,
violations and the lifecycle.

It knows no driver and no connection or cursor class: each driver's layer
(:mod:`guarddb.drivers`) hands in its error classes and gives its connections
the few methods :class:`guarddb.core.guard.GuardedConnection` lists.  Below it
is only the C guard (``guarddb._guard``).
"""
