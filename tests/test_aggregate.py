"""Counting batches as transitions (vmx/aggregate.py) across many batches of one run: the
transitions a run has checked carry over from batch to batch, and every count, histogram, per-exit
value and simulated time stays exactly the field-at-a-time reference's (issue 15.2)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmxsim_server.vmx import ExitRecord, Vcpu, aggregate
from vmxsim_server.vmx.engine import BatchStats, Engine
from vmxsim_server.vmx.fields import BY_NAME
from vmxsim_server.vmx.l0 import available_l0_models, load_l0
from vmxsim_server.vmx.latency import MODES, LatencyModel
from vmxsim_server.vmx.mixes import load_mix, synthesize
from vmxsim_server.vmx.plans import INITIAL_STATE, PlanTable, Row
from vmxsim_server.vmx.profiles import available_profiles, load_profile
from vmxsim_server.vmx.records import ExitBatch
from vmxsim_server.vmx.reference import ReferenceResult, run_reference

REASONS = [0, 1, 7, 10, 12, 28, 30, 31, 32, 44, 48, 49, 52, 56, 77]
SETTINGS = [(m, None) for m in MODES] + [
    (m, l0)
    for l0 in available_l0_models()
    for m in (("nested", "nested-shadow") if load_l0(l0).shadow_available else ("nested",))
]
EXIT_INFORMATION = [
    BY_NAME[name].bit
    for name in (
        "VM_EXIT_REASON", "EXIT_QUALIFICATION", "VM_EXIT_INSTRUCTION_LEN", "VM_EXIT_INTR_INFO",
        "GUEST_PHYSICAL_ADDRESS", "GUEST_RIP",
    )
]  # fmt: skip


def _engine(profile: str, mode: str, l0: str | None = None) -> Engine:
    return Engine(Vcpu(), load_profile(profile), LatencyModel(mode, l0=l0))


def _records(reasons: list[int], rips: str) -> list[ExitRecord]:
    """Exits with every column filled; RIPs on every exit, none, or every third."""
    given = {"all": lambda i: True, "none": lambda i: False, "some": lambda i: i % 3 == 0}[rips]
    return [
        ExitRecord(
            reason=r, rip=0x1000 + 16 * i if given(i) else 0, qualification=i, info2=i & 0xFF,
            intr_info=r, error_code=i & 7, guest_physical_address=0x5000 + i,
            instruction_len=1 + i % 3,
        )
        for i, r in enumerate(reasons)
    ]  # fmt: skip


def _batches(records: list[ExitRecord], sizes: list[int]) -> list[list[ExitRecord]]:
    out, start = [], 0
    for size in sizes:
        out.append(records[start : start + size])
        start += size
    out.append(records[start:])
    return out


def _assert_same_totals(
    totals: BatchStats, ref: ReferenceResult, profile: str, reasons: list[int]
) -> None:
    handler = load_profile(profile).handler
    ran = [i for i, r in enumerate(reasons) if not handler(r).panic]
    assert totals.counters == ref.counters
    assert totals.exits == len(ran)
    assert dict(totals.panics) == dict(ref.panics)
    assert dict(totals.other) == dict(ref.other)
    assert dict(totals.l0_by_cause) == dict(ref.l0_by_cause)
    assert totals.vmcs02_rebuilds == ref.vmcs02_rebuilds
    assert totals.l0_exits == sum(ref.per_exit_l0_exits)
    assert totals.simulated_seconds == pytest.approx(ref.simulated_seconds)
    assert totals.l0_seconds == pytest.approx(ref.l0_seconds)
    assert totals.vmread_hist == Counter(ref.per_exit_vmread[i] for i in ran)
    assert totals.vmwrite_hist == Counter(ref.per_exit_vmwrite[i] for i in ran)
    if totals.l0_model is not None:
        assert totals.l0_hist == Counter(ref.per_exit_l0_exits[i] for i in ran)
    latency = sorted(totals.latency_hist.items())
    expected = sorted(Counter(ref.per_exit_seconds[i] for i in ran).items())
    assert [n for _, n in latency] == [n for _, n in expected]
    assert [s for s, _ in latency] == pytest.approx([s for s, _ in expected])
    by_reason: dict[int, list[int]] = {}
    for i in ran:
        row = by_reason.setdefault(reasons[i], [0, 0, 0])
        row[0] += 1
        row[1] += ref.per_exit_vmread[i]
        row[2] += ref.per_exit_vmwrite[i]
    got = {r: [t.exits, t.vmread, t.vmwrite] for r, t in totals.by_reason.items()}
    assert got == by_reason


@settings(max_examples=60, deadline=None)
@given(
    profile=st.sampled_from(available_profiles()),
    setting=st.sampled_from(SETTINGS),
    parts=st.lists(
        st.tuples(
            st.lists(st.sampled_from(REASONS), min_size=1, max_size=5),
            st.integers(min_value=1, max_value=60),
        ),
        min_size=1,
        max_size=4,
    ),
    sizes=st.lists(st.integers(min_value=0, max_value=150), max_size=8),
    resume_after=st.one_of(st.none(), st.integers(min_value=0, max_value=8)),
    rips=st.sampled_from(["all", "none", "some"]),
)
def test_a_run_of_many_batches_counts_exactly_what_the_reference_counts(
    profile, setting, parts, sizes, resume_after, rips
) -> None:
    """Periodic stretches whose reasons change from part to part (later parts bring reasons, and
    so states, that earlier batches' transitions do not know), cut into batches of any size, one
    of them optionally resumed in a new engine from the earlier one's state (a snapshot)."""
    mode, l0 = setting
    reasons = [r for body, repeat in parts for r in body * repeat]
    records = _records(reasons, rips)
    engine = _engine(profile, mode, l0)
    per_exit: list[tuple[int, int, float]] = []
    for number, batch in enumerate(_batches(records, sizes)):
        if number == resume_after:
            resumed = _engine(profile, mode, l0)
            resumed.resume_from(engine.totals, engine.cache_state)
            engine = resumed
        stats = engine.run_batch(ExitBatch.from_records(batch), per_exit=True)
        per_exit += zip(
            stats.per_exit_vmread, stats.per_exit_vmwrite, stats.per_exit_seconds, strict=True
        )
    ref = run_reference(load_profile(profile), LatencyModel(mode, l0=l0), records)
    _assert_same_totals(engine.totals, ref, profile, reasons)
    assert [(r, w) for r, w, _ in per_exit] == list(
        zip(ref.per_exit_vmread, ref.per_exit_vmwrite, strict=True)
    )
    assert [s for _, _, s in per_exit] == pytest.approx(ref.per_exit_seconds)
    if resume_after is None and rips == "all":  # the same VMCS: exit information and GUEST_RIP
        values = engine.vcpu.current.values
        assert [values[bit] for bit in EXIT_INFORMATION] == [
            ref.values[bit] for bit in EXIT_INFORMATION
        ]


def test_a_steady_run_walks_no_exit_after_its_first_batch(monkeypatch) -> None:
    """Once every reason has been seen, each batch is counted from the transitions the run has
    checked: array operations over its exits, Python work only per pair not met before."""
    records = list(synthesize(load_mix("linux-boot"), 40_000, seed=5))
    engine = _engine("kvm", "nested")
    engine.run_batch(ExitBatch.from_records(records[:20_000]))
    walked: list[int] = []
    walk = aggregate._walk

    def counting_walk(table, row, reasons, out, seen):  # type: ignore[no-untyped-def]
        walked.append(len(reasons))
        return walk(table, row, reasons, out, seen)

    monkeypatch.setattr(aggregate, "_walk", counting_walk)
    for start in range(20_000, 40_000, 4096):
        engine.run_batch(ExitBatch.from_records(records[start : start + 4096]))
    assert walked == []
    ref = run_reference(load_profile("kvm"), LatencyModel("nested"), records)
    assert engine.totals.counters == ref.counters


def test_runs_of_more_distinct_reasons_than_one_table_holds_stay_exact() -> None:
    """Batches whose reasons add up to more codes than ``Transitions`` keeps (256) start the
    table again; a batch of more distinct reasons than that is walked."""
    batches = [[r % 200 for r in range(1000)], [200 + r % 200 for r in range(1000)]]
    batches += [[r % 300 for r in range(1200)], [r % 200 for r in range(600)]]
    engine = _engine("haxm-cache", "nested")
    per_exit: list[int] = []
    for reasons in batches:
        per_exit += engine.run_batch(ExitBatch(reasons), per_exit=True).per_exit_vmread
    everything = [r for reasons in batches for r in reasons]
    ref = run_reference(
        load_profile("haxm-cache"), LatencyModel("nested"), [ExitRecord(r) for r in everything]
    )
    _assert_same_totals(engine.totals, ref, "haxm-cache", everything)
    assert per_exit == ref.per_exit_vmread


@pytest.mark.parametrize("since_ept", [0, 1, 255, 256, 257, 3000])
def test_the_last_ept_exits_guest_physical_address_is_kept_however_far_back(since_ept) -> None:
    reasons = [48, 10, 49] + [12] * since_ept if since_ept else [48, 10, 49]
    records = _records(reasons, "all")
    engine = _engine("kvm", "native")
    engine.run_batch(ExitBatch.from_records(records))
    gpa = BY_NAME["GUEST_PHYSICAL_ADDRESS"].bit
    assert engine.vcpu.current.values[gpa] == 0x5000 + 2
    engine.run_batch(ExitBatch.from_records(_records([12, 30], "all")))  # no EPT exit: kept
    assert engine.vcpu.current.values[gpa] == 0x5000 + 2


def _walked(table: PlanTable, row: Row, reasons: list[int]) -> tuple[list[int], Row]:
    indices = []
    for reason in reasons:
        plan = table.plan(row, reason)
        indices.append(plan.index)
        row = plan.next_row
    return indices, row


@pytest.mark.parametrize("profile", ["haxm-cache", "kvm"])
def test_transitions_are_checked_not_assumed(profile) -> None:
    """Told (wrongly) that every reason was seen, from the initial state: the transitions taken
    from the first row do not close (each exit still adds state), so their checks fail and the
    stretch is walked; a batch started again from the initial state does not use the steady
    transitions the first call ended with. Either way, every exit gets the plan a walk gives it."""
    latency = LatencyModel("nested")
    table = PlanTable(load_profile(profile), latency, latency.l0_for(load_profile(profile)))
    initial = table.row_of(INITIAL_STATE)
    reasons = [r.reason for r in synthesize(load_mix("linux-boot"), 3000, seed=2)]
    seen, steady = set(reasons), aggregate.Transitions()
    for _ in range(2):
        counted = aggregate.plan_indices(table, initial, reasons, seen, steady)
        expected, expected_end = _walked(table, initial, reasons)
        assert counted.indices.tolist() == expected and counted.row is expected_end
        assert counted.last == expected[-1]
        assert (
            counted.counts.tolist() == np.bincount(expected, minlength=len(counted.counts)).tolist()
        )


@pytest.mark.parametrize("want_indices", [True, False])
def test_a_batch_from_a_closed_row_is_counted_by_reason(want_indices) -> None:
    """After a warm-up every reason leads from the run's row back to it: a batch is counted from
    its reasons alone, with the plan of every exit only when asked for."""
    latency = LatencyModel("native")
    table = PlanTable(load_profile("kvm"), latency, None)
    reasons = [r.reason for r in synthesize(load_mix("linux-boot"), 5000, seed=3)]
    seen, steady = set(), aggregate.Transitions()
    warm = aggregate.plan_indices(table, table.row_of(INITIAL_STATE), reasons[:2500], seen, steady)
    counted = aggregate.plan_indices(table, warm.row, reasons[2500:], seen, steady, want_indices)
    expected, expected_end = _walked(table, warm.row, reasons[2500:])
    assert counted.row is expected_end is warm.row and counted.last == expected[-1]
    assert counted.counts.tolist() == np.bincount(expected, minlength=len(counted.counts)).tolist()
    assert (counted.indices.tolist() if want_indices else counted.indices) == (
        expected if want_indices else None
    )
