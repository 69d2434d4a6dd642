"""The per-reason exit table (reports/exit_table.py) folds a batch by counting its distinct
per-exit results; it must give what folding the exits one at a time gives: the same groups in
the same order, the same samples, VMREAD and VMWRITE totals, minima and maxima, and the same
simulated seconds up to float rounding (a value times its count instead of that many additions)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from vmxsim_client.reports.exit_table import ExitTable, ReasonTimes
from vmxsim_client.reports.per_exit import JoinedBatch, reason_label

_RESULTS = st.sampled_from([(1.5e-6, 9, 3), (3.1e-5, 32, 22), (7.0e-7, 6, 1), (2.2e-6, 9, 4)])


@st.composite
def _batch(draw: st.DrawFn, first: int) -> JoinedBatch:
    n = draw(st.integers(0, 60))
    reasons = draw(st.lists(st.sampled_from([0, 1, 10, 12, 30, 48, 49]), min_size=n, max_size=n))
    results = draw(st.lists(_RESULTS, min_size=n, max_size=n))
    who = draw(st.sampled_from(["none", "vcpu", "both"]))
    vcpu = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)) if who != "none" else []
    vm = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)) if who == "both" else []
    return JoinedBatch(
        first, reasons, [0] * n, [], None,
        [r[1] for r in results], [r[2] for r in results], [r[0] for r in results], vcpu, vm,
    )  # fmt: skip


def _one_at_a_time(batches: list[JoinedBatch]) -> tuple[dict, dict]:
    """The fold exit by exit (the table's rule before it counted distinct results)."""
    totals: dict[str, ReasonTimes] = {}
    groups: dict[tuple[int, int], dict[str, ReasonTimes]] = {}
    for batch in batches:
        n = len(batch)
        for i in range(n):
            name = reason_label(batch.reason[i])
            who = (batch.vm[i] if batch.vm else 0, batch.vcpu[i] if batch.vcpu else 0)
            for table in (totals, groups.setdefault(who, {})):
                times = table.setdefault(name, ReasonTimes())
                times.add(batch.seconds[i], batch.vmread[i], batch.vmwrite[i])
    return totals, groups


def _same(a: dict[str, ReasonTimes], b: dict[str, ReasonTimes]) -> None:
    assert list(a) == list(b)
    for name in a:
        x, y = a[name], b[name]
        assert (x.samples, x.vmread, x.vmwrite) == (y.samples, y.vmread, y.vmwrite)
        assert (x.min_seconds, x.max_seconds) == (y.min_seconds, y.max_seconds)
        assert math.isclose(x.seconds, y.seconds, rel_tol=1e-12)
        assert y.min_seconds <= x.avg_seconds <= y.max_seconds


@settings(max_examples=300, deadline=None)
@given(data=st.data(), count=st.integers(1, 4))
def test_counting_distinct_results_folds_as_exit_by_exit(data: st.DataObject, count: int) -> None:
    batches = [data.draw(_batch(first=k)) for k in range(count)]
    table = ExitTable()
    for batch in batches:
        table.add(batch)
    totals, groups = _one_at_a_time(batches)
    _same(table.all, totals)
    assert list(table.by_vcpu) == list(groups)
    for who in groups:
        _same(table.by_vcpu[who], groups[who])
