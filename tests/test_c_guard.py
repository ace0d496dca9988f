"""The C guard on its own: slots, nesting, fork generation, socket neutering by identity."""

from __future__ import annotations

import gc
import os
import socket
import threading

import pytest

from guarddb._guard import ffi, lib
from guarddb.core.guard import live_slots

from .helpers import in_forked_child


def _me() -> int:
    return threading.get_ident()


@pytest.fixture
def slot():
    taken = lib.guard_slot_new(_me())
    assert taken != ffi.NULL
    yield taken
    lib.guard_slot_free(taken)


def test_slot_belongs_to_its_creator(slot):
    assert slot.owner == _me() == lib.guard_thread_id()
    assert slot.busy == 0


def test_nested_enters_hold_until_the_last_leave(slot):
    assert lib.guard_enter_as(slot, 0, _me()) == lib.GUARD_OK
    assert lib.guard_enter_as(slot, 0, _me()) == lib.GUARD_OK
    lib.guard_leave(slot)
    assert slot.busy == _me()
    lib.guard_leave(slot)
    assert slot.busy == 0


def test_another_thread_is_busy_out_while_one_is_inside(slot):
    assert lib.guard_enter_as(slot, 0, _me()) == lib.GUARD_OK
    seen = []
    thread = threading.Thread(target=lambda: seen.append(lib.guard_enter_as(slot, 0, _me())))
    thread.start()
    thread.join()
    assert seen == [lib.GUARD_BUSY]
    lib.guard_leave(slot)


def test_strict_flag_refuses_a_non_owner_even_when_free(slot):
    seen = []

    def other():
        seen.append(lib.guard_enter_as(slot, lib.GUARD_STRICT, _me()))
        seen.append(lib.guard_adopt(slot, _me()))
        seen.append(lib.guard_enter_as(slot, lib.GUARD_STRICT, _me()))
        lib.guard_leave(slot)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [lib.GUARD_NOT_OWNER, lib.GUARD_OK, lib.GUARD_OK]
    assert lib.guard_enter_as(slot, lib.GUARD_STRICT, _me()) == lib.GUARD_NOT_OWNER


def test_enter_without_an_identity_is_the_os_thread(slot):
    assert lib.guard_enter_mode(slot) == lib.GUARD_OK
    assert slot.busy == threading.get_ident() == lib.guard_thread_id()
    assert lib.guard_enter_as(slot, 0, threading.get_ident()) == lib.GUARD_OK  # nested
    lib.guard_leave(slot)
    lib.guard_leave(slot)
    assert slot.busy == 0


def test_enter_mode_takes_the_flags_the_slot_was_given(slot):
    # The statement path's one-argument enter: a new slot enters with no flags; strict
    # flags, once set, refuse a non-owner; the greenlet form takes the identity given.
    seen = []

    def other():
        seen.append(lib.guard_enter_mode(slot))
        seen.append(lib.guard_enter_mode_as(slot, 12345))

    assert lib.guard_enter_mode(slot) == lib.GUARD_OK
    lib.guard_leave(slot)
    lib.guard_set_flags(slot, lib.GUARD_STRICT)
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [lib.GUARD_NOT_OWNER, lib.GUARD_NOT_OWNER]
    assert lib.guard_enter_mode(slot) == lib.GUARD_OK  # the owner
    assert slot.busy == _me()
    lib.guard_leave(slot)
    lib.guard_set_flags(slot, lib.GUARD_TIMED)  # mutex mode: when the holder got in
    assert lib.guard_enter_mode_as(slot, 12345) == lib.GUARD_OK
    assert slot.busy == 12345 and slot.held_since_ns > 0
    lib.guard_leave(slot)


def test_disown_from_clears_only_the_owner_it_names(slot):
    # An ended owner's connection is disowned unless another adopted it meanwhile.
    assert lib.guard_adopt(slot, 7) == lib.GUARD_OK
    assert lib.guard_disown_from(slot, 8) == 0 and slot.owner == 7
    assert lib.guard_disown_from(slot, 7) == 1 and slot.owner == 0
    assert lib.guard_disown_from(slot, 0) == 0  # nobody owns it: nothing to clear


def test_identities_come_from_python_not_the_os_thread(slot):
    # Two greenlets of one OS thread are two callers: the guard compares what it is handed.
    first, second = 1, 2
    assert lib.guard_enter_as(slot, 0, first) == lib.GUARD_OK
    assert lib.guard_enter_as(slot, 0, second) == lib.GUARD_BUSY
    assert lib.guard_adopt(slot, second) == lib.GUARD_BUSY
    assert lib.guard_leave(slot) == 0  # nobody was waiting
    assert lib.guard_adopt(slot, second) == lib.GUARD_OK
    assert lib.guard_enter_as(slot, lib.GUARD_STRICT, first) == lib.GUARD_NOT_OWNER
    assert lib.guard_enter_as(slot, lib.GUARD_STRICT, second) == lib.GUARD_OK
    lib.guard_wait_begin(slot)  # a greenlet waits: the leave says so
    assert lib.guard_leave(slot) == 1
    lib.guard_wait_end(slot)


def test_release_on_behalf_of_the_holder_from_another_thread(slot):
    lib.guard_enter_as(slot, 0, _me())
    holder = _me()
    thread = threading.Thread(target=lambda: lib.guard_release(slot, holder))
    thread.start()
    thread.join()
    assert slot.busy == 0


def test_fork_generation_marks_every_slot_forked(slot):
    assert lib.guard_state(slot) == lib.GUARD_OK
    assert in_forked_child(lambda: [lib.guard_state(slot), lib.guard_enter_as(slot, 0, _me())]) == [
        lib.GUARD_FORKED,
        lib.GUARD_FORKED,
    ]
    assert lib.guard_enter_as(slot, 0, _me()) == lib.GUARD_OK
    lib.guard_leave(slot)


def test_slot_busy_in_a_vanished_thread_is_free_in_the_child(slot):
    entered, done = threading.Event(), threading.Event()

    def hold():
        lib.guard_enter_as(slot, 0, _me())
        entered.set()
        done.wait(30)
        lib.guard_leave(slot)

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait(30)
    try:
        assert in_forked_child(lambda: int(slot.busy)) == 0
    finally:
        done.set()
        thread.join()


def test_child_points_a_watched_socket_at_dev_null(slot):
    left, right = socket.socketpair()
    try:
        lib.guard_set_fd(slot, left.fileno())
        fd = left.fileno()
        assert in_forked_child(lambda: os.readlink(f"/proc/self/fd/{fd}")) == "/dev/null"
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    finally:
        left.close()
        right.close()


def test_a_reused_descriptor_number_is_left_alone(slot, tmp_path):
    left, right = socket.socketpair()
    fd = left.fileno()
    lib.guard_set_fd(slot, fd)
    left.close()  # closed behind the guard's back: the number gets reused
    right.close()
    path = tmp_path / "unrelated.log"
    reused = os.open(path, os.O_CREAT | os.O_WRONLY)
    try:
        if reused != fd:
            os.dup2(reused, fd)
        assert in_forked_child(lambda: os.readlink(f"/proc/self/fd/{fd}")) == str(path)
    finally:
        os.close(reused)
        if reused != fd:
            os.close(fd)


def test_forgotten_socket_is_left_alone(slot):
    left, right = socket.socketpair()
    try:
        lib.guard_set_fd(slot, left.fileno())
        lib.guard_set_fd(slot, -1)
        fd = left.fileno()
        assert in_forked_child(lambda: os.readlink(f"/proc/self/fd/{fd}")).startswith("socket:")
    finally:
        left.close()
        right.close()


def test_slots_are_reused_and_grow_past_a_chunk():
    before = live_slots()
    taken = [lib.guard_slot_new(_me()) for _ in range(3000)]
    assert live_slots() == before + 3000
    assert len({int(ffi.cast("uintptr_t", s)) for s in taken}) == 3000
    for s in taken:
        lib.guard_slot_free(s)
    assert live_slots() == before


def test_connections_give_their_slots_back(connect_args):
    import guarddb

    gc.collect()
    before = live_slots()
    for _ in range(200):
        guarddb.connect(**connect_args).close()
    conns = [guarddb.connect(**connect_args) for _ in range(5)]
    assert live_slots() == before + 5
    del conns
    gc.collect()
    assert live_slots() == before
