"""What each vmxsim call sends and what its answer means, without a transport: the sync
``Client`` and the asyncio ``AsyncClient`` both run these, so the two differ only in how they
wait (sans-I/O, as h11 keeps the protocol apart from the socket).

A unary call is a ``Unary``: the ``VcpuService`` method's name, the request message and a
function from the response to the client's value. The streams share their request builders and
``ReplayRetry``, the resume policy of ``replay(resume=True)``; the harness helpers
(``enter_vmx``, ``write_valid_state``, ``inject_exit``) share their instruction lists and checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim_server.vmx.capabilities import MSR_NAMES

from .instructions import OPS, Instruction, InstructionResult
from .names import check_mode, check_profile
from .resume import ReplayFeed
from .summaries import DriveSummary, ReplayProgress, RunSummary
from .wire import (
    L0ModelInfo,
    MixInfo,
    ProfileInfo,
    StatsAccumulator,
    VcpuInfo,
    VmInfo,
    batch_dict,
    exit_batches,
    mode_to_pb,
    summary_dict,
)

__all__ = [
    "DEFAULT_VMCS_REGION",
    "DEFAULT_VMXON_REGION",
    "EARLY_RETRIES",
    "ReplayRetry",
    "Unary",
    "VmxMsrs",
    "VmxSetupError",
    "create_vcpu",
    "create_vm",
    "delete_vcpu",
    "delete_vm",
    "drive_requests",
    "drive_summary",
    "enter_vmx_instructions",
    "execute",
    "get_vcpu",
    "inject_exit_instruction",
    "list_l0_models",
    "list_mixes",
    "list_profiles",
    "list_vcpus",
    "list_vms",
    "progress_dict",
    "replay_feed",
    "require_ok",
    "restore",
    "snapshot",
    "stats",
    "valid_state",
    "valid_state_writes",
    "wire_msrs",
]

T = TypeVar("T")
_EXIT_OPERANDS = OPS["EXIT"].operands

DEFAULT_VMXON_REGION = 0x1000
"""Where ``enter_vmx`` puts the VMXON region (guest-physical, 4-KiB aligned)."""
DEFAULT_VMCS_REGION = 0x2000
"""Where ``enter_vmx`` puts the VMCS it makes current."""


class VmxSetupError(RuntimeError):
    """A harness helper's instruction did not succeed: the message names it and its outcome.
    ``results`` holds every result of the helper's Execute call."""

    def __init__(self, what: str, failed: InstructionResult, results: list[InstructionResult]):
        detail = failed.error_name or failed.fault or failed.message
        super().__init__(
            f"{what}: {failed.op} answered {failed.result}"
            + (f" ({failed.error})" if failed.error else "")
            + (f": {detail}" if detail else "")
        )
        self.failed = failed
        self.results = results


@dataclass(frozen=True, slots=True)
class Unary(Generic[T]):
    """One unary RPC: ``method`` of VcpuService with ``request``; ``parse`` makes the answer."""

    method: str
    request: Any
    parse: Callable[[Any], T]


# --- what the server offers ----------------------------------------------------------------------


def list_profiles() -> Unary[list[ProfileInfo]]:
    return Unary(
        "ListProfiles",
        pb.ListProfilesRequest(),
        lambda r: [ProfileInfo.from_pb(p) for p in r.profiles],
    )


def list_mixes() -> Unary[list[MixInfo]]:
    return Unary(
        "ListMixes", pb.ListMixesRequest(), lambda r: [MixInfo.from_pb(m) for m in r.mixes]
    )


def list_l0_models() -> Unary[list[L0ModelInfo]]:
    return Unary(
        "ListL0Models",
        pb.ListL0ModelsRequest(),
        lambda r: [L0ModelInfo.from_pb(m) for m in r.l0_models],
    )


# --- VMs and vCPUs -------------------------------------------------------------------------------


def create_vm(maxphyaddr: int) -> Unary[VmInfo]:
    return Unary(
        "CreateVm", pb.CreateVmRequest(maxphyaddr=maxphyaddr), lambda r: VmInfo.from_pb(r.vm)
    )


def list_vms() -> Unary[list[VmInfo]]:
    return Unary("ListVms", pb.ListVmsRequest(), lambda r: [VmInfo.from_pb(v) for v in r.vms])


def delete_vm(vm_id: str) -> Unary[None]:
    return Unary("DeleteVm", pb.DeleteVmRequest(vm_id=vm_id), lambda r: None)


VmxMsrs = Mapping[str, int] | Mapping[int, int] | str
"""IA32_VMX_* MSR values by name (``"IA32_VMX_PROCBASED_CTLS2"``) or index (``0x48B``,
``"0x48b"``), or the text of a capabilities file as ``vmxsim diagnose --capabilities`` reads it
(rdmsr output, ``NAME = VALUE`` lines, TOML, JSON; ``vmx.capability_file``)."""


def wire_msrs(msrs: VmxMsrs | None) -> dict[str, int]:
    """The ``vmx_msrs`` map of a request (a file's text is parsed here; a bad one raises the
    core's ``CapabilityFileError``)."""
    if not msrs:
        return {}
    # imported here: the file parser loads the dump readers and the core, which a replay
    # against a remote server never needs
    from vmxsim_server.vmx.capability_file import FEATURE_CONTROL, MAXPHYADDR, parse_capability_file

    if isinstance(msrs, str):
        msrs = parse_capability_file(msrs)
    pseudo = {FEATURE_CONTROL: "IA32_FEATURE_CONTROL", MAXPHYADDR: "MAXPHYADDR"}
    return {
        key if isinstance(key, str) else MSR_NAMES.get(key) or pseudo.get(key, hex(key)): value
        for key, value in msrs.items()
    }


def create_vcpu(
    profile: str,
    mode: str,
    vm: str | None,
    l0: str | None = None,
    vmx_msrs: VmxMsrs | None = None,
    **capabilities: Any,
) -> Unary[VcpuInfo]:
    """CreateVcpu; ValueError for an unknown profile or mode (before any RPC). Capabilities left
    None take the server's default; ``vmx_msrs`` apply on top of them."""
    given = {name: value for name, value in capabilities.items() if value is not None}
    request = pb.CreateVcpuRequest(
        vm_id=vm or "",
        profile=check_profile(profile),
        mode=mode_to_pb(check_mode(mode)),
        capabilities=pb.Capabilities(**given, vmx_msrs=wire_msrs(vmx_msrs)),
        l0=l0 or "",
    )
    return Unary("CreateVcpu", request, lambda r: VcpuInfo.from_pb(r.vcpu))


def get_vcpu(vcpu_id: str) -> Unary[VcpuInfo]:
    return Unary("GetVcpu", pb.GetVcpuRequest(vcpu_id=vcpu_id), lambda r: VcpuInfo.from_pb(r.vcpu))


def list_vcpus(vm: str | None) -> Unary[list[VcpuInfo]]:
    return Unary(
        "ListVcpus",
        pb.ListVcpusRequest(vm_id=vm or ""),
        lambda r: [VcpuInfo.from_pb(v) for v in r.vcpus],
    )


def delete_vcpu(vcpu_id: str) -> Unary[None]:
    return Unary("DeleteVcpu", pb.DeleteVcpuRequest(vcpu_id=vcpu_id), lambda r: None)


# --- instructions, stats, snapshots --------------------------------------------------------------


def execute(
    vcpu_id: str, instructions: Iterable[Instruction], stop_on_failure: bool
) -> Unary[list[InstructionResult]]:
    request = pb.ExecuteRequest(
        vcpu_id=vcpu_id,
        instructions=[i.to_pb() for i in instructions],
        stop_on_failure=stop_on_failure,
    )
    return Unary("Execute", request, lambda r: [InstructionResult.from_pb(x) for x in r.results])


def stats(vcpu_id: str) -> Unary[RunSummary]:
    return Unary("GetStats", pb.GetStatsRequest(vcpu_id=vcpu_id), lambda r: summary_dict(r.summary))


def snapshot(vcpu_id: str) -> Unary[bytes]:
    return Unary("Snapshot", pb.SnapshotRequest(vcpu_id=vcpu_id), lambda r: bytes(r.data))


def restore(data: bytes, vm: str | None) -> Unary[VcpuInfo]:
    return Unary(
        "Restore",
        pb.RestoreRequest(vm_id=vm or "", data=data),
        lambda r: VcpuInfo.from_pb(r.vcpu),
    )


def valid_state(vcpu_id: str, overrides: Mapping[str, int]) -> Unary[dict[str, int]]:
    """ValidState: field name -> value of a VMCS that passes every entry check."""
    request = pb.ValidStateRequest(vcpu_id=vcpu_id, overrides=dict(overrides))
    return Unary("ValidState", request, lambda r: {f.name: f.value for f in r.fields})


# --- harness helpers -----------------------------------------------------------------------------


def enter_vmx_instructions(vmxon_region: int, vmcs_region: int) -> list[Instruction]:
    """The revision identifier into both regions, VMXON, VMCLEAR and VMPTRLD of the VMCS."""
    return [
        Instruction("REVID", (vmxon_region,)),
        Instruction("VMXON", (vmxon_region,)),
        Instruction("REVID", (vmcs_region,)),
        Instruction("VMCLEAR", (vmcs_region,)),
        Instruction("VMPTRLD", (vmcs_region,)),
    ]


def valid_state_writes(state: Mapping[str, int]) -> list[Instruction]:
    """One VMWRITE per field of ``state``."""
    return [Instruction("VMWRITE", (name, value)) for name, value in state.items()]


def inject_exit_instruction(reason: int | str, qualification: int, **fields: int) -> Instruction:
    """The EXIT pseudo-op: ``reason`` by name or number, the other exit information by name."""
    names = [o.name for o in _EXIT_OPERANDS]
    unknown = set(fields) - set(names)
    if unknown:
        raise ValueError(f"inject_exit: unknown exit field {sorted(unknown)[0]!r}")
    values = {"reason": reason, "qualification": qualification, **fields}
    return Instruction("EXIT", tuple(values.get(name, 0) for name in names))


def require_ok(what: str, results: list[InstructionResult]) -> list[InstructionResult]:
    """``results`` when every instruction succeeded; else VmxSetupError naming the first
    failure."""
    for result in results:
        if not result.ok:
            raise VmxSetupError(what, result, results)
    return results


# --- streams -------------------------------------------------------------------------------------


def drive_requests(
    vcpu_id: str, source: Any, batch_size: int, per_exit: bool
) -> Iterator[pb.DriveRequest]:
    """A Drive stream's requests: the vCPU, then the exits of ``source`` in batches."""
    yield pb.DriveRequest(vcpu_id=vcpu_id, per_exit=per_exit)
    for batch in exit_batches(source, batch_size):
        yield pb.DriveRequest(batch=batch, per_exit=per_exit)


def replay_feed(
    source: Any,
    *,
    profile: str,
    mode: str,
    vcpu: str | None,
    batch_size: int,
    per_exit: bool,
    skipped: int,
    unknown_reasons: Mapping[str, int] | None,
    resume_token: str,
    max_unacked: int,
    l0: str | None = None,
) -> ReplayFeed:
    """The request side of a replay (see ``resume.ReplayFeed``); with ``resume_token`` it
    continues the replay another process started, the batches up to its last acknowledgement
    being sent again and acknowledged as duplicates. ValueError for an unknown profile or
    mode."""
    start = pb.ReplayStart(
        vcpu_id=vcpu or "",
        profile=check_profile(profile),
        mode=mode_to_pb(check_mode(mode)),
        per_exit=per_exit,
        skipped=skipped,
        l0=l0 or "",
        unknown_reasons=dict(unknown_reasons or {}),
    )

    def end() -> pb.ReplayEnd:
        return pb.ReplayEnd(
            skipped=getattr(source, "skipped", 0),
            unknown_reasons=dict(getattr(source, "unknown_reasons", None) or {}),
        )

    feed = ReplayFeed(start, exit_batches(source, batch_size), end, max_unacked)
    feed.token = resume_token
    return feed


def drive_summary(info: VcpuInfo, totals: StatsAccumulator) -> DriveSummary:
    """A vCPU's Drive totals in run-summary shape, with its id and the stream's batch count."""
    totals.profile, totals.mode = info.profile, info.mode
    return {"vcpu_id": info.vcpu_id, "batches": totals.batches, **totals.summary()}


def progress_dict(p: pb.ReplayProgress) -> ReplayProgress:
    """A ReplayProgress as ``on_progress`` receives it."""
    return {
        "acked_sequence": p.acked_sequence,
        "exits": p.exits,
        "batch": batch_dict(p.batch),
        "resume_token": p.resume_token,
        "duplicate": p.duplicate,
    }


EARLY_RETRIES = 3
"""Attempts a replay gets again, even without ``resume``, when its stream is CANCELLED or
UNAVAILABLE before the first acknowledgement on a temporary vCPU (issue 15.3): nothing ran
yet, so starting over is exact. A server under many streams may cancel a call it has not yet
picked up; a server that is restarting answers UNAVAILABLE for a moment."""
_EARLY_CODES = ("CANCELLED", "UNAVAILABLE")
_RESUME_CODES = ("UNAVAILABLE", "ABORTED")


class ReplayRetry:
    """When a lost replay stream is tried again: with ``resume``, while the feed can resume and
    for up to ``timeout`` seconds since the last attempt that made progress, with backoff from
    0.1 s doubling to 2 s; without it, up to ``EARLY_RETRIES`` times when the stream was lost
    before its first acknowledgement and starting over is exact (``ReplayFeed.can_resume``)."""

    def __init__(self, feed: ReplayFeed, resume: bool, timeout: float) -> None:
        self.feed = feed
        self.resume = resume
        self.timeout = timeout
        self._failures = 0
        self._acks = 0
        self._give_up = 0.0
        self._early = 0

    def delay(self, code: str = "UNAVAILABLE") -> float | None:
        """After a stream lost with status ``code`` (a ``grpc.StatusCode`` name): seconds to
        wait before the next attempt, or None to give up. The caller then calls
        ``feed.next_attempt()`` and runs the next attempt."""
        if not (self.resume and code in _RESUME_CODES):
            return self._early_delay(code)
        now = time.monotonic()
        if self.feed.acks != self._acks:  # progress since the last failure: a fresh allowance
            self._failures, self._acks, self._give_up = 0, self.feed.acks, 0.0
        self._give_up = self._give_up or now + self.timeout
        if not self.resume or not self.feed.can_resume() or now >= self._give_up:
            return None
        wait = min(0.1 * 2.0**self._failures, 2.0)
        self._failures += 1
        return wait

    def _early_delay(self, code: str) -> float | None:
        """Start over (0.1, 0.2, 0.4 s later) a stream lost before anything was acknowledged."""
        early = code in _EARLY_CODES and not self.feed.acks and self.feed.can_resume()
        if not early or self._early >= EARLY_RETRIES:
            return None
        self._early += 1
        return 0.1 * 2.0 ** (self._early - 1)
