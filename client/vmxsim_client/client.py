"""The typed vmxsim client: vCPUs, VMX instructions, exit streams, stats and snapshots over gRPC.

    with Client("127.0.0.1:50051", timeout=30.0) as c:
        v = c.create_vcpu(profile="kvm", mode="nested")
        v.enter_vmx()                          # VMXON at 0x1000, a current VMCS at 0x2000
        v.write_valid_state(GUEST_RIP=0x1000)  # a VMCS that passes every entry check
        assert v.vmlaunch().result == "VMsucceed"
        v.inject_exit("CPUID", instruction_len=2)
        assert v.vmread("VM_EXIT_REASON").value == 10
        summary = c.replay(records, profile="haxm-legacy", mode="nested")
        print(summary["exits"], summary["per_exit"]["vmread"]["mean"])

TLS: ``Client(target, tls_ca="ca.pem")``; mutual TLS adds ``tls_cert=`` and ``tls_key=``
(PEM file paths or bytes); ``token=`` sends ``authorization: Bearer <token>`` with every call.
``replay(..., resume=True)`` survives a server restart (resume.py); ``replay(...,
resume_token=t)`` continues in this process a replay another process started.

Instruction outcomes are values (``InstructionResult``); failed RPCs raise the typed exceptions
of ``rpc_errors``; the harness helpers raise ``VmxSetupError`` when a step fails. Exits travel
as packed-column batches (``wire.exit_batches``); summaries are the typed dicts of
``summaries`` (DESIGN.md "Machine-readable output"). Requests are built and answers parsed in
``calls``, shared with the asyncio ``AsyncClient`` (aio.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc

from . import calls
from .calls import DEFAULT_VMCS_REGION, DEFAULT_VMXON_REGION, VmxMsrs
from .connection import retry_channel_options
from .diagnoses import Capabilities as DiagnoseCapabilities
from .diagnoses import diagnose_request, diagnosis_doc
from .instructions import Instruction, InstructionResult
from .names import Mode, Profile
from .resume import DEFAULT_BATCH_SIZE, DEFAULT_MAX_UNACKED, ReplayFeed
from .rpc_errors import VmxsimRpcError, from_rpc_error
from .summaries import BatchReport, DriveSummary, ReplayProgress, RunSummary
from .vcpu_ops import VcpuInstructions
from .wire import StatsAccumulator, VcpuInfo, VmInfo, batch_dict, summary_dict

if TYPE_CHECKING:  # the discovery answers' types (annotations only)
    from .wire import L0ModelInfo, MixInfo, ProfileInfo

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_BATCH_SIZE",
    "Client",
    "Connection",
    "RemoteVcpu",
    "open_channel",
]

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = (
    # snapshots carry a VM's memory; replay summaries and per-exit arrays can exceed 4 MiB
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # reconnect soon after a server restart (gRPC's default backoff grows to 120 s)
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    # retries of the idempotent unary RPCs on UNAVAILABLE (connection.SERVICE_CONFIG)
    *retry_channel_options(),
)
"""Options of every channel the client opens (grpc's keep-alive example style: in one place)."""

_Response = TypeVar("_Response")
T = TypeVar("T")
Pem = str | os.PathLike[str] | bytes
"""A PEM file's path or its contents."""

RESUME_TIMEOUT_SECONDS = 60.0
"""How long ``replay(resume=True)`` keeps retrying a lost server before giving up."""


def _pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The call metadata that carries ``token`` (None without one)."""
    return (("authorization", f"Bearer {token}"),) if token else None


def open_channel(
    transport: ModuleType,
    target: str,
    tls_ca: Pem | None,
    tls_cert: Pem | None,
    tls_key: Pem | None,
    tls: bool,
) -> Any:
    """A plaintext channel, or a TLS one when any TLS setting is given; ``transport`` is
    ``grpc`` (a sync channel) or ``grpc.aio`` (an asyncio one)."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("a client certificate (tls_cert) and its key (tls_key) go together")
    if not (tls or tls_ca or tls_cert):
        return transport.insecure_channel(target, options=CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_pem(tls_ca), private_key=_pem(tls_key), certificate_chain=_pem(tls_cert)
    )
    return transport.secure_channel(target, credentials, options=CHANNEL_OPTIONS)


class _Requests:
    """A request iterator that remembers the exception that ended it (e.g. a strict trace
    reader's parse error) and cancels the call, so the caller can raise it instead of the
    resulting CANCELLED."""

    def __init__(self, requests: Iterator[Any]) -> None:
        self._requests = requests
        self.error: BaseException | None = None
        self.call: grpc.RpcContext | None = None

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._requests
        except Exception as exc:
            self.error = exc
            if self.call is not None:
                self.call.cancel()


class Connection:
    """What ``Client`` and ``AsyncClient`` share: one channel to one vmxsim server and the
    options of its calls. ``timeout`` bounds each unary call (seconds); ``stream_timeout``
    bounds a whole drive or replay stream (None = no deadline).

    TLS is used when ``tls`` is true or any of ``tls_ca`` (the CA that signed the server's
    certificate; None = the system's roots), ``tls_cert``/``tls_key`` (a client certificate,
    for mutual TLS) is given. ``token`` is sent as ``authorization: Bearer <token>``.
    """

    transport: ModuleType = grpc
    """``grpc`` or ``grpc.aio``: which kind of channel a subclass opens."""

    def __init__(
        self,
        target: str,
        timeout: float = 30.0,
        *,
        stream_timeout: float | None = 3600.0,
        tls: bool = False,
        tls_ca: Pem | None = None,
        tls_cert: Pem | None = None,
        tls_key: Pem | None = None,
        token: str | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._metadata = bearer_metadata(token)
        self._channel = open_channel(self.transport, target, tls_ca, tls_cert, tls_key, tls)
        self._stub = pb_grpc.VcpuServiceStub(self._channel)


class Client(Connection):
    """A connection to one vmxsim server (options: ``Connection``); every method is one RPC or
    one stream."""

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unary(self, call: calls.Unary[T]) -> T:
        """Run one ``calls`` unary call and parse its answer."""
        return call.parse(self._call(getattr(self._stub, call.method), call.request))

    def _call(self, method: Callable[..., _Response], request: Any) -> _Response:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def _stream(self, method: Callable[..., Any], requests: Iterator[Any]) -> Iterator[Any]:
        """Run a bidi stream; yields responses; raises a request-side error or a typed error."""
        source = _Requests(requests)
        call = method(iter(source), timeout=self.stream_timeout, metadata=self._metadata)
        source.call = call
        try:
            yield from call
        except grpc.RpcError as exc:
            if source.error is not None:
                raise source.error from None
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()  # a no-op once the stream has finished
        if source.error is not None:
            raise source.error

    # --- what the server offers ------------------------------------------------------------------

    def list_profiles(self) -> list[ProfileInfo]:
        """The hypervisor access models the server offers (names for ``profile``)."""
        return self._unary(calls.list_profiles())

    def list_mixes(self) -> list[MixInfo]:
        """The exit-reason mixes the server offers (the CLI's ``mix:NAME`` traces)."""
        return self._unary(calls.list_mixes())

    def list_l0_models(self) -> list[L0ModelInfo]:
        """The L0 models the server offers (names for ``l0``)."""
        return self._unary(calls.list_l0_models())

    # --- VMs -------------------------------------------------------------------------------------

    def create_vm(self, maxphyaddr: int = 0) -> VmInfo:
        """A new empty VM (``maxphyaddr`` 0 = the server's default)."""
        return self._unary(calls.create_vm(maxphyaddr))

    def list_vms(self) -> list[VmInfo]:
        """Every VM on the server."""
        return self._unary(calls.list_vms())

    def delete_vm(self, vm_id: str) -> None:
        """Delete a VM and its vCPUs."""
        self._unary(calls.delete_vm(vm_id))

    # --- vCPUs -----------------------------------------------------------------------------------

    def create_vcpu(
        self,
        profile: Profile = "kvm",
        mode: Mode = "native",
        *,
        vm: str | None = None,
        revision_id: int | None = None,
        maxphyaddr: int | None = None,
        vmx_misc_bit29: bool | None = None,
        vmcs_shadowing: bool | None = None,
        cr3_target_count: int | None = None,
        feature_control: int | None = None,
        l0: str | None = None,
        vmx_msrs: VmxMsrs | None = None,
    ) -> RemoteVcpu:
        """A new vCPU outside VMX operation; capabilities left None take the server's default;
        ``l0`` names the L0 model of a nested mode (None = the profile's default). ValueError for
        an unknown profile or mode. ``vmx_msrs``: IA32_VMX_* MSR values by name or index (or a
        capabilities file's text) applied on top, e.g. ``{"IA32_VMX_BASIC": basic & ~(1 << 55)}``
        for a processor without the TRUE_* controls; InvalidArgumentError names an MSR no
        processor reports. ``vcpu.info.capabilities["vmx_msrs"]`` shows every MSR it got."""
        info = self._unary(
            calls.create_vcpu(
                profile, mode, vm, revision_id=revision_id, maxphyaddr=maxphyaddr,
                vmx_misc_bit29=vmx_misc_bit29, vmcs_shadowing=vmcs_shadowing,
                cr3_target_count=cr3_target_count, feature_control=feature_control, l0=l0,
                vmx_msrs=vmx_msrs,
            )
        )  # fmt: skip
        return RemoteVcpu(self, info)

    def vcpu(self, vcpu_id: str) -> RemoteVcpu:
        """A handle on an existing vCPU (one GetVcpu call; NotFoundError when unknown)."""
        return RemoteVcpu(self, self.get_vcpu(vcpu_id))

    def get_vcpu(self, vcpu_id: str) -> VcpuInfo:
        """One vCPU's current state."""
        return self._unary(calls.get_vcpu(vcpu_id))

    def list_vcpus(self, vm: str | None = None) -> list[VcpuInfo]:
        """Every vCPU, or those of one VM."""
        return self._unary(calls.list_vcpus(vm))

    def delete_vcpu(self, vcpu_id: str) -> None:
        """Delete one vCPU."""
        self._unary(calls.delete_vcpu(vcpu_id))

    # --- instructions, exits, stats --------------------------------------------------------------

    def execute(
        self, vcpu_id: str, instructions: Iterable[Instruction], *, stop_on_failure: bool = False
    ) -> list[InstructionResult]:
        """Run instructions in order in one Execute call; one result per executed instruction."""
        return self._unary(calls.execute(vcpu_id, instructions, stop_on_failure))

    def valid_state(self, vcpu_id: str, **overrides: int) -> dict[str, int]:
        """Field name -> value of a VMCS with which VM entry passes every entry check for the
        vCPU's capabilities (the server derives it from its entry-check table), ``overrides``
        (field names) applied. InvalidArgumentError for an unknown field name."""
        return self._unary(calls.valid_state(vcpu_id, overrides))

    def drive(
        self,
        vcpu_id: str,
        source: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        per_exit: bool = False,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> StatsAccumulator:
        """Drive a vCPU with exits (records, column batches or a trace reader: see
        ``wire.exit_batches``); returns the summed batch stats (``.summary()``)."""
        requests = calls.drive_requests(vcpu_id, source, batch_size, per_exit)
        totals = StatsAccumulator()
        for response in self._stream(self._stub.Drive, requests):
            totals.add(response.stats)
            if on_batch is not None:
                on_batch(batch_dict(response.stats))
        return totals

    def replay(
        self,
        source: Any,
        profile: Profile = "kvm",
        mode: Mode = "native",
        *,
        vcpu: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        per_exit: bool = False,
        on_progress: Callable[[ReplayProgress], None] | None = None,
        skipped: int = 0,
        unknown_reasons: Mapping[str, int] | None = None,
        resume: bool = False,
        resume_token: str = "",
        resume_timeout: float = RESUME_TIMEOUT_SECONDS,
        max_unacked: int = DEFAULT_MAX_UNACKED,
        l0: str | None = None,
    ) -> RunSummary:
        """Replay exits (records, column batches or a trace reader) on a temporary vCPU of
        ``profile``/``mode`` (and L0 model ``l0`` when nested; or on ``vcpu``); returns the run
        summary.

        ``on_progress`` gets one ``ReplayProgress`` per acknowledged batch: ``acked_sequence``,
        ``exits`` so far, ``batch``, ``resume_token`` and ``duplicate`` (a batch sent again
        after a resume, not run twice). ``skipped`` and ``unknown_reasons`` are counts known
        before the first exit; a trace reader's own counters (``.skipped``,
        ``.unknown_reasons``) are sent when the stream ends.

        With ``resume``, a stream lost to UNAVAILABLE or ABORTED (the server died or restarts)
        is retried with backoff for up to ``resume_timeout`` seconds and continues after the
        last acknowledged batch (the server needs ``--state-dir``; see resume.py). At most
        ``max_unacked`` batches are in flight.

        ``resume_token`` (from another process's ``on_progress``) continues that replay: give
        the same ``source`` and ``batch_size``; batches the server already ran are sent again
        and acknowledged as duplicates, the summary counts every exit once. Add
        ``resume=True`` to ride out ABORTED while the other process's stream is still open.
        """
        feed = calls.replay_feed(
            source, profile=profile, mode=mode, vcpu=vcpu, batch_size=batch_size,
            per_exit=per_exit, skipped=skipped, unknown_reasons=unknown_reasons,
            resume_token=resume_token, max_unacked=max_unacked, l0=l0,
        )  # fmt: skip
        retry = calls.ReplayRetry(feed, resume, resume_timeout)
        feed.prime()
        try:
            while True:
                try:
                    return self._replay_attempt(feed, on_progress)
                except VmxsimRpcError as exc:
                    delay = retry.delay(exc.code.name)
                    if delay is None:
                        raise
                time.sleep(delay)
                feed.next_attempt()
        finally:
            feed.next_attempt()  # release a request thread still waiting for room

    def _replay_attempt(
        self, feed: ReplayFeed, on_progress: Callable[[ReplayProgress], None] | None
    ) -> RunSummary:
        """One Replay stream of ``feed``: the summary, or the error that cut the stream. The
        stream is read to its end after the summary, so the call ends with the server's OK
        rather than a cancel (which the server's metrics would count as an error)."""
        summary = None
        for response in self._stream(self._stub.Replay, feed.requests()):
            if response.HasField("summary"):
                summary = summary_dict(response.summary)
                continue
            feed.acknowledged(response.progress.acked_sequence, response.progress.resume_token)
            if on_progress is not None:
                on_progress(calls.progress_dict(response.progress))
        if summary is None:
            raise RuntimeError("the replay stream ended without a summary")
        return summary

    def stats(self, vcpu_id: str) -> RunSummary:
        """The run summary of every exit a vCPU has handled (driven, replayed and injected)."""
        return self._unary(calls.stats(vcpu_id))

    # --- snapshots -------------------------------------------------------------------------------

    def snapshot(self, vcpu_id: str) -> bytes:
        """A vCPU's opaque snapshot (capabilities, VMX state, its VM's memory)."""
        return self._unary(calls.snapshot(vcpu_id))

    def restore(self, data: bytes, vm: str | None = None) -> RemoteVcpu:
        """A new vCPU from snapshot bytes, in ``vm`` or a new VM."""
        return RemoteVcpu(self, self._unary(calls.restore(data, vm)))

    # --- diagnose (issue 12) ---------------------------------------------------------------------

    def diagnose(
        self,
        text: str | bytes | None = None,
        values: Mapping[str, int] | None = None,
        format: str | None = None,
        capabilities: DiagnoseCapabilities | None = None,
    ) -> list[dict[str, Any]]:
        """Diagnose the VMCS dumps in ``text`` (or the field ``values``) with the entry checks:
        one ``vmxsim diagnose --json`` document per dump. ``capabilities``: IA32_VMX_* MSR values
        by index, or a capabilities file's text."""
        request = diagnose_request(text, values, format, capabilities)
        reply = self._call(self._stub.Diagnose, request)
        return [diagnosis_doc(d) for d in reply.diagnoses]


class RemoteVcpu(VcpuInstructions[InstructionResult]):
    """One vCPU on the server: VMX instructions as methods (vcpu_ops.py), each one Execute call,
    and the helpers a harness needs to reach VM entry.

    Use ``execute([...])`` to send many instructions in one call.
    """

    def __init__(self, client: Client, info: VcpuInfo) -> None:
        self.client = client
        self.info = info
        self.id = info.vcpu_id

    def __repr__(self) -> str:
        return f"RemoteVcpu({self.id!r}, profile={self.info.profile!r}, mode={self.info.mode!r})"

    def refresh(self) -> VcpuInfo:
        """Fetch the current state into ``info``."""
        self.info = self.client.get_vcpu(self.id)
        return self.info

    def delete(self) -> None:
        """Delete this vCPU on the server."""
        self.client.delete_vcpu(self.id)

    def execute(
        self, instructions: Iterable[Instruction], *, stop_on_failure: bool = False
    ) -> list[InstructionResult]:
        """Run a batch of instructions in one call."""
        return self.client.execute(self.id, instructions, stop_on_failure=stop_on_failure)

    def _one(self, op: str, *operands: int | str) -> InstructionResult:
        return self.execute([Instruction(op, operands)])[0]

    # --- harness helpers -------------------------------------------------------------------------

    def enter_vmx(
        self, vmxon_region: int = DEFAULT_VMXON_REGION, vmcs_region: int = DEFAULT_VMCS_REGION
    ) -> list[InstructionResult]:
        """Into VMX root operation with a current VMCS, in one Execute call: the revision
        identifier into both regions, VMXON, VMCLEAR and VMPTRLD. VmxSetupError when a step
        fails (e.g. VMXON in VMX operation already)."""
        steps = calls.enter_vmx_instructions(vmxon_region, vmcs_region)
        return calls.require_ok("enter_vmx", self.execute(steps))

    def write_valid_state(self, **overrides: int) -> dict[str, int]:
        """VMWRITE a VMCS with which VMLAUNCH passes every entry check for this vCPU's
        capabilities (``Client.valid_state``), ``overrides`` (field names) applied; returns the
        state written. Needs a current VMCS (``enter_vmx``); VmxSetupError otherwise."""
        state = self.client.valid_state(self.id, **overrides)
        calls.require_ok("write_valid_state", self.execute(calls.valid_state_writes(state)))
        return state

    def inject_exit(
        self, reason: int | str, qualification: int = 0, **exit_fields: int
    ) -> InstructionResult:
        """Deliver a VM exit to the guest running in non-root operation (the EXIT pseudo-op;
        ``exit_fields``: rip, info2, intr_info, error_code, guest_physical_address,
        instruction_len). The exit counts in ``stats()`` and ``refresh().exits`` alike.
        VmxSetupError when no guest runs."""
        instruction = calls.inject_exit_instruction(reason, qualification, **exit_fields)
        return calls.require_ok("inject_exit", self.execute([instruction]))[0]

    # --- streams and state -----------------------------------------------------------------------

    def drive(
        self,
        source: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        per_exit: bool = False,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> DriveSummary:
        """Drive exits through this vCPU (Drive stream); returns the totals in run-summary
        shape plus ``vcpu_id`` and ``batches`` (p50/p99 per exit only with ``per_exit``)."""
        totals = self.client.drive(
            self.id, source, batch_size=batch_size, per_exit=per_exit, on_batch=on_batch
        )
        return calls.drive_summary(self.info, totals)

    def replay(self, source: Any, **options: Any) -> RunSummary:
        """Replay exits on this vCPU (Replay stream); see ``Client.replay``."""
        return self.client.replay(source, vcpu=self.id, **options)

    def stats(self) -> RunSummary:
        """The run summary of every exit this vCPU has handled."""
        return self.client.stats(self.id)

    def snapshot(self) -> bytes:
        """This vCPU's snapshot bytes."""
        return self.client.snapshot(self.id)
