"""Protobuf <-> core translation for the service: VMs, vCPUs, capabilities, exit batches, stats.

Nothing here emulates; every function maps one wire message to a core object or back. Exit
batches stay packed columns on both sides: a ``*_packed`` bytes column becomes an
``array.array`` with one copy (``frombytes``), a repeated field a list (one C-level copy); no
per-exit Python object is built.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from typing import Any

from vmxsim.v1 import vmxsim_pb2 as pb

from .registry import VcpuEntry, VmEntry
from .vmx.capabilities import MSR_NAMES, Capabilities
from .vmx.capability_file import msr_index
from .vmx.capability_msrs import readable_msrs
from .vmx.engine import BatchStats
from .vmx.exceptions import InvalidArgument, LimitExceeded
from .vmx.latency import MODES
from .vmx.records import ExitBatch
from .vmx.summary import INSTRUCTIONS, reason_name, summary
from .vmx.vcpu import Mode

__all__ = [
    "batch_stats",
    "capability_changes",
    "exit_batch",
    "mode_from_pb",
    "mode_to_pb",
    "run_summary",
    "vcpu_message",
    "vm_message",
]

_MODE_TO_PB: dict[str, pb.LatencyMode.ValueType] = {
    name: pb.LatencyMode.Value("LATENCY_MODE_" + name.upper().replace("-", "_")) for name in MODES
}
_MODE_FROM_PB = {value: name for name, value in _MODE_TO_PB.items()}
_VCPU_MODES = {mode: pb.VcpuMode.Value(f"VCPU_MODE_{mode.name}") for mode in Mode}
_CAPABILITIES = ("revision_id", "maxphyaddr", "vmx_misc_bit29", "vmcs_shadowing",
                 "cr3_target_count", "feature_control")  # fmt: skip
_BATCH_COLUMNS = ("rip", "qualification", "info2", "intr_info", "error_code",
                  "guest_physical_address", "instruction_len", "timestamp")  # fmt: skip


def mode_from_pb(value: int) -> str:
    """A request's latency mode as the core's name (unspecified = native)."""
    if value == pb.LATENCY_MODE_UNSPECIFIED:
        return "native"
    name: str | None = _MODE_FROM_PB.get(value)  # type: ignore[call-overload]
    if name is None:
        known = ", ".join(pb.LatencyMode.Name(v) for v in _MODE_TO_PB.values())
        raise InvalidArgument(f"unknown latency mode {value} (known: {known})", field="mode")
    return name


def mode_to_pb(name: str) -> pb.LatencyMode.ValueType:
    """The core's mode name as the wire enum."""
    return _MODE_TO_PB[name]


def capability_changes(message: pb.Capabilities) -> dict[str, Any]:
    """The capabilities a request sets (unset fields keep the server's default); its MSRs by
    index under ``vmx_msrs`` (the registry applies them on top)."""
    changes: dict[str, Any] = {
        name: getattr(message, name)
        for name in _CAPABILITIES
        if message.HasField(name)  # type: ignore[arg-type]
    }
    msrs: dict[int, int] = {}
    for name, value in sorted(message.vmx_msrs.items()):
        index = msr_index(name, "vmx_msrs")
        if index in msrs:  # map order is unspecified: two spellings of one MSR are ambiguous
            raise InvalidArgument(f"vmx_msrs: {name!r} names an MSR given already ({index:#x})")
        msrs[index] = value
    if msrs:
        changes["vmx_msrs"] = msrs
    return changes


def _capabilities_message(caps: Capabilities) -> pb.Capabilities:
    return pb.Capabilities(
        **{name: getattr(caps, name) for name in _CAPABILITIES},
        vmx_msrs={MSR_NAMES[index]: value for index, value in readable_msrs(caps).items()},
    )


def vm_message(vm: VmEntry) -> pb.Vm:
    """A VM on the wire."""
    return pb.Vm(vm_id=vm.vm_id, maxphyaddr=vm.maxphyaddr, vcpu_ids=list(vm.vcpu_ids))


def vcpu_message(entry: VcpuEntry) -> pb.Vcpu:
    """A vCPU's current state on the wire."""
    vcpu = entry.vcpu
    return pb.Vcpu(
        vcpu_id=entry.vcpu_id,
        vm_id=entry.vm.vm_id,
        profile=entry.profile,
        mode=mode_to_pb(entry.mode),
        capabilities=_capabilities_message(vcpu.capabilities),
        vcpu_mode=_VCPU_MODES[vcpu.mode],
        current_vmcs_pointer=vcpu.current_pointer,
        exits=entry.exits,
        l0=entry.engine.totals.l0_model or "",
    )


def exit_batch(message: pb.ExitBatch, max_exits: int) -> ExitBatch:
    """A wire batch as the core's packed columns; the engine checks the integer columns'
    lengths and ranges, this checks the batch size, the packed columns' shape and the
    timestamps. A column comes from ``<name>_packed`` when that is set (preferred: one copy),
    else from the repeated field; both at once is INVALID_ARGUMENT."""
    packed_reason = message.reason_packed
    n = len(packed_reason) // 8 if packed_reason else len(message.reason)
    if n > max_exits:
        raise LimitExceeded(
            f"batch {message.sequence} has {n} exits; the limit is {max_exits}",
            quota="max_batch_exits", limit=max_exits,
        )  # fmt: skip
    reason = _column(message, "reason", "Q")
    columns = {name: _column(message, name, "d" if name == "timestamp" else "Q")
               for name in _BATCH_COLUMNS}  # fmt: skip
    stamps = columns["timestamp"]
    if stamps and len(stamps) != n:
        raise InvalidArgument(
            f"column timestamp has {len(stamps)} values for {n} exits (give all or none)"
        )
    return ExitBatch(reason, sequence=message.sequence, **columns)


def _column(message: pb.ExitBatch, name: str, typecode: str) -> Sequence[Any]:
    """One column of a wire batch: its packed bytes as an array, else its repeated values."""
    data: bytes = getattr(message, f"{name}_packed")
    values = getattr(message, name)
    if not data:
        return list(values)
    if values:
        raise InvalidArgument(f"column {name} is given twice: as {name} and as {name}_packed")
    if len(data) % 8:
        raise InvalidArgument(f"column {name}_packed has {len(data)} bytes; it holds 8-byte values")
    column = array(typecode)
    column.frombytes(data)
    if sys.byteorder == "big":  # the wire is little-endian
        column.byteswap()
    return column


def _counts(stats: BatchStats) -> pb.InstructionCounts:
    return pb.InstructionCounts(**{name: getattr(stats.counters, name) for name in INSTRUCTIONS})


def batch_stats(stats: BatchStats, per_exit: bool) -> pb.BatchStats:
    """One batch's stats on the wire; per-exit arrays only when ``per_exit``."""
    message = pb.BatchStats(
        sequence=stats.sequence,
        exits=stats.exits,
        instructions=_counts(stats),
        cache_hits=stats.counters.hits,
        cache_misses=stats.counters.misses,
        simulated_seconds=stats.simulated_seconds,
    )
    for number, totals in stats.by_reason.items():
        message.by_reason[reason_name(number)].CopyFrom(
            pb.ReasonStats(
                exits=totals.exits,
                vmread=totals.vmread,
                vmwrite=totals.vmwrite,
                simulated_seconds=totals.simulated_seconds,
                l0_exits=totals.l0_exits,
            )
        )
    _l0_parts(message, stats)
    if per_exit:
        message.vmreads_per_exit.extend(stats.per_exit_vmread)
        message.vmwrites_per_exit.extend(stats.per_exit_vmwrite)
        message.latency_seconds_per_exit.extend(stats.per_exit_seconds)
    return message


def run_summary(
    stats: BatchStats,
    profile: str,
    mode: str,
    skipped: int = 0,
    unknown: dict[str, int] | None = None,
) -> pb.RunSummary:
    """The core's run summary (DESIGN.md "Machine-readable output") on the wire."""
    doc = summary(stats, profile, mode, skipped, unknown)
    message = pb.RunSummary(
        profile=profile,
        mode=mode_to_pb(mode),
        mode_name=mode,
        exits=doc["exits"],
        skipped=skipped,
        unknown_reasons=doc["unknown_reasons"],
        instructions=_counts(stats),
        per_exit=pb.PerExit(
            vmread=pb.Distribution(**doc["per_exit"]["vmread"]),
            vmwrite=pb.Distribution(**doc["per_exit"]["vmwrite"]),
        ),
        cache=pb.CacheCounts(**doc["cache"]),
        simulated_seconds=doc["simulated_seconds"],
    )
    for name, totals in doc["by_reason"].items():
        message.by_reason[name].CopyFrom(pb.ReasonStats(**totals))
    _l0_parts(message, stats)
    if doc["l0"] is not None:
        message.l0.per_exit.CopyFrom(pb.Distribution(**doc["l0"]["per_exit"]))
    return message


def _l0_parts(message: pb.BatchStats | pb.RunSummary, stats: BatchStats) -> None:
    """The L0 block: L0 stats (nested modes), other instructions and panics."""
    if stats.l0_model is not None:
        message.l0.CopyFrom(
            pb.L0Stats(
                model=stats.l0_model,
                exits=stats.l0_exits,
                by_cause=dict(stats.l0_by_cause),
                vmcs02_rebuilds=stats.vmcs02_rebuilds,
                seconds=stats.l0_seconds,
            )
        )
    message.other_instructions.update(stats.other)
    message.panics.update({reason_name(n): count for n, count in stats.panics.items()})
