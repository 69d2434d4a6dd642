"""What L0 does for each L1 instruction (issue 13.6), and the aggregating engine against the
field-at-a-time reference for every profile, mode and L0 model (issue 15.2)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmxsim_server.vmx import ExitRecord, InvalidArgument, Vcpu
from vmxsim_server.vmx.engine import Engine
from vmxsim_server.vmx.fields import BY_NAME
from vmxsim_server.vmx.l0 import AFTER_ENTRY, NEW, L0Exit, available_l0_models, load_l0
from vmxsim_server.vmx.latency import MODES, LatencyModel
from vmxsim_server.vmx.profiles import Instruction, Section, available_profiles, load_profile
from vmxsim_server.vmx.records import ExitBatch
from vmxsim_server.vmx.reference import run_reference
from vmxsim_server.vmx.summary import summary

MODEL = load_l0("kvm-4.17")
SHADOWED = BY_NAME["GUEST_RIP"]  # in KVM's shadow write list
NOT_SHADOWED = BY_NAME["HOST_CR3"]  # not: HAXM's per-entry host-state writes


def test_vmwrite_to_a_shadowed_field_does_not_exit() -> None:
    walk = L0Exit(MODEL, shadow=True)
    walk.vmwrite(SHADOWED)
    assert (walk.exits, walk.native_writes, walk.state.dirty) == (0, 1, False)


def test_vmwrite_to_a_field_l0_does_not_shadow_exits_once_and_dirties_vmcs12() -> None:
    walk = L0Exit(MODEL, shadow=True)
    walk.vmwrite(NOT_SHADOWED)
    assert (walk.exits, dict(walk.by_cause), walk.state.dirty) == (1, {"VMWRITE": 1}, True)


def test_the_next_vmresume_rebuilds_vmcs02_and_the_one_after_does_not() -> None:
    walk = L0Exit(MODEL, shadow=True)
    walk.vmwrite(NOT_SHADOWED)
    walk.entry(launch=False)
    assert walk.rebuilds == 1 and walk.state == AFTER_ENTRY
    after = L0Exit(MODEL, shadow=True, state=walk.state)
    after.entry(launch=False)
    assert after.rebuilds == 0 and after.by_cause["VMRESUME"] == 1


def test_vmxoff_frees_and_vmxon_makes_a_new_vmcs02_that_the_next_entry_rebuilds() -> None:
    walk = L0Exit(MODEL, shadow=False)
    walk.vmclear()
    walk.vmxoff()
    walk.vmxon()
    assert walk.state.vmcs02 == NEW and not walk.state.current
    walk.vmptrld()  # a new pointer after VMCLEAR: full load, vmcs12 dirty
    assert walk.state.current and walk.state.dirty
    walk.entry(launch=True)
    assert walk.rebuilds == 1 and walk.by_cause["VMLAUNCH"] == 1 and walk.exits == 5


def test_vmptrld_of_the_current_vmcs12_costs_its_own_price_and_dirties_nothing() -> None:
    walk = L0Exit(MODEL, shadow=False)
    walk.vmptrld()
    assert walk.exits == 1 and not walk.state.dirty


def test_msr_bitmap_cr_and_dr_rules() -> None:
    walk = L0Exit(MODEL, shadow=False)
    passthrough = next(iter(MODEL.msr_read_passthrough))
    walk.other(Instruction("RDMSR", passthrough, 1, "test"))
    assert walk.exits == 0
    walk.other(Instruction("WRMSR", "IA32_LSTAR", 2, "test"))
    walk.other(Instruction("MOV_TO_CR", "CR3", 1, "test"))  # EPT: no CR3 exiting
    assert dict(walk.by_cause) == {"WRMSR": 2}
    dr = L0Exit(MODEL, shadow=False)
    dr.other(Instruction("MOV_FROM_DR", "DR7", 3, "test"))
    assert dr.by_cause["MOV_DR"] == 1  # KVM stops DR exiting until its next exit
    dr.vmread(NOT_SHADOWED)
    dr.other(Instruction("MOV_FROM_DR", "DR6", 1, "test"))
    assert dr.by_cause["MOV_DR"] == 2  # that VMREAD's exit re-armed it


def _engine(profile_name: str, mode: str, l0: str | None = None) -> Engine:
    return Engine(Vcpu(), load_profile(profile_name), LatencyModel(mode, l0=l0))


def test_a_nested_summary_reports_l0_exits_by_cause_and_native_reports_none() -> None:
    records = [ExitRecord(reason=10, instruction_len=2)] * 50
    nested = _engine("haxm-legacy", "nested").run_batch(ExitBatch.from_records(records))
    doc = summary(nested, "haxm-legacy", "nested")
    assert doc["l0"]["model"] == load_profile("haxm-legacy").default_l0
    assert doc["l0"]["exits"] == sum(doc["l0"]["by_cause"].values())
    assert doc["l0"]["by_cause"]["VMREAD"] == doc["instructions"]["vmread"]  # no shadowing
    assert doc["l0"]["vmcs02_rebuilds"] == 50  # HAXM's VMXOFF/VMXON per run: a new vmcs02
    native = _engine("haxm-legacy", "native").run_batch(ExitBatch.from_records(records))
    assert summary(native, "haxm-legacy", "native")["l0"] is None


def test_a_panicking_handler_is_counted_apart_and_priced_at_nothing() -> None:
    base = load_profile("kvm")
    profile = replace(base, handlers={**base.handlers, 10: replace(base.handler(10), panic=True)})
    engine = Engine(Vcpu(), profile, LatencyModel("nested"))
    stats = engine.run_batch(ExitBatch([10, 12, 10], instruction_len=[2, 1, 2]), per_exit=True)
    assert (stats.exits, dict(stats.panics)) == (1, {10: 2})
    assert stats.per_exit_seconds[0] == stats.per_exit_seconds[2] == 0.0
    assert summary(stats, "kvm", "nested")["panics"] == {"CPUID": 2}
    assert 10 not in stats.by_reason


def test_other_instructions_are_counted_under_instructions_other() -> None:
    base = load_profile("kvm")
    row = Instruction("WRMSR", "IA32_LSTAR", 2, "test row")
    profile = replace(base, before_entry=replace(base.before_entry, instructions=(row,)))
    stats = Engine(Vcpu(), profile, LatencyModel("nested")).run_batch(ExitBatch([12] * 7))
    doc = summary(stats, "kvm", "nested")
    assert doc["instructions"]["other"] == {"WRMSR": 14}
    assert doc["l0"]["by_cause"]["WRMSR"] == 14
    assert set(doc["instructions"]) >= {"vmread", "vmwrite", "other"}


def test_vmcs_load_rows_run_per_reload() -> None:
    base = load_profile("haxm-legacy")
    row = Instruction("MOV_TO_CR", "CR4", 1, "cpu_vmxroot_enter")
    runs = []
    for load in (Section(), Section(instructions=(row,))):
        profile = replace(base, vmcs_load=load)
        runs.append(Engine(Vcpu(), profile, LatencyModel("native")).run_batch(ExitBatch([12] * 5)))
    without, with_row = runs
    assert with_row.other["MOV_TO_CR"] - without.other["MOV_TO_CR"] == with_row.counters.vmxon


REASONS = [0, 1, 7, 10, 12, 28, 30, 31, 32, 44, 48, 49, 52, 56, 77]
SETTINGS = [(m, None) for m in MODES] + [
    (m, l0)
    for l0 in available_l0_models()
    for m in (("nested", "nested-shadow") if load_l0(l0).shadow_available else ("nested",))
]


@settings(max_examples=60, deadline=None)
@given(
    profile=st.sampled_from(available_profiles()),
    setting=st.sampled_from(SETTINGS),
    head=st.lists(st.sampled_from(REASONS), max_size=40),
    body=st.lists(st.sampled_from(REASONS), min_size=1, max_size=6),
    repeat=st.integers(min_value=0, max_value=80),
    split=st.integers(min_value=0, max_value=400),
)
def test_the_aggregating_engine_counts_exactly_what_the_reference_counts(
    profile, setting, head, body, repeat, split
) -> None:
    mode, l0 = setting
    reasons = head + body * repeat  # long periodic tails take the aggregated path
    records = [ExitRecord(reason=r, instruction_len=1 + i % 3) for i, r in enumerate(reasons)]
    engine = _engine(profile, mode, l0)
    first = engine.run_batch(ExitBatch.from_records(records[:split]), per_exit=True)
    second = engine.run_batch(ExitBatch.from_records(records[split:]), per_exit=True)
    ref = run_reference(load_profile(profile), LatencyModel(mode, l0=l0), records)
    totals = engine.totals
    assert totals.counters == ref.counters
    assert first.per_exit_vmread + second.per_exit_vmread == ref.per_exit_vmread
    assert first.per_exit_vmwrite + second.per_exit_vmwrite == ref.per_exit_vmwrite
    assert first.per_exit_seconds + second.per_exit_seconds == pytest.approx(ref.per_exit_seconds)
    assert totals.simulated_seconds == pytest.approx(ref.simulated_seconds)
    assert dict(totals.other) == dict(ref.other)
    assert dict(totals.l0_by_cause) == dict(ref.l0_by_cause)
    assert totals.vmcs02_rebuilds == ref.vmcs02_rebuilds
    assert totals.l0_seconds == pytest.approx(ref.l0_seconds)
    assert dict(totals.panics) == dict(ref.panics)
    ran = [n for n, r in zip(ref.per_exit_vmread, reasons, strict=True)
           if not load_profile(profile).handler(r).panic]  # fmt: skip
    assert totals.vmread_hist == __import__("collections").Counter(ran)
    rip = BY_NAME["GUEST_RIP"].bit
    if records:
        assert engine.vcpu.current.values[rip] - 0xFFF0 == ref.values[rip]


def test_columns_may_be_arrays_or_buffers() -> None:
    import array

    reasons = [10, 12, 48] * 100
    as_list = _engine("kvm", "nested").run_batch(ExitBatch(reasons, rip=[0x1000] * 300))
    columns = ExitBatch(
        array.array("I", reasons),  # type: ignore[arg-type]
        rip=np.full(300, 0x1000, dtype=np.uint64),  # type: ignore[arg-type]
    )
    as_arrays = _engine("kvm", "nested").run_batch(columns)
    assert as_arrays.counters == as_list.counters and as_arrays.exits == 300


@pytest.mark.parametrize(
    ("column", "values", "bad"),
    [
        ("reason", np.array([10, 1 << 16], dtype=np.uint32), "65536"),
        ("rip", np.array([1, -5], dtype=np.int64), "-5"),
        ("intr_info", np.array([1 << 32], dtype=np.uint64), "4294967296"),
        ("qualification", [1.5], "1.5"),
    ],
)
def test_array_columns_are_range_checked(column: str, values: object, bad: str) -> None:
    n = len(values)  # type: ignore[arg-type]
    batch = ExitBatch([10] * n)
    setattr(batch, column, values)
    with pytest.raises(InvalidArgument, match=f"{column} value {bad} is outside"):
        _engine("kvm", "native").run_batch(batch)


def test_a_batch_of_many_distinct_reasons_is_walked_exactly() -> None:
    reasons = [r % 700 for r in range(3000)]  # 700 reasons: more than the pair table takes
    records = [ExitRecord(reason=r) for r in reasons]
    engine = _engine("kvm", "nested")
    stats = engine.run_batch(ExitBatch(reasons), per_exit=True)
    ref = run_reference(load_profile("kvm"), LatencyModel("nested"), records)
    assert stats.counters == ref.counters and stats.per_exit_vmread == ref.per_exit_vmread
