"""The DESIGN.md failure scenarios, each in a subprocess with a time limit.

With guarddb each must end in its documented GuardError (or be correct), never a
signal, a hang or wrong rows, under whichever mysqlclient runs the tests (2.2
segfaults on the shared cursor without the guard).  Plain mysqlclient's
outcome is asserted where it is deterministic, so these tests would fail
without guarddb.
"""

from __future__ import annotations

import pytest

from guarddb import _scenarios


@pytest.mark.parametrize("name", list(_scenarios.SCENARIOS))
def test_guarded_scenario_ends_in_its_documented_outcome(connect_args, name):
    outcome = _scenarios.run(name, "guarddb", connect_args, timeout=60)
    expected = _scenarios.SCENARIOS[name].expected_guarded
    assert outcome.kind not in ("signal", "hang", "wrong rows"), outcome
    assert _scenarios.matches(name, outcome), (expected, outcome)


def test_plain_sscursor_scenario_is_out_of_sync(connect_args):
    outcome = _scenarios.run("sscursor_pending", "plain", connect_args, timeout=20)
    assert outcome.kind == "commands out of sync", outcome


def test_plain_fork_close_scenario_loses_the_parent_session(connect_args):
    outcome = _scenarios.run("fork_child_close", "plain", connect_args, timeout=20)
    assert outcome.kind == "lost connection", outcome


def test_plain_shared_cursor_scenario_goes_wrong(connect_args):
    outcome = _scenarios.run("shared_cursor", "plain", connect_args, timeout=20)
    assert outcome.kind not in ("correct", "clean error"), outcome
