"""Counting a batch of exits as plan transitions instead of one exit at a time.

The state an exit leaves is a function of the state it starts in and its reason. Once that
function no longer depends on the state (every reason seen, so the surviving cache state has
stopped growing; L0's state is the same after every entry), the plan of exit i depends only on the
reasons of exits i-1 and i. Then, for a segment of the batch starting in row S:

- ``T[r]`` = the row after an exit of reason r from S;
- for every pair (a, b) that occurs in the segment, the plan of b from ``T[a]`` must lead to
  ``T[b]`` again (checked, not assumed; a failing check walks a stretch exit by exit and retries);
- then exit 0's plan is S's plan of its reason and exit i's is ``pair_plan[code(r[i-1], r[i])]``,
  one ``bincount`` over the pair codes and a gather.

Exactness rests only on that check, by induction over the segment: the state before exit i is
``T[r[i-1]]``. The batch is split where a reason the table has never run appears first (its
first exit is walked), so segments with new reasons never fail the check for that reason alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .plans import PlanTable, Row

__all__ = ["plan_indices"]

_WALK_BELOW = 64
"""Segments this short are walked exit by exit (a check costs more than it saves)."""
_MAX_REASONS = 256
"""More distinct reasons in one segment than this (k*k pair codes) and it is walked instead."""


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


def _definite(table: PlanTable, row: Row, reasons: Any) -> Any | None:
    """Plan indices of a segment by pair codes, or None when the state still depends on more
    than the previous reason somewhere in it."""
    top = int(reasons.max()) + 1
    present = np.flatnonzero(np.bincount(reasons, minlength=top))
    k = len(present)
    if k > _MAX_REASONS:
        return None  # the pair table would outgrow the segment: walk it
    lookup = np.zeros(top, dtype=np.intp)
    lookup[present] = np.arange(k, dtype=np.intp)
    compact = lookup[reasons]
    after = [table.plan(row, int(reason)).next_row for reason in present.tolist()]
    codes = compact[:-1] * k + compact[1:]
    pair_plan = np.zeros(k * k, dtype=np.intp)
    for code in np.flatnonzero(np.bincount(codes, minlength=k * k)).tolist():
        a, b = divmod(code, k)
        plan = table.plan(after[a], int(present[b]))
        if plan.next_row is not after[b]:
            return None
        pair_plan[code] = plan.index
    indices = np.empty(len(reasons), dtype=np.intp)
    indices[0] = table.plan(row, int(reasons[0])).index
    indices[1:] = pair_plan[codes]
    return indices


def _segment(table: PlanTable, row: Row, reasons: Any, out: list[Any], seen: set[int]) -> Row:
    stretch = 256
    start, end = 0, len(reasons)
    while end - start >= _WALK_BELOW:
        indices = _definite(table, row, reasons[start:])
        if indices is not None:
            out.append(indices)
            return table.plans[int(indices[-1])].next_row
        stop = min(end, start + stretch)
        row = _walk(table, row, reasons[start:stop].tolist(), out, seen)
        start, stretch = stop, stretch * 4
    if start < end:
        row = _walk(table, row, reasons[start:end].tolist(), out, seen)
    return row


def plan_indices(table: PlanTable, row: Row, reasons: Any, seen: set[int]) -> tuple[Any, Any, Row]:
    """Run ``reasons`` (an array of basic exit reasons < 2**16) from ``row``: how often each plan
    ran (an array over ``table.plans``), the plan index of every exit, and the row it ends in.
    ``seen`` (the reasons this run has had so far) is updated."""
    reasons = np.asarray(reasons, dtype=np.intp)
    n = len(reasons)
    out: list[Any] = []
    if n:
        counts = np.bincount(reasons)
        new = [r for r in np.flatnonzero(counts).tolist() if r not in seen]
        firsts = sorted(int(np.argmax(reasons == r)) for r in new)
        start = 0
        for first in firsts:
            if first > start:
                row = _segment(table, row, reasons[start:first], out, seen)
            row = _walk(table, row, [int(reasons[first])], out, seen)
            start = first + 1
        if start < n:
            row = _segment(table, row, reasons[start:], out, seen)
    indices = np.concatenate(out) if out else np.empty(0, dtype=np.intp)
    return np.bincount(indices, minlength=len(table.plans)), indices, row
