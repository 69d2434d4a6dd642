"""Counting a batch of exits as plan transitions instead of one exit at a time.

The state an exit leaves is a function of the state it starts in and its reason. Once that
function no longer depends on the state (every reason seen, so the surviving cache state has
stopped growing; L0's state is the same after every entry), the plan of exit i depends only on the
reasons of exits i-1 and i. Three ways to count a batch, tried in this order:

1. **One closed row.** When an exit of every reason in the batch leads from the row the batch
   starts in back to that row (the shipped profiles, once their reasons have been seen: every
   state collapses to one), every exit runs from it: the batch is one ``bincount`` over its
   reasons, each count going to that row's plan of the reason. Python work: per distinct reason.
2. **Checked pairs.** A run keeps ``Transitions``: ``T[r]``, the row after an exit of reason r
   (taken from the row a segment starts in), and for every pair (a, b) met so far the plan of b
   from ``T[a]``, kept only once it is checked to lead to ``T[b]`` again. A batch whose first
   exit leads to ``T[r[0]]`` is then array operations: exit i's plan is
   ``pair_plan[code(r[i-1], r[i])]``. Python work: per pair not met before. A pair that fails its
   check clears the table (it is rebuilt from a later row).
3. **Walking.** Otherwise the batch is split where a reason the run has never had appears first
   (its first exit is walked, since it may change the state), and stretches whose state still
   changes are walked exit by exit.

Exactness rests only on the checks (closure of the row, the first exit and every pair used), by
induction over the batch, never on the claim about states above.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .plans import PlanTable, Row

__all__ = ["Counted", "Transitions", "plan_indices"]

_WALK_BELOW = 64
"""Segments this short are walked exit by exit (a check costs more than it saves)."""
_MAX_REASONS = 256
"""More distinct reasons in one segment than this (k*k pair codes) and it is walked instead."""
_NONE = -1


class Transitions:
    """One run's steady transitions: reasons by compact code with the row ``T`` each leads to,
    and the checked plan of each pair of codes (``a * stride + b``; -1 where not checked)."""

    __slots__ = ("_code", "_pair_plan", "_stride", "after", "reasons")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget every transition (the state has moved on from the rows they lead to)."""
        self._code = np.full(0, _NONE, dtype=np.intp)  # reason -> code (intp: fast gathers)
        self.reasons: list[int] = []  # code -> reason
        self.after: list[Row] = []  # code -> T[reason]
        self._stride = 0
        self._pair_plan = np.full(0, _NONE, dtype=np.intp)

    def codes(self, reasons: Any, top: int) -> Any | None:
        """The codes of ``reasons`` (the largest is ``top``), or None if one has no code."""
        if top >= len(self._code):
            return None
        codes = self._code[reasons]
        return None if int(codes.min()) < 0 else codes

    def add(self, table: PlanTable, row: Row, reasons: list[int]) -> bool:
        """Give ``reasons`` codes, each leading to the row its exit from ``row`` leads to;
        False (nothing added) when that would make more than ``_MAX_REASONS`` codes."""
        new = [r for r in reasons if r >= len(self._code) or self._code[r] < 0]
        k = len(self.reasons) + len(new)
        if k > _MAX_REASONS:
            return False
        if new and max(new) >= len(self._code):
            grown = np.full(max(new) + 1, _NONE, dtype=np.intp)  # at most 2**16 reasons
            grown[: len(self._code)] = self._code
            self._code = grown
        for reason in new:
            self._code[reason] = len(self.reasons)
            self.reasons.append(reason)
            self.after.append(table.plan(row, reason).next_row)
        if k > self._stride:
            stride = max(16, 1 << (k - 1).bit_length())
            pairs = np.full((stride, stride), _NONE, dtype=np.intp)
            old = self._stride
            pairs[:old, :old] = self._pair_plan.reshape(old, old)
            self._pair_plan, self._stride = pairs.reshape(-1), stride
        return True

    def leads(self, table: PlanTable, row: Row, reason: int) -> bool:
        """Whether an exit of ``reason`` (which has a code) from ``row`` leads to its ``T``."""
        return table.plan(row, reason).next_row is self.after[int(self._code[reason])]

    def indices(self, table: PlanTable, row: Row, reasons: Any, codes: Any) -> Any | None:
        """The plan index of every exit of ``reasons`` (with their ``codes``) run from ``row``,
        or None when the first exit does not lead to its ``T`` or a new pair fails its check."""
        first = table.plan(row, int(reasons[0]))
        if first.next_row is not self.after[int(codes[0])]:
            return None
        n = len(reasons)
        indices = np.empty(n, dtype=np.intp)
        indices[0] = first.index
        if n == 1:
            return indices
        pair_codes = codes[:-1] * self._stride
        pair_codes += codes[1:]
        pair_plan = self._pair_plan
        found = pair_plan[pair_codes]
        if int(found.min()) < 0:
            after, stride = self.after, self._stride
            for code in np.unique(pair_codes[found < 0]).tolist():
                a, b = divmod(code, stride)
                plan = table.plan(after[a], self.reasons[b])
                if plan.next_row is not after[b]:
                    return None
                pair_plan[code] = plan.index
            found = pair_plan[pair_codes]
        indices[1:] = found
        return indices


class Counted(NamedTuple):
    """A batch run through the plans."""

    counts: Any
    """How often each plan ran (an array over ``table.plans``, or longer)."""
    indices: Any | None
    """The plan index of every exit; None when not asked for (one closed row needs none)."""
    last: int
    """The plan index of the last exit (-1 for no exit)."""
    row: Row
    """The row the batch ends in."""


def _closed(table: PlanTable, row: Row, reasons: list[int]) -> list[int] | None:
    """The plan index of each reason from ``row`` when every one leads back to ``row``."""
    indices = []
    for reason in reasons:
        plan = row.plans.get(reason)
        if plan is None:
            plan = table.plan(row, reason)
        if plan.next_row is not row:
            return None
        indices.append(plan.index)
    return indices


def _closed_indices(size: int, present: list[int], closed: list[int], reasons: Any) -> Any:
    """Every exit's plan index when all run from one closed row (``_closed``'s indices)."""
    plan_of = np.zeros(size, dtype=np.intp)
    plan_of[present] = closed
    return plan_of[reasons]


def _walk(table: PlanTable, row: Row, reasons: list[int], out: list[Any], seen: set[int]) -> Row:
    indices: list[int] = []
    append = indices.append
    for reason in reasons:
        plan = row.plans.get(reason)
        if plan is None:
            plan = table.plan(row, reason)
        append(plan.index)
        row = plan.next_row
    seen.update(reasons)
    out.append(np.array(indices, dtype=np.intp))
    return row


def _definite(table: PlanTable, row: Row, reasons: Any, steady: Transitions) -> Any | None:
    """Plan indices of a segment of reasons the run has seen: from one closed row, or through
    ``steady`` (first given codes for the segment's reasons, or rebuilt from ``row`` when its
    first exit leads to another row than its ``T``); None when the state still depends on more
    than the previous reason somewhere in it (``steady`` is then cleared)."""
    bins = np.bincount(reasons)
    present = np.flatnonzero(bins).tolist()
    closed = _closed(table, row, present)
    if closed is not None:
        return _closed_indices(len(bins), present, closed, reasons)
    top = present[-1]
    codes = steady.codes(reasons, top)
    if codes is None or not steady.leads(table, row, int(reasons[0])):
        if len(present) > _MAX_REASONS:
            return None  # the pair table would outgrow the segment: walk it
        added = codes is None and steady.add(table, row, present)
        if not added or not steady.leads(table, row, int(reasons[0])):
            steady.clear()  # the state moved on (or too many codes): start again from this row
            steady.add(table, row, present)
        codes = steady.codes(reasons, top)
    indices = steady.indices(table, row, reasons, codes)
    if indices is None:
        steady.clear()
    return indices


def _segment(
    table: PlanTable, row: Row, reasons: Any, out: list[Any], seen: set[int], steady: Transitions
) -> Row:
    stretch = 256
    start, end = 0, len(reasons)
    while end - start >= _WALK_BELOW:
        indices = _definite(table, row, reasons[start:], steady)
        if indices is not None:
            out.append(indices)
            return table.plans[int(indices[-1])].next_row
        stop = min(end, start + stretch)
        row = _walk(table, row, reasons[start:stop].tolist(), out, seen)
        start, stretch = stop, stretch * 4
    if start < end:
        row = _walk(table, row, reasons[start:end].tolist(), out, seen)
    return row


def plan_indices(
    table: PlanTable,
    row: Row,
    reasons: Any,
    seen: set[int],
    steady: Transitions,
    want_indices: bool = True,
) -> Counted:
    """Run ``reasons`` (an array of basic exit reasons < 2**16) from ``row``. ``seen`` (the
    reasons this run has had so far) and ``steady`` (its transitions) are updated; the plan of
    every exit is computed where ``want_indices`` or the way of counting needs it."""
    reasons = np.asarray(reasons, dtype=np.intp)
    n = len(reasons)
    if not n:
        return Counted(np.zeros(len(table.plans), dtype=np.intp), reasons, -1, row)
    bins = np.bincount(reasons)
    present = np.flatnonzero(bins).tolist()
    closed = _closed(table, row, present)
    if closed is not None:  # every exit runs from ``row``
        seen.update(present)
        counts = np.zeros(len(table.plans), dtype=np.intp)
        counts[closed] = bins[present]
        indices = _closed_indices(len(bins), present, closed, reasons) if want_indices else None
        last = closed[present.index(int(reasons[-1]))]
        return Counted(counts, indices, last, row)
    codes = steady.codes(reasons, present[-1])
    if codes is not None:  # every reason has a code, so the run has seen every reason
        indices = steady.indices(table, row, reasons, codes)
        if indices is not None:
            return _counted(table, indices)
    out: list[Any] = []
    new = [r for r in present if r not in seen]
    firsts = sorted(int(np.argmax(reasons == r)) for r in new)
    start = 0
    for first in firsts:
        if first > start:
            row = _segment(table, row, reasons[start:first], out, seen, steady)
        row = _walk(table, row, [int(reasons[first])], out, seen)
        start = first + 1
    if start < n:
        row = _segment(table, row, reasons[start:], out, seen, steady)
    return _counted(table, np.concatenate(out), row)


def _counted(table: PlanTable, indices: Any, row: Row | None = None) -> Counted:
    last = int(indices[-1])
    end = row if row is not None else table.plans[last].next_row
    return Counted(np.bincount(indices, minlength=len(table.plans)), indices, last, end)
