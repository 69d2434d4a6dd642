"""The typed vmxsim client: vCPUs, VMX instructions, exit streams, stats and snapshots over gRPC.

    with Client("127.0.0.1:50051", timeout=30.0) as c:
        v = c.create_vcpu(profile="kvm", mode="nested")
        v.revid(0x1000); v.vmxon(0x1000)
        v.revid(0x2000); v.vmptrld(0x2000)
        v.vmwrite("GUEST_RIP", 0x1000)
        assert v.vmread(0x681E).value == 0x1000
        summary = c.replay(records, profile="haxm-legacy", mode="nested")

TLS: ``Client(target, tls_ca="ca.pem")``; mutual TLS adds ``tls_cert=`` and ``tls_key=``
(PEM file paths or bytes); ``token=`` sends ``authorization: Bearer <token>`` with every call.
``replay(..., resume=True)`` survives a server restart (resume.py).

Instruction outcomes are values (``InstructionResult``); failed RPCs raise the typed exceptions
of ``rpc_errors``. Exits travel as packed-column batches (``wire.exit_batches``); summaries are
the run-summary dicts of DESIGN.md "Machine-readable output".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc

from .connection import retry_channel_options
from .instructions import Instruction, InstructionResult
from .resume import DEFAULT_MAX_UNACKED, ReplayFeed
from .rpc_errors import AbortedError, UnavailableError, from_rpc_error
from .wire import (
    StatsAccumulator,
    VcpuInfo,
    VmInfo,
    batch_dict,
    exit_batches,
    mode_to_pb,
    summary_dict,
)

__all__ = ["CHANNEL_OPTIONS", "DEFAULT_BATCH_SIZE", "Client", "RemoteVcpu"]

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

DEFAULT_BATCH_SIZE = 4096
"""Exits per streamed batch: large enough to amortise a message, small enough for progress."""

_Response = TypeVar("_Response")
Operand = int | str
Pem = str | os.PathLike[str] | bytes
"""A PEM file's path or its contents."""

RESUME_TIMEOUT_SECONDS = 60.0
"""How long ``replay(resume=True)`` keeps retrying a lost server before giving up."""


def _pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def channel_credentials(
    tls: bool = False,
    tls_ca: Pem | None = None,
    tls_cert: Pem | None = None,
    tls_key: Pem | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials when any TLS setting is given, else None (plaintext); shared by the
    sync client and the load generator's aio channels."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("a client certificate (tls_cert) and its key (tls_key) go together")
    if not (tls or tls_ca or tls_cert):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(tls_ca), private_key=_pem(tls_key), certificate_chain=_pem(tls_cert)
    )


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The call metadata that carries ``token`` (None without one)."""
    return (("authorization", f"Bearer {token}"),) if token else None


def _channel(
    target: str, tls_ca: Pem | None, tls_cert: Pem | None, tls_key: Pem | None, tls: bool
) -> grpc.Channel:
    """A plaintext channel, or a TLS one when any TLS setting is given."""
    credentials = channel_credentials(tls, tls_ca, tls_cert, tls_key)
    if credentials is None:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)


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


class Client:
    """A connection to one vmxsim server. ``timeout`` bounds each unary call (seconds);
    ``stream_timeout`` bounds a whole drive or replay stream (None = no deadline).

    TLS is used when ``tls`` is true or any of ``tls_ca`` (the CA that signed the server's
    certificate; None = the system's roots), ``tls_cert``/``tls_key`` (a client certificate,
    for mutual TLS) is given. ``token`` is sent as ``authorization: Bearer <token>``.
    """

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
        self._channel = _channel(target, tls_ca, tls_cert, tls_key, tls)
        self._stub = pb_grpc.VcpuServiceStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    # --- VMs -------------------------------------------------------------------------------------

    def create_vm(self, maxphyaddr: int = 0) -> VmInfo:
        """A new empty VM (``maxphyaddr`` 0 = the server's default)."""
        reply = self._call(self._stub.CreateVm, pb.CreateVmRequest(maxphyaddr=maxphyaddr))
        return VmInfo.from_pb(reply.vm)

    def list_vms(self) -> list[VmInfo]:
        """Every VM on the server."""
        return [VmInfo.from_pb(v) for v in self._call(self._stub.ListVms, pb.ListVmsRequest()).vms]

    def delete_vm(self, vm_id: str) -> None:
        """Delete a VM and its vCPUs."""
        self._call(self._stub.DeleteVm, pb.DeleteVmRequest(vm_id=vm_id))

    # --- vCPUs -----------------------------------------------------------------------------------

    def create_vcpu(
        self,
        profile: str = "kvm",
        mode: str = "native",
        *,
        vm: str | None = None,
        revision_id: int | None = None,
        maxphyaddr: int | None = None,
        vmx_misc_bit29: bool | None = None,
        vmcs_shadowing: bool | None = None,
        cr3_target_count: int | None = None,
        feature_control: int | None = None,
        l0: str | None = None,
    ) -> RemoteVcpu:
        """A new vCPU outside VMX operation; capabilities left None take the server's default;
        ``l0`` names the L0 model of a nested mode (None = the profile's default)."""
        given: dict[str, Any] = {
            "revision_id": revision_id,
            "maxphyaddr": maxphyaddr,
            "vmx_misc_bit29": vmx_misc_bit29,
            "vmcs_shadowing": vmcs_shadowing,
            "cr3_target_count": cr3_target_count,
            "feature_control": feature_control,
        }
        capabilities = pb.Capabilities(**{k: v for k, v in given.items() if v is not None})
        request = pb.CreateVcpuRequest(
            vm_id=vm or "",
            profile=profile,
            mode=mode_to_pb(mode),
            capabilities=capabilities,
            l0=l0 or "",
        )
        reply = self._call(self._stub.CreateVcpu, request)
        return RemoteVcpu(self, VcpuInfo.from_pb(reply.vcpu))

    def vcpu(self, vcpu_id: str) -> RemoteVcpu:
        """A handle on an existing vCPU (one GetVcpu call; NotFoundError when unknown)."""
        return RemoteVcpu(self, self.get_vcpu(vcpu_id))

    def get_vcpu(self, vcpu_id: str) -> VcpuInfo:
        """One vCPU's current state."""
        reply = self._call(self._stub.GetVcpu, pb.GetVcpuRequest(vcpu_id=vcpu_id))
        return VcpuInfo.from_pb(reply.vcpu)

    def list_vcpus(self, vm: str | None = None) -> list[VcpuInfo]:
        """Every vCPU, or those of one VM."""
        reply = self._call(self._stub.ListVcpus, pb.ListVcpusRequest(vm_id=vm or ""))
        return [VcpuInfo.from_pb(v) for v in reply.vcpus]

    def delete_vcpu(self, vcpu_id: str) -> None:
        """Delete one vCPU."""
        self._call(self._stub.DeleteVcpu, pb.DeleteVcpuRequest(vcpu_id=vcpu_id))

    # --- instructions, exits, stats --------------------------------------------------------------

    def execute(
        self, vcpu_id: str, instructions: Iterable[Instruction], *, stop_on_failure: bool = False
    ) -> list[InstructionResult]:
        """Run instructions in order in one Execute call; one result per executed instruction."""
        request = pb.ExecuteRequest(
            vcpu_id=vcpu_id,
            instructions=[i.to_pb() for i in instructions],
            stop_on_failure=stop_on_failure,
        )
        reply = self._call(self._stub.Execute, request)
        return [InstructionResult.from_pb(r) for r in reply.results]

    def drive(
        self,
        vcpu_id: str,
        source: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        per_exit: bool = False,
        on_batch: Callable[[dict[str, Any]], None] | None = None,
    ) -> StatsAccumulator:
        """Drive a vCPU with exits (records, column batches or a trace reader: see
        ``wire.exit_batches``); returns the summed batch stats (``.summary()``)."""

        def requests() -> Iterator[pb.DriveRequest]:
            yield pb.DriveRequest(vcpu_id=vcpu_id, per_exit=per_exit)
            for batch in exit_batches(source, batch_size):
                yield pb.DriveRequest(batch=batch, per_exit=per_exit)

        totals = StatsAccumulator()
        for response in self._stream(self._stub.Drive, requests()):
            totals.add(response.stats)
            if on_batch is not None:
                on_batch(batch_dict(response.stats))
        return totals

    def replay(
        self,
        source: Any,
        profile: str = "kvm",
        mode: str = "native",
        *,
        vcpu: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        per_exit: bool = False,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        skipped: int = 0,
        unknown_reasons: Mapping[str, int] | None = None,
        resume: bool = False,
        resume_timeout: float = RESUME_TIMEOUT_SECONDS,
        max_unacked: int = DEFAULT_MAX_UNACKED,
        l0: str | None = None,
    ) -> dict[str, Any]:
        """Replay exits (records, column batches or a trace reader) on a temporary vCPU of
        ``profile``/``mode`` (and L0 model ``l0`` when nested; or on ``vcpu``); returns the run
        summary.

        ``on_progress`` gets one dict per acknowledged batch: ``acked_sequence``, ``exits`` so
        far, ``batch`` (``wire.batch_dict``), ``resume_token`` and ``duplicate`` (a batch sent
        again after a resume, not run twice). ``skipped`` and ``unknown_reasons`` are counts
        known before the first exit; a trace reader's own counters (``.skipped``,
        ``.unknown_reasons``) are sent when the stream ends.

        With ``resume``, a stream lost to UNAVAILABLE or ABORTED (the server died or restarts)
        is retried with backoff for up to ``resume_timeout`` seconds and continues after the
        last acknowledged batch (the server needs ``--state-dir``; see resume.py). At most
        ``max_unacked`` batches are in flight.
        """
        start = pb.ReplayStart(
            vcpu_id=vcpu or "",
            profile=profile,
            mode=mode_to_pb(mode),
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
        failures, acks, give_up = 0, 0, 0.0
        while True:
            try:
                return self._replay_attempt(feed, on_progress)
            except (UnavailableError, AbortedError):
                now = time.monotonic()
                if feed.acks != acks:  # progress since the last failure: a fresh allowance
                    failures, acks, give_up = 0, feed.acks, 0.0
                give_up = give_up or now + resume_timeout
                if not resume or not feed.can_resume() or now >= give_up:
                    raise
            time.sleep(min(0.1 * 2**failures, 2.0))
            failures += 1
            feed.next_attempt()

    def _replay_attempt(
        self, feed: ReplayFeed, on_progress: Callable[[dict[str, Any]], None] | None
    ) -> dict[str, Any]:
        """One Replay stream of ``feed``: the summary, or the error that cut the stream. The
        stream is read to its end after the summary, so the call ends with the server's OK
        rather than a cancel (which the server's metrics would count as an error)."""
        summary = None
        for response in self._stream(self._stub.Replay, feed.requests()):
            if response.HasField("summary"):
                summary = summary_dict(response.summary)
                continue
            p = response.progress
            feed.acknowledged(p.acked_sequence, p.resume_token)
            if on_progress is not None:
                on_progress(
                    {
                        "acked_sequence": p.acked_sequence,
                        "exits": p.exits,
                        "batch": batch_dict(p.batch),
                        "resume_token": p.resume_token,
                        "duplicate": p.duplicate,
                    }
                )
        if summary is None:
            raise RuntimeError("the replay stream ended without a summary")
        return summary

    def stats(self, vcpu_id: str) -> dict[str, Any]:
        """The run summary of every exit a vCPU has handled."""
        reply = self._call(self._stub.GetStats, pb.GetStatsRequest(vcpu_id=vcpu_id))
        return summary_dict(reply.summary)

    # --- snapshots -------------------------------------------------------------------------------

    def snapshot(self, vcpu_id: str) -> bytes:
        """A vCPU's opaque snapshot (capabilities, VMX state, its VM's memory)."""
        return self._call(self._stub.Snapshot, pb.SnapshotRequest(vcpu_id=vcpu_id)).data

    def restore(self, data: bytes, vm: str | None = None) -> RemoteVcpu:
        """A new vCPU from snapshot bytes, in ``vm`` or a new VM."""
        reply = self._call(self._stub.Restore, pb.RestoreRequest(vm_id=vm or "", data=data))
        return RemoteVcpu(self, VcpuInfo.from_pb(reply.vcpu))


class RemoteVcpu:
    """One vCPU on the server: VMX instructions as methods, each one Execute call.

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

    def _one(self, op: str, *operands: Operand) -> InstructionResult:
        return self.execute([Instruction(op, operands)])[0]

    def vmxon(self, address: int) -> InstructionResult:
        """VMXON with the VMXON region at ``address``."""
        return self._one("VMXON", address)

    def vmxoff(self) -> InstructionResult:
        """VMXOFF."""
        return self._one("VMXOFF")

    def vmclear(self, address: int) -> InstructionResult:
        """VMCLEAR of the VMCS at ``address``."""
        return self._one("VMCLEAR", address)

    def vmptrld(self, address: int) -> InstructionResult:
        """VMPTRLD of the VMCS at ``address``."""
        return self._one("VMPTRLD", address)

    def vmptrst(self) -> InstructionResult:
        """VMPTRST: the current-VMCS pointer in ``.value``."""
        return self._one("VMPTRST")

    def vmread(self, field: Operand) -> InstructionResult:
        """VMREAD of a field (name or encoding): the value in ``.value``."""
        return self._one("VMREAD", field)

    def vmwrite(self, field: Operand, value: int) -> InstructionResult:
        """VMWRITE of a field (name or encoding)."""
        return self._one("VMWRITE", field, value)

    def vmlaunch(self) -> InstructionResult:
        """VMLAUNCH."""
        return self._one("VMLAUNCH")

    def vmresume(self) -> InstructionResult:
        """VMRESUME."""
        return self._one("VMRESUME")

    def mem32(self, address: int, value: int) -> InstructionResult:
        """Pseudo-op: write 32 bits of the VM's memory."""
        return self._one("MEM32", address, value)

    def revid(self, address: int) -> InstructionResult:
        """Pseudo-op: write the vCPU's VMCS revision identifier at ``address``."""
        return self._one("REVID", address)

    def cr0(self, value: int) -> InstructionResult:
        """Pseudo-op: set CR0."""
        return self._one("CR0", value)

    def cr4(self, value: int) -> InstructionResult:
        """Pseudo-op: set CR4."""
        return self._one("CR4", value)

    def wrmsr(self, index: int, value: int) -> InstructionResult:
        """Pseudo-op: write an MSR."""
        return self._one("WRMSR", index, value)

    def exit(
        self,
        reason: Operand,
        qualification: int = 0,
        *,
        rip: int = 0,
        info2: int = 0,
        intr_info: int = 0,
        error_code: int = 0,
        guest_physical_address: int = 0,
        instruction_len: int = 0,
    ) -> InstructionResult:
        """Pseudo-op: deliver a VM exit (reason by name or number) to the vCPU in non-root."""
        return self._one(
            "EXIT", reason, qualification, rip, info2, intr_info, error_code,
            guest_physical_address, instruction_len,
        )  # fmt: skip

    def drive(
        self,
        source: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        per_exit: bool = False,
        on_batch: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Drive exits through this vCPU (Drive stream); returns the totals in run-summary
        shape plus ``vcpu_id`` and ``batches`` (p50/p99 per exit only with ``per_exit``)."""
        totals = self.client.drive(
            self.id, source, batch_size=batch_size, per_exit=per_exit, on_batch=on_batch
        )
        totals.profile, totals.mode = self.info.profile, self.info.mode
        return {"vcpu_id": self.id, "batches": totals.batches, **totals.summary()}

    def replay(self, source: Any, **options: Any) -> dict[str, Any]:
        """Replay exits on this vCPU (Replay stream); see ``Client.replay``."""
        return self.client.replay(source, vcpu=self.id, **options)

    def stats(self) -> dict[str, Any]:
        """The run summary of every exit this vCPU has handled."""
        return self.client.stats(self.id)

    def snapshot(self) -> bytes:
        """This vCPU's snapshot bytes."""
        return self.client.snapshot(self.id)
