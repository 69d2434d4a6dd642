"""Translation between the wire messages and the client's plain values.

- exits -> ``ExitBatch`` messages of packed columns built from plain tuples (DESIGN.md
  "Performance facts": never a message per exit); an all-zero column is left empty;
- ``RunSummary`` / ``BatchStats`` -> the run-summary dict of DESIGN.md "Machine-readable
  output" (``profile, mode, exits, skipped, unknown_reasons, instructions, per_exit, cache,
  simulated_seconds, by_reason``);
- ``Vcpu`` / ``Vm`` -> frozen dataclasses; latency mode names <-> enum values.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import sys
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim_server.vmx.capabilities import MSR_NAMES
from vmxsim_server.vmx.latency import MODES
from vmxsim_server.vmx.records import COLUMNS, ExitRecord
from vmxsim_server.vmx.summary import INSTRUCTIONS, distribution

from .summaries import (
    BatchReport,
    Distribution,
    InstructionCounts,
    L0Summary,
    ReasonStats,
    RunSummary,
)

__all__ = [
    "MODES",
    "L0ModelInfo",
    "MixInfo",
    "ProfileInfo",
    "StatsAccumulator",
    "VcpuInfo",
    "VmInfo",
    "batch_dict",
    "batch_exits",
    "exit_batches",
    "mode_from_pb",
    "mode_to_pb",
    "summary_dict",
]

_MODE_VALUES = {name: pb.LatencyMode.Value(f"LATENCY_MODE_{name.upper().replace('-', '_')}")
                for name in MODES}  # fmt: skip
_MODE_NAMES: dict[int, str] = {value: name for name, value in _MODE_VALUES.items()}
_BATCH_COLUMNS = (*COLUMNS, "timestamp")
_GETTERS = tuple(operator.attrgetter(name) for name in _BATCH_COLUMNS)
_TIMESTAMP = len(COLUMNS)  # index of the timestamp column


def mode_to_pb(name: str) -> pb.LatencyMode.ValueType:
    """``"nested-shadow"`` -> ``LATENCY_MODE_NESTED_SHADOW``; ValueError when unknown."""
    try:
        return _MODE_VALUES[name]
    except KeyError:
        raise ValueError(f"unknown mode {name!r} (known: {', '.join(MODES)})") from None


def mode_from_pb(value: int) -> str:
    """``LATENCY_MODE_NESTED`` -> ``"nested"`` (unspecified reads as native)."""
    return _MODE_NAMES.get(value, "native")


# --- exits -> packed columns ---------------------------------------------------------------------


def _packed(column: array[Any]) -> bytes:
    """An 8-byte array column as the wire's little-endian ``*_packed`` bytes (one copy)."""
    if sys.byteorder == "big":
        column = array(column.typecode, column)
        column.byteswap()
    return column.tobytes()


def _columns_message(columns: Iterable[Iterable[Any]], sequence: int) -> pb.ExitBatch:
    """A wire batch from the 8 integer columns and the timestamp column (None or an empty
    column = no stamp). ``array`` columns of 8-byte values (``Q``/``d``, as the trace readers
    build them) go as ``*_packed`` bytes, one copy each; empty ones are left out."""
    given: list[Any] = list(columns)
    if isinstance(given[0], array) and all(
        (isinstance(c, array) and c.itemsize == 8) or not c for c in given
    ):
        names = (*COLUMNS, "timestamp")
        packed = {f"{name}_packed": _packed(c) for name, c in zip(names, given, strict=False) if c}
        return pb.ExitBatch(sequence=sequence, **packed)
    cols = [c if isinstance(c, list | tuple) else list(c) for c in given]
    kwargs: dict[str, Any] = {"sequence": sequence, "reason": cols[0]}
    for name, column in zip(COLUMNS[1:], cols[1:_TIMESTAMP], strict=True):
        if any(column):
            kwargs[name] = column
    stamps = cols[_TIMESTAMP] if len(cols) > _TIMESTAMP else ()
    missing = stamps.count(None) if stamps else 0
    if stamps and missing != len(stamps):
        kwargs["timestamp"] = [0.0 if t is None else t for t in stamps] if missing else stamps
    return pb.ExitBatch(**kwargs)


def batch_exits(message: pb.ExitBatch) -> int:
    """The number of exits in a wire batch (``reason`` or ``reason_packed``)."""
    return len(message.reason_packed) // 8 if message.reason_packed else len(message.reason)


def exit_batches(source: Any, size: int, first_sequence: int = 1) -> Iterator[pb.ExitBatch]:
    """Wire batches of at most ``size`` exits, numbered from ``first_sequence``.

    ``source`` is a trace reader (anything with ``batches(size)`` yielding column batches), an
    iterable of ``ExitRecord``, or an iterable of column batches (objects with the
    ``ExitRecord`` column attributes, e.g. ``vmxsim_server.vmx.records.ExitBatch``), each of
    which is sent as one wire batch. Columns are built one at a time with ``map`` (about three
    times faster than transposing per-exit tuples).
    """
    if size < 1:
        raise ValueError("batch size must be at least 1")
    batches = getattr(source, "batches", None)
    items = iter(batches(size) if callable(batches) else source)
    head = next(items, None)
    if head is None:
        return
    items = itertools.chain((head,), items)
    if isinstance(head, ExitRecord):
        for sequence in itertools.count(first_sequence):
            chunk = list(itertools.islice(items, size))
            if not chunk:
                return
            yield _columns_message([list(map(get, chunk)) for get in _GETTERS], sequence)
    for sequence, batch in enumerate(items, first_sequence):
        yield _columns_message([getattr(batch, name) for name in _BATCH_COLUMNS], sequence)


# --- stats -> the run-summary dict ---------------------------------------------------------------


def _by_reason(entries: Mapping[str, pb.ReasonStats]) -> dict[str, ReasonStats]:
    rows = sorted(entries.items(), key=lambda kv: (-kv[1].exits, kv[0]))
    return {
        name: {
            "exits": s.exits,
            "vmread": s.vmread,
            "vmwrite": s.vmwrite,
            "simulated_seconds": s.simulated_seconds,
            "l0_exits": s.l0_exits,
        }
        for name, s in rows
    }


def _l0_dict(message: pb.RunSummary | pb.BatchStats) -> L0Summary | None:
    """The ``"l0"`` object (None in native mode: the message has no L0 stats)."""
    if not message.HasField("l0"):
        return None
    l0 = message.l0
    out: dict[str, Any] = {"model": l0.model, "exits": l0.exits}
    if isinstance(message, pb.RunSummary):
        out["per_exit"] = _distribution(l0.per_exit)
    out["by_cause"] = dict(sorted(l0.by_cause.items(), key=lambda kv: (-kv[1], kv[0])))
    out["vmcs02_rebuilds"] = l0.vmcs02_rebuilds
    out["seconds"] = l0.seconds
    return cast(L0Summary, out)


def _distribution(d: pb.Distribution) -> Distribution:
    return {"mean": d.mean, "p50": d.p50, "p99": d.p99}


def _instructions(message: pb.InstructionCounts) -> InstructionCounts:
    return cast(InstructionCounts, {name: getattr(message, name) for name in INSTRUCTIONS})


def summary_dict(s: pb.RunSummary) -> RunSummary:
    """A ``RunSummary`` as the ``--json`` run summary (DESIGN.md "Machine-readable output")."""
    return {
        "profile": s.profile,
        "mode": s.mode_name or mode_from_pb(s.mode),
        "exits": s.exits,
        "skipped": s.skipped,
        "unknown_reasons": dict(sorted(s.unknown_reasons.items())),
        "instructions": {
            **_instructions(s.instructions),
            "other": dict(sorted(s.other_instructions.items())),
        },
        "per_exit": {
            "vmread": _distribution(s.per_exit.vmread),
            "vmwrite": _distribution(s.per_exit.vmwrite),
        },
        "cache": {"hits": s.cache.hits, "misses": s.cache.misses},
        "simulated_seconds": s.simulated_seconds,
        "by_reason": _by_reason(s.by_reason),
        "panics": dict(sorted(s.panics.items())),
        "l0": _l0_dict(s),
    }


def batch_dict(b: pb.BatchStats) -> BatchReport:
    """One batch's stats: ``sequence, exits, instructions, cache, simulated_seconds, by_reason``
    (plus ``per_exit_vmread``/``per_exit_vmwrite``/``per_exit_seconds`` when sent)."""
    out: BatchReport = {
        "sequence": b.sequence,
        "exits": b.exits,
        "instructions": _instructions(b.instructions),
        "cache": {"hits": b.cache_hits, "misses": b.cache_misses},
        "simulated_seconds": b.simulated_seconds,
        "by_reason": _by_reason(b.by_reason),
        "other_instructions": dict(sorted(b.other_instructions.items())),
        "panics": dict(sorted(b.panics.items())),
        "l0": _l0_dict(b),
    }
    if b.vmreads_per_exit or b.vmwrites_per_exit:
        out["per_exit_vmread"] = list(b.vmreads_per_exit)
        out["per_exit_vmwrite"] = list(b.vmwrites_per_exit)
        out["per_exit_seconds"] = list(b.latency_seconds_per_exit)
    return out


@dataclass
class StatsAccumulator:
    """Sums batch stats into a run summary (for Drive, which answers per batch only).

    Per-exit distributions need the per-exit arrays; without them ``per_exit`` holds the mean
    only.
    """

    profile: str = ""
    mode: str = ""
    batches: int = 0
    exits: int = 0
    simulated_seconds: float = 0.0
    instructions: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    by_reason: dict[str, Counter[str]] = field(default_factory=dict)
    vmread_hist: Counter[int] = field(default_factory=Counter)
    vmwrite_hist: Counter[int] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)
    panics: Counter[str] = field(default_factory=Counter)
    l0: dict[str, Any] | None = None

    def add(self, b: pb.BatchStats) -> None:
        """Add one batch's stats."""
        self.batches += 1
        self.exits += b.exits
        self.simulated_seconds += b.simulated_seconds
        for name in INSTRUCTIONS:
            self.instructions[name] += getattr(b.instructions, name)
        self.cache["hits"] += b.cache_hits
        self.cache["misses"] += b.cache_misses
        for name, r in b.by_reason.items():
            totals = self.by_reason.setdefault(name, Counter())
            totals.update(exits=r.exits, vmread=r.vmread, vmwrite=r.vmwrite, l0_exits=r.l0_exits)
            totals["simulated_seconds"] += r.simulated_seconds  # type: ignore[assignment]
        self.vmread_hist.update(b.vmreads_per_exit)
        self.vmwrite_hist.update(b.vmwrites_per_exit)
        self.other.update(b.other_instructions)
        self.panics.update(b.panics)
        if b.HasField("l0"):
            l0 = self.l0 = self.l0 or {
                "model": b.l0.model, "exits": 0, "by_cause": Counter(), "vmcs02_rebuilds": 0,
                "seconds": 0.0,
            }  # fmt: skip
            l0["exits"] += b.l0.exits
            l0["by_cause"].update(b.l0.by_cause)
            l0["vmcs02_rebuilds"] += b.l0.vmcs02_rebuilds
            l0["seconds"] += b.l0.seconds

    def _per_exit(self, name: str, hist: Counter[int]) -> Distribution:
        if hist:
            return cast(Distribution, distribution(hist))
        return {"mean": self.instructions[name] / self.exits if self.exits else 0.0}

    def summary(self) -> RunSummary:
        """The totals in run-summary shape (``skipped``/``unknown_reasons`` are 0/empty)."""
        reasons = sorted(self.by_reason.items(), key=lambda kv: (-kv[1]["exits"], kv[0]))
        return {
            "profile": self.profile,
            "mode": self.mode,
            "exits": self.exits,
            "skipped": 0,
            "unknown_reasons": {},
            "instructions": cast(
                InstructionCounts,
                {
                    **{name: self.instructions[name] for name in INSTRUCTIONS},
                    "other": dict(sorted(self.other.items())),
                },
            ),
            "per_exit": {
                "vmread": self._per_exit("vmread", self.vmread_hist),
                "vmwrite": self._per_exit("vmwrite", self.vmwrite_hist),
            },
            "cache": {"hits": self.cache["hits"], "misses": self.cache["misses"]},
            "simulated_seconds": self.simulated_seconds,
            "by_reason": {
                name: {
                    "exits": t["exits"],
                    "vmread": t["vmread"],
                    "vmwrite": t["vmwrite"],
                    "simulated_seconds": float(t["simulated_seconds"]),
                    "l0_exits": t["l0_exits"],
                }
                for name, t in reasons
            },
            "panics": dict(sorted(self.panics.items())),
            "l0": self._l0(),
        }

    def _l0(self) -> L0Summary | None:
        """The L0 totals; per exit only the mean (batches carry no per-exit L0 counts)."""
        if self.l0 is None:
            return None
        l0 = self.l0
        by_cause = sorted(l0["by_cause"].items(), key=lambda kv: (-kv[1], kv[0]))
        mean = l0["exits"] / self.exits if self.exits else 0.0
        return cast(L0Summary, {**l0, "per_exit": {"mean": mean}, "by_cause": dict(by_cause)})


# --- vCPUs and VMs -------------------------------------------------------------------------------


_VCPU_MODES = {
    pb.VCPU_MODE_OFF: "off",
    pb.VCPU_MODE_ROOT: "root",
    pb.VCPU_MODE_NON_ROOT: "non-root",
}
_CAPABILITIES = ("revision_id", "maxphyaddr", "vmx_misc_bit29", "vmcs_shadowing",
                 "cr3_target_count", "feature_control")  # fmt: skip


@dataclass(frozen=True)
class VcpuInfo:
    """A vCPU's state as the server reports it."""

    vcpu_id: str
    vm_id: str
    profile: str
    mode: str
    vcpu_mode: str
    current_vmcs_pointer: int
    exits: int
    capabilities: dict[str, Any]

    @classmethod
    def from_pb(cls, v: pb.Vcpu) -> VcpuInfo:
        """From the wire form."""
        caps: dict[str, Any] = {name: getattr(v.capabilities, name) for name in _CAPABILITIES}
        msrs = v.capabilities.vmx_msrs  # in index order (SDM appendix A), unknown names last
        caps["vmx_msrs"] = {n: msrs[n] for n in MSR_NAMES.values() if n in msrs} | dict(msrs)
        return cls(
            v.vcpu_id, v.vm_id, v.profile, mode_from_pb(v.mode),
            _VCPU_MODES.get(v.vcpu_mode, "unspecified"), v.current_vmcs_pointer, v.exits, caps,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the dataclass fields)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ProfileInfo:
    """A hypervisor access model the server offers (ListProfiles): the name to pass as
    ``profile``, a one-line title, what it models, and its sources ("owner/repo@commit path")."""

    name: str
    title: str
    description: str
    sources: tuple[str, ...]

    @classmethod
    def from_pb(cls, p: pb.ProfileInfo) -> ProfileInfo:
        """From the wire form."""
        return cls(p.name, p.title, p.description, tuple(p.sources))


@dataclass(frozen=True)
class MixInfo:
    """An exit-reason mix the server offers (ListMixes): the CLI's ``mix:NAME``, the workload,
    where its weights come from, and the weights by exit-reason name."""

    name: str
    description: str
    source: str
    weights: dict[str, float]

    @classmethod
    def from_pb(cls, m: pb.MixInfo) -> MixInfo:
        """From the wire form (weights in the server's order)."""
        return cls(m.name, m.description, m.source, dict(m.weights))


@dataclass(frozen=True)
class L0ModelInfo:
    """An L0 (outer hypervisor) model the server offers (ListL0Models): the name to pass as
    ``l0``, a one-line title and what it covers."""

    name: str
    title: str
    description: str

    @classmethod
    def from_pb(cls, m: pb.L0ModelInfo) -> L0ModelInfo:
        """From the wire form."""
        return cls(m.name, m.title, m.description)


@dataclass(frozen=True)
class VmInfo:
    """A VM: its id, physical-address width and vCPU ids."""

    vm_id: str
    maxphyaddr: int
    vcpu_ids: tuple[str, ...]

    @classmethod
    def from_pb(cls, v: pb.Vm) -> VmInfo:
        """From the wire form."""
        return cls(v.vm_id, v.maxphyaddr, tuple(v.vcpu_ids))
