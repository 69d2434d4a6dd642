"""Per-exit results: the trace's own columns joined, in order, with the model's per-exit counts.

With ``per_exit=True`` the server answers each replayed batch with the model's VMREADs, VMWRITEs
and simulated seconds of every exit in it; the reason, rip and timestamp (and a HAXM log's
recorded counters) stay on the client. :class:`ExitTap` wraps an exit source, queues those
columns for each batch it hands to the replay stream, and :meth:`ExitTap.join` takes the oldest
queued batch back out when its acknowledgement arrives (the server answers batches in order,
one progress message each). The queue holds only the batches in flight; replay with
``max_unacked=MAX_IN_FLIGHT`` to keep it short (the default window is deep enough to let ~80
batches of 4,096 exits pile up when the client writes per-exit rows slower than the server
answers), and memory stays flat however long the trace.

:class:`RecordedComparison` compares a HAXM log's recorded ``vmread_ctr``/``vmwrite_ctr`` with
the model's counts, exit by exit.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vmxsim_server.vmx.records import ExitBatch, ExitRecord
from vmxsim_server.vmx.summary import reason_name

__all__ = [
    "MAX_IN_FLIGHT",
    "ExitTap",
    "JoinedBatch",
    "RecordedComparison",
    "has_recorded",
    "reason_label",
]

MAX_IN_FLIGHT = 8
"""Batches to let a replay send ahead of their acknowledgement when they are tapped
(``Client.replay(max_unacked=...)``): enough to keep the server busy."""

_BATCHES_SAY_WHO = "vcpu" in ExitBatch.__dataclass_fields__
"""Whether the core's batches carry the vCPU/VM columns (then a reader's batches are used as
they are); otherwise the vCPU is read from the reader's rows."""

_Tapped = tuple[ExitBatch, Sequence[int], Sequence[int]]
"""A batch with its exits' vCPU and VM columns (empty = not known)."""

Recorded = tuple[int, int, int]
"""A HAXM log's (vmread_ctr, vmwrite_ctr, delta) of one exit."""


@dataclass(frozen=True, slots=True)
class _SentBatch:
    reason: Sequence[int]
    rip: Sequence[int]
    timestamp: Sequence[float]
    recorded: list[Recorded] | None
    vcpu: Sequence[int]
    vm: Sequence[int]


@dataclass(frozen=True, slots=True)
class JoinedBatch:
    """One acknowledged batch, exit by exit: ``first_index`` is the 0-based index of its first
    exit in the trace; ``timestamp`` is empty when the trace has none; ``recorded`` is None
    unless the trace is a HAXM log; ``vcpu`` and ``vm`` say who made each exit (empty when the
    trace does not say)."""

    first_index: int
    reason: Sequence[int]
    rip: Sequence[int]
    timestamp: Sequence[float]
    recorded: list[Recorded] | None
    vmread: Sequence[int]
    vmwrite: Sequence[int]
    seconds: Sequence[float]
    vcpu: Sequence[int] = ()
    vm: Sequence[int] = ()

    def __len__(self) -> int:
        return len(self.reason)

    def reason_names(self) -> Iterator[str]:
        """The exit-reason table's name of each exit."""
        return map(reason_label, self.reason)


_NAMES: dict[int, str] = {}


def reason_label(number: int) -> str:
    """The exit-reason table's name of a reason number (looked up once per number)."""
    name = _NAMES.get(number)
    if name is None:
        name = _NAMES[number] = reason_name(number)
    return name


def has_recorded(source: Any) -> bool:
    """Whether an exit source is a HAXM log with recorded counters per exit (its reader
    appends them to ``recorded`` as it reads)."""
    return isinstance(getattr(source, "recorded", None), list)


class ExitTap:
    """An exit source for ``Client.replay`` that remembers what it sent until it is answered.

    ``source`` is a trace reader (anything with ``batches(size)``) or an iterable of
    ``ExitRecord``. Its ``skipped``/``unknown_reasons`` counters show through (the replay
    sends them when the stream ends). Not for a resumed replay (which sends batches again).
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        self._sent: deque[_SentBatch] = deque()
        self._next_index = 0

    @property
    def skipped(self) -> int:
        return int(getattr(self.source, "skipped", 0))

    @property
    def unknown_reasons(self) -> Mapping[str, int]:
        return getattr(self.source, "unknown_reasons", None) or {}

    @property
    def in_flight(self) -> int:
        """Batches sent and not yet joined."""
        return len(self._sent)

    @property
    def has_recorded(self) -> bool:
        """Whether the source is a HAXM log with recorded counters per exit."""
        return has_recorded(self.source)

    def _source_batches(
        self, size: int
    ) -> Iterator[tuple[ExitBatch, Sequence[int], Sequence[int]]]:
        """The source's batches with each exit's vCPU and VM: a reader's batches when they
        carry those columns (``ExitBatch.vcpu``/``.vm``), else batches made from its rows (whose
        last column is the vCPU) or from records (``ExitRecord.vcpu``)."""
        batches = getattr(self.source, "batches", None)
        rows = getattr(self.source, "rows", None)
        if callable(batches) and (_BATCHES_SAY_WHO or not callable(rows)):
            for batch in batches(size):
                yield batch, getattr(batch, "vcpu", ()), getattr(batch, "vm", ())
            return
        records = (ExitRecord(*row) for row in rows()) if callable(rows) else iter(self.source)
        while chunk := list(itertools.islice(records, size)):
            batch = ExitBatch.from_records(chunk)
            if all(r.timestamp is None for r in chunk):
                batch.timestamp = []  # as a reader's batches: no column when nothing is stamped
            vcpus = [r.vcpu for r in chunk]
            yield batch, vcpus if any(vcpus) else (), ()

    def batches(self, size: int) -> Iterator[ExitBatch]:
        """The source's batches, each queued for :meth:`join` (runs in gRPC's request thread;
        ``deque.append``/``popleft`` are thread-safe)."""
        recorded = self.source.recorded if self.has_recorded else None
        for batch, vcpu, vm in self._source_batches(size):
            taken = None
            if recorded is not None:
                # the reader appends one entry per exit it yields; take this batch's and drop
                # them, so the list stays as short as the batch
                n = len(batch.reason)
                taken = recorded[:n]
                del recorded[:n]
            self._sent.append(_SentBatch(batch.reason, batch.rip, batch.timestamp, taken, vcpu, vm))
            yield batch

    def join(self, progress: Mapping[str, Any]) -> JoinedBatch:
        """The acknowledged batch of a replay progress message (``per_exit=True``), joined
        with the columns that were sent for it."""
        sent = self._sent.popleft()
        stats = progress["batch"]
        n = len(sent.reason)
        vmread = stats.get("per_exit_vmread", ())
        if len(vmread) != n:
            raise RuntimeError(
                f"batch {stats['sequence']}: {len(vmread)} per-exit results for {n} exits "
                "(replay with per_exit=True)"
            )
        first, self._next_index = self._next_index, self._next_index + n
        return JoinedBatch(
            first, sent.reason, sent.rip, sent.timestamp, sent.recorded,
            vmread, stats["per_exit_vmwrite"], stats["per_exit_seconds"], sent.vcpu, sent.vm,
        )  # fmt: skip


@dataclass
class RecordedComparison:
    """A HAXM log's recorded VMREAD/VMWRITE counts against the model's, summed exit by exit."""

    exits: int = 0
    recorded_vmread: int = 0
    recorded_vmwrite: int = 0
    model_vmread: int = 0
    model_vmwrite: int = 0
    abs_diff_vmread: int = 0
    abs_diff_vmwrite: int = 0

    def add(self, batch: JoinedBatch) -> None:
        """Add the exits of one joined batch (nothing when it has no recorded counters)."""
        if batch.recorded is None:
            return
        for (read, write, _delta), model_read, model_write in zip(
            batch.recorded, batch.vmread, batch.vmwrite, strict=True
        ):
            self.recorded_vmread += read
            self.recorded_vmwrite += write
            self.model_vmread += model_read
            self.model_vmwrite += model_write
            self.abs_diff_vmread += abs(read - model_read)
            self.abs_diff_vmwrite += abs(write - model_write)
        self.exits += len(batch.recorded)

    def to_json(self) -> dict[str, Any]:
        """The ``"recorded"`` key of ``replay --json`` for a HAXM log."""
        n = self.exits or 1  # all means are 0.0 for an empty log
        return {
            "exits": self.exits,
            "vmread_mean": self.recorded_vmread / n,
            "vmwrite_mean": self.recorded_vmwrite / n,
            "model_vmread_mean": self.model_vmread / n,
            "model_vmwrite_mean": self.model_vmwrite / n,
            "mean_abs_diff_vmread": self.abs_diff_vmread / n,
            "mean_abs_diff_vmwrite": self.abs_diff_vmwrite / n,
        }
