"""The VMCS cache's rules (cache.py), field at a time."""

from __future__ import annotations

import pytest

from vmxsim_server.vmx import StateError
from vmxsim_server.vmx.cache import CachePolicy, VmcsCache
from vmxsim_server.vmx.fields import BY_NAME, FIELDS

F = BY_NAME


def make(read=(), write=(), changed=()) -> VmcsCache:
    policy = CachePolicy(frozenset(read), frozenset(write), frozenset(changed))
    return VmcsCache([0] * len(FIELDS), policy)


def test_a_read_hit_issues_no_vmread() -> None:
    cache = make(read=["EXIT_QUALIFICATION"])
    cache.values[F["EXIT_QUALIFICATION"].bit] = 0x181
    assert cache.read(F["EXIT_QUALIFICATION"]) == 0x181
    assert cache.read(F["EXIT_QUALIFICATION"]) == 0x181
    assert (cache.counters.vmread, cache.counters.misses, cache.counters.hits) == (1, 1, 1)


def test_an_uncached_read_always_issues_a_vmread() -> None:
    cache = make()
    cache.read(F["GUEST_RIP"])
    cache.read(F["GUEST_RIP"])
    assert cache.counters.vmread == 2 and cache.counters.hits == 0


def test_a_write_back_write_marks_dirty_and_the_flush_writes_each_dirty_field_once() -> None:
    cache = make(write=["GUEST_RIP", "VM_ENTRY_INTR_INFO_FIELD"])
    cache.write(F["GUEST_RIP"], 1)
    cache.write(F["GUEST_RIP"], 2)
    cache.write(F["VM_ENTRY_INTR_INFO_FIELD"], 0x8000_0020)
    assert cache.counters.vmwrite == 0
    assert cache.values[F["GUEST_RIP"].bit] == 0
    assert cache.flush() == 2
    assert cache.counters.vmwrite == 2
    assert cache.values[F["GUEST_RIP"].bit] == 2


def test_a_cached_write_after_the_flush_is_an_error() -> None:
    cache = make(write=["GUEST_RIP"])
    cache.flush()
    with pytest.raises(StateError, match="after the flush"):
        cache.write(F["GUEST_RIP"], 1)
    cache.vm_exit()
    cache.write(F["GUEST_RIP"], 1)  # allowed again after the next exit


def test_an_exit_invalidates_guest_and_exit_information_but_keeps_control_and_host() -> None:
    names = ["GUEST_RIP", "EXIT_QUALIFICATION", "CPU_BASED_VM_EXEC_CONTROL", "HOST_CR3"]
    cache = make(read=names)
    for name in names:
        cache.read(F[name])
    cache.vm_exit()
    for name in names:
        cache.read(F[name])
    assert cache.counters.misses == 4 + 2
    assert cache.counters.hits == 2


def test_write_if_changed_skips_an_unchanged_value() -> None:
    cache = make(changed=["HOST_CR3"])
    cache.write(F["HOST_CR3"], 0x1000)
    cache.write(F["HOST_CR3"], 0x1000)
    cache.write(F["HOST_CR3"], 0x2000)
    assert cache.counters.vmwrite == 2
    assert cache.counters.hits == 1


def test_a_field_cannot_be_both_write_back_and_write_if_changed() -> None:
    with pytest.raises(StateError):
        CachePolicy(frozenset(), frozenset({"GUEST_RIP"}), frozenset({"GUEST_RIP"}))


def test_xmacro_rows_follow_the_seed_format() -> None:
    policy = CachePolicy(frozenset({"GUEST_RIP"}), frozenset({"VM_ENTRY_INTR_INFO_FIELD"}))
    assert policy.xmacro_rows() == [
        "COMP(0, 1, 32, VM_ENTRY_INTR_INFO_FIELD)",
        "COMP(1, 0, natural, GUEST_RIP)",
    ]
