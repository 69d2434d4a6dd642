"""The per-exit-reason table of a replay in the habits of ``perf kvm stat report``: Samples,
Samples%, Time%, Min Time, Max Time, Avg time (with units), sortable, and split per VM and per
vCPU when the trace says who made each exit.

``perf kvm stat report`` (tools/perf/builtin-kvm.c, ``print_result``) prints one row per exit
reason with ``Samples Samples% Time% Min Time Max Time Avg time`` and sorts by ``--key``
(sample, time); it analyses "all VMs, all VCPUs" unless ``--vcpu`` picks one. Here the times
are the model's simulated seconds per exit (``Replay`` with ``per_exit=True``), and VMREADs and
VMWRITEs per exit stand beside them.

Who made an exit comes from the trace reader: the ``vcpu`` and ``vm`` columns of the batches
it yields (``ExitBatch.vcpu``/``.vm``), else the vCPU column of its rows; a trace without them
is one group.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from .per_exit import JoinedBatch, reason_label

__all__ = ["SORT_KEYS", "ExitTable", "ReasonTimes", "format_duration", "print_exit_tables"]

COLUMNS = (
    "VM-EXIT", "Samples", "Samples%", "Time%", "Min Time", "Max Time", "Avg time",
    "VMREAD/exit", "VMWRITE/exit",
)  # fmt: skip


@dataclass
class ReasonTimes:
    """One exit reason's samples, simulated seconds and VMX instruction counts."""

    samples: int = 0
    seconds: float = 0.0
    min_seconds: float = math.inf
    max_seconds: float = 0.0
    vmread: int = 0
    vmwrite: int = 0

    def add(self, seconds: float, vmread: int, vmwrite: int, count: int = 1) -> None:
        """``count`` exits of these simulated seconds and counts each."""
        self.samples += count
        self.seconds += seconds * count
        self.min_seconds = min(self.min_seconds, seconds)
        self.max_seconds = max(self.max_seconds, seconds)
        self.vmread += vmread * count
        self.vmwrite += vmwrite * count

    @property
    def avg_seconds(self) -> float:
        """The mean, kept within [min, max] (a float sum of equal values can land outside)."""
        if not self.samples:
            return 0.0
        return min(max(self.seconds / self.samples, self.min_seconds), self.max_seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "seconds": self.seconds,
            "min_seconds": self.min_seconds if self.samples else 0.0,
            "max_seconds": self.max_seconds,
            "avg_seconds": self.avg_seconds,
            "vmread": self.vmread,
            "vmwrite": self.vmwrite,
        }


Table = dict[str, ReasonTimes]

SORT_KEYS: dict[str, Callable[[tuple[str, ReasonTimes]], Any]] = {
    "samples": lambda kv: (-kv[1].samples, kv[0]),
    "time": lambda kv: (-kv[1].seconds, kv[0]),
    "name": lambda kv: kv[0],
    "min": lambda kv: (-kv[1].min_seconds, kv[0]),
    "max": lambda kv: (-kv[1].max_seconds, kv[0]),
    "avg": lambda kv: (-kv[1].avg_seconds, kv[0]),
    "vmread": lambda kv: (-kv[1].vmread / kv[1].samples, kv[0]),
    "vmwrite": lambda kv: (-kv[1].vmwrite / kv[1].samples, kv[0]),
}
"""``--sort`` keys: largest first (name: alphabetical); vmread/vmwrite sort by per-exit means."""

_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns"))


def format_duration(seconds: float) -> str:
    """``6.02us``, ``1.50ms``: perf's style, the unit chosen for the magnitude."""
    for scale, unit in _UNITS:
        if abs(seconds) >= scale or unit == "ns":
            return f"{seconds / scale:.2f}{unit}"
    raise AssertionError("unreachable")


class ExitTable:
    """Per-reason times of a replay, folded from its joined per-exit batches: overall, per
    vCPU ``(vm, vcpu)`` and per VM."""

    def __init__(self) -> None:
        self.all: Table = {}
        self.by_vcpu: dict[tuple[int, int], Table] = {}

    def add(self, batch: JoinedBatch) -> None:
        """Fold one acknowledged batch in: its exits counted by (reason, seconds, VMREADs,
        VMWRITEs, vCPU, VM) in one ``Counter`` (an exit's results take few distinct values),
        then each distinct one added with its count."""
        n = len(batch)
        vcpus: Iterable[int] = batch.vcpu or itertools.repeat(0, n)
        vms: Iterable[int] = batch.vm or itertools.repeat(0, n)
        same = Counter(
            zip(batch.reason, batch.seconds, batch.vmread, batch.vmwrite, vcpus, vms, strict=True)
        )
        totals = self.all
        groups = self.by_vcpu
        for (reason, seconds, reads, writes, vcpu, vm), count in same.items():
            name = reason_label(reason)
            times = totals.get(name)
            if times is None:
                times = totals[name] = ReasonTimes()
            times.add(seconds, reads, writes, count)
            group = groups.get((vm, vcpu))
            if group is None:
                group = groups[(vm, vcpu)] = {}
            times = group.get(name)
            if times is None:
                times = group[name] = ReasonTimes()
            times.add(seconds, reads, writes, count)

    def by_vm(self) -> dict[int, Table]:
        """Per-reason times of each VM (its vCPUs merged)."""
        merged: dict[int, Table] = {}
        for (vm, _vcpu), table in sorted(self.by_vcpu.items()):
            into = merged.setdefault(vm, {})
            for name, times in table.items():
                _merge(into.setdefault(name, ReasonTimes()), times)
        return merged

    def groups(self) -> list[tuple[str, Table]]:
        """(heading, table): all exits first, then each VM when there are several, then each
        vCPU when there are several."""
        out = [("all VMs, all vCPUs", self.all)]
        vms = self.by_vm()
        if len(vms) > 1:
            out += [(f"VM {vm}, all vCPUs", table) for vm, table in vms.items()]
        if len(self.by_vcpu) > 1:
            several_vms = len(vms) > 1
            out += [
                (f"VM {vm}, vCPU {vcpu}" if several_vms else f"vCPU {vcpu}", table)
                for (vm, vcpu), table in sorted(self.by_vcpu.items())
            ]
        return out

    def to_json(self) -> dict[str, Any]:
        """``{"all": {reason: times}, "by_vm": {vm: ...}, "by_vcpu": {"vm/vcpu": ...}}``."""
        return {
            "all": _table_json(self.all),
            "by_vm": {str(vm): _table_json(t) for vm, t in self.by_vm().items()},
            "by_vcpu": {f"{vm}/{vcpu}": _table_json(t) for (vm, vcpu), t in self.by_vcpu.items()},
        }


def _merge(into: ReasonTimes, times: ReasonTimes) -> None:
    into.samples += times.samples
    into.seconds += times.seconds
    into.min_seconds = min(into.min_seconds, times.min_seconds)
    into.max_seconds = max(into.max_seconds, times.max_seconds)
    into.vmread += times.vmread
    into.vmwrite += times.vmwrite


def _table_json(table: Table) -> dict[str, Any]:
    return {name: times.to_json() for name, times in sorted(table.items())}


def rows(table: Mapping[str, ReasonTimes], sort: str = "samples") -> list[dict[str, str]]:
    """The table's rows as printed, sorted by ``sort`` (a ``SORT_KEYS`` key)."""
    samples = sum(t.samples for t in table.values()) or 1
    seconds = sum(t.seconds for t in table.values()) or 1.0
    return [
        {
            "VM-EXIT": name,
            "Samples": f"{t.samples:,}",
            "Samples%": f"{100 * t.samples / samples:.2f}%",
            "Time%": f"{100 * t.seconds / seconds:.2f}%",
            "Min Time": format_duration(t.min_seconds),
            "Max Time": format_duration(t.max_seconds),
            "Avg time": format_duration(t.avg_seconds),
            "VMREAD/exit": f"{t.vmread / t.samples:.2f}",
            "VMWRITE/exit": f"{t.vmwrite / t.samples:.2f}",
        }
        for name, t in sorted(table.items(), key=SORT_KEYS[sort])
    ]


def print_exit_tables(
    groups: Iterable[tuple[str, Table]], sort: str = "samples", out: TextIO | None = None
) -> None:
    """Each group's table under perf's heading ``Analyze events for ...:``, numbers aligned
    right as perf prints them."""
    stream = out if out is not None else sys.stdout
    for heading, table in groups:
        stream.write(f"Analyze events for {heading}:\n\n")
        printed = rows(table, sort)
        widths = [max([len(c), *(len(r[c]) for r in printed)]) for c in COLUMNS]
        cells = [COLUMNS, *([r[c] for c in COLUMNS] for r in printed)]
        for line in cells:
            first, *rest = (cell.rjust(width) for cell, width in zip(line, widths, strict=True))
            stream.write("  ".join([first, *rest]).rstrip() + "\n")
        total = sum(t.samples for t in table.values())
        seconds = sum(t.seconds for t in table.values())
        stream.write(f"\nTotal Samples:{total:,}, Total time: {format_duration(seconds)}\n\n")
