"""The asyncio client on ``grpc.aio``: the methods of ``Client`` as coroutines.

    async with AsyncClient("127.0.0.1:50051") as c:
        v = await c.create_vcpu(profile="kvm", mode="nested")
        await v.enter_vmx()
        await v.write_valid_state()
        assert (await v.vmlaunch()).result == "VMsucceed"
        summary = await c.replay(records, profile="haxm-legacy", mode="nested")

Requests and answers are those of ``calls`` (shared with the sync ``Client``). Exit sources are
read in a worker thread (``asyncio.to_thread``), so a trace file or a full resume buffer never
blocks the event loop; callbacks (``on_batch``, ``on_progress``) run on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio

from . import calls
from .calls import DEFAULT_VMCS_REGION, DEFAULT_VMXON_REGION, VmxMsrs
from .client import DEFAULT_BATCH_SIZE, RESUME_TIMEOUT_SECONDS, Connection
from .instructions import Instruction, InstructionResult
from .names import Mode, Profile
from .resume import DEFAULT_MAX_UNACKED, ReplayFeed
from .rpc_errors import VmxsimRpcError, from_rpc_error
from .summaries import BatchReport, DriveSummary, ReplayProgress, RunSummary
from .vcpu_ops import VcpuInstructions
from .wire import StatsAccumulator, VcpuInfo, VmInfo, batch_dict, summary_dict

if TYPE_CHECKING:  # the discovery answers' types (annotations only)
    from .wire import L0ModelInfo, MixInfo, ProfileInfo

__all__ = ["AsyncClient", "AsyncRemoteVcpu"]

T = TypeVar("T")
_END = object()


class _Requests:
    """A sync request iterator read in a worker thread, as an async iterator; remembers the
    exception that ended it (e.g. a strict reader's parse error) and cancels the call, so the
    caller raises it instead of the resulting CANCELLED."""

    def __init__(self, requests: Iterator[Any]) -> None:
        self._requests = requests
        self.error: BaseException | None = None
        self.call: Any = None

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            try:
                item = await asyncio.to_thread(next, self._requests, _END)
            except Exception as exc:
                self.error = exc
                if self.call is not None:
                    self.call.cancel()
                return
            if item is _END:
                return
            yield item


class AsyncClient(Connection):
    """An asyncio connection to one vmxsim server; the options are ``Client``'s
    (``Connection``)."""

    transport = grpc.aio

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _unary(self, call: calls.Unary[T]) -> T:
        method = getattr(self._stub, call.method)
        try:
            reply = await method(call.request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return call.parse(reply)

    async def _stream(self, method: Any, requests: Iterator[Any]) -> AsyncIterator[Any]:
        """Run a bidi stream; yields responses; raises a request-side error or a typed error."""
        source = _Requests(requests)
        call = method(aiter(source), timeout=self.stream_timeout, metadata=self._metadata)
        source.call = call
        try:
            async for response in call:
                yield response
        except (grpc.RpcError, asyncio.CancelledError) as exc:
            if source.error is not None:
                raise source.error from None
            if isinstance(exc, grpc.RpcError):
                raise from_rpc_error(exc) from None
            raise
        finally:
            call.cancel()
        if source.error is not None:
            raise source.error

    # --- what the server offers ------------------------------------------------------------------

    async def list_profiles(self) -> list[ProfileInfo]:
        """The hypervisor access models the server offers (names for ``profile``)."""
        return await self._unary(calls.list_profiles())

    async def list_mixes(self) -> list[MixInfo]:
        """The exit-reason mixes the server offers (the CLI's ``mix:NAME`` traces)."""
        return await self._unary(calls.list_mixes())

    async def list_l0_models(self) -> list[L0ModelInfo]:
        """The L0 models the server offers (names for ``l0``)."""
        return await self._unary(calls.list_l0_models())

    # --- VMs and vCPUs ---------------------------------------------------------------------------

    async def create_vm(self, maxphyaddr: int = 0) -> VmInfo:
        """A new empty VM (``maxphyaddr`` 0 = the server's default)."""
        return await self._unary(calls.create_vm(maxphyaddr))

    async def list_vms(self) -> list[VmInfo]:
        """Every VM on the server."""
        return await self._unary(calls.list_vms())

    async def delete_vm(self, vm_id: str) -> None:
        """Delete a VM and its vCPUs."""
        await self._unary(calls.delete_vm(vm_id))

    async def create_vcpu(
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
    ) -> AsyncRemoteVcpu:
        """A new vCPU (``Client.create_vcpu``); ValueError for an unknown profile or mode."""
        info = await self._unary(
            calls.create_vcpu(
                profile, mode, vm, revision_id=revision_id, maxphyaddr=maxphyaddr,
                vmx_misc_bit29=vmx_misc_bit29, vmcs_shadowing=vmcs_shadowing,
                cr3_target_count=cr3_target_count, feature_control=feature_control, l0=l0,
                vmx_msrs=vmx_msrs,
            )
        )  # fmt: skip
        return AsyncRemoteVcpu(self, info)

    async def vcpu(self, vcpu_id: str) -> AsyncRemoteVcpu:
        """A handle on an existing vCPU (NotFoundError when unknown)."""
        return AsyncRemoteVcpu(self, await self.get_vcpu(vcpu_id))

    async def get_vcpu(self, vcpu_id: str) -> VcpuInfo:
        """One vCPU's current state."""
        return await self._unary(calls.get_vcpu(vcpu_id))

    async def list_vcpus(self, vm: str | None = None) -> list[VcpuInfo]:
        """Every vCPU, or those of one VM."""
        return await self._unary(calls.list_vcpus(vm))

    async def delete_vcpu(self, vcpu_id: str) -> None:
        """Delete one vCPU."""
        await self._unary(calls.delete_vcpu(vcpu_id))

    # --- instructions, exits, stats, snapshots ---------------------------------------------------

    async def execute(
        self, vcpu_id: str, instructions: Iterable[Instruction], *, stop_on_failure: bool = False
    ) -> list[InstructionResult]:
        """Run instructions in order in one Execute call."""
        return await self._unary(calls.execute(vcpu_id, instructions, stop_on_failure))

    async def valid_state(self, vcpu_id: str, **overrides: int) -> dict[str, int]:
        """A VMCS that passes every entry check for the vCPU (``Client.valid_state``)."""
        return await self._unary(calls.valid_state(vcpu_id, overrides))

    async def drive(
        self,
        vcpu_id: str,
        source: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        per_exit: bool = False,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> StatsAccumulator:
        """Drive a vCPU with exits; returns the summed batch stats (``Client.drive``)."""
        requests = calls.drive_requests(vcpu_id, source, batch_size, per_exit)
        totals = StatsAccumulator()
        async for response in self._stream(self._stub.Drive, requests):
            totals.add(response.stats)
            if on_batch is not None:
                on_batch(batch_dict(response.stats))
        return totals

    async def replay(
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
        """Replay exits and return the run summary; the options are ``Client.replay``'s."""
        feed = calls.replay_feed(
            source, profile=profile, mode=mode, vcpu=vcpu, batch_size=batch_size,
            per_exit=per_exit, skipped=skipped, unknown_reasons=unknown_reasons,
            resume_token=resume_token, max_unacked=max_unacked, l0=l0,
        )  # fmt: skip
        retry = calls.ReplayRetry(feed, resume, resume_timeout)
        try:
            while True:
                try:
                    return await self._replay_attempt(feed, on_progress)
                except VmxsimRpcError as exc:
                    delay = retry.delay(exc.code.name)
                    if delay is None:
                        raise
                await asyncio.sleep(delay)
                feed.next_attempt()
        finally:
            feed.next_attempt()  # release the reading thread if it waits for room

    async def _replay_attempt(
        self, feed: ReplayFeed, on_progress: Callable[[ReplayProgress], None] | None
    ) -> RunSummary:
        summary = None
        async for response in self._stream(self._stub.Replay, feed.requests()):
            if response.HasField("summary"):
                summary = summary_dict(response.summary)
                continue
            feed.acknowledged(response.progress.acked_sequence, response.progress.resume_token)
            if on_progress is not None:
                on_progress(calls.progress_dict(response.progress))
        if summary is None:
            raise RuntimeError("the replay stream ended without a summary")
        return summary

    async def stats(self, vcpu_id: str) -> RunSummary:
        """The run summary of every exit a vCPU has handled."""
        return await self._unary(calls.stats(vcpu_id))

    async def snapshot(self, vcpu_id: str) -> bytes:
        """A vCPU's opaque snapshot."""
        return await self._unary(calls.snapshot(vcpu_id))

    async def restore(self, data: bytes, vm: str | None = None) -> AsyncRemoteVcpu:
        """A new vCPU from snapshot bytes, in ``vm`` or a new VM."""
        return AsyncRemoteVcpu(self, await self._unary(calls.restore(data, vm)))


_Result = Coroutine[Any, Any, InstructionResult]


class AsyncRemoteVcpu(VcpuInstructions[_Result]):
    """One vCPU on the server, for asyncio: ``await v.vmxon(0x1000)``; the helpers of
    ``RemoteVcpu`` as coroutines."""

    def __init__(self, client: AsyncClient, info: VcpuInfo) -> None:
        self.client = client
        self.info = info
        self.id = info.vcpu_id

    def __repr__(self) -> str:
        return f"AsyncRemoteVcpu({self.id!r}, profile={self.info.profile!r})"

    async def refresh(self) -> VcpuInfo:
        """Fetch the current state into ``info``."""
        self.info = await self.client.get_vcpu(self.id)
        return self.info

    async def delete(self) -> None:
        """Delete this vCPU on the server."""
        await self.client.delete_vcpu(self.id)

    async def execute(
        self, instructions: Iterable[Instruction], *, stop_on_failure: bool = False
    ) -> list[InstructionResult]:
        """Run a batch of instructions in one call."""
        return await self.client.execute(self.id, instructions, stop_on_failure=stop_on_failure)

    async def _one(self, op: str, *operands: int | str) -> InstructionResult:
        return (await self.execute([Instruction(op, operands)]))[0]

    async def enter_vmx(
        self, vmxon_region: int = DEFAULT_VMXON_REGION, vmcs_region: int = DEFAULT_VMCS_REGION
    ) -> list[InstructionResult]:
        """VMX root operation with a current VMCS (``RemoteVcpu.enter_vmx``)."""
        steps = calls.enter_vmx_instructions(vmxon_region, vmcs_region)
        return calls.require_ok("enter_vmx", await self.execute(steps))

    async def write_valid_state(self, **overrides: int) -> dict[str, int]:
        """VMWRITE a VMCS that passes every entry check (``RemoteVcpu.write_valid_state``)."""
        state = await self.client.valid_state(self.id, **overrides)
        writes = calls.valid_state_writes(state)
        calls.require_ok("write_valid_state", await self.execute(writes))
        return state

    async def inject_exit(
        self, reason: int | str, qualification: int = 0, **exit_fields: int
    ) -> InstructionResult:
        """Deliver a VM exit to the running guest (``RemoteVcpu.inject_exit``)."""
        instruction = calls.inject_exit_instruction(reason, qualification, **exit_fields)
        return calls.require_ok("inject_exit", await self.execute([instruction]))[0]

    async def drive(
        self,
        source: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        per_exit: bool = False,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> DriveSummary:
        """Drive exits through this vCPU (``RemoteVcpu.drive``)."""
        totals = await self.client.drive(
            self.id, source, batch_size=batch_size, per_exit=per_exit, on_batch=on_batch
        )
        return calls.drive_summary(self.info, totals)

    async def replay(self, source: Any, **options: Any) -> RunSummary:
        """Replay exits on this vCPU; see ``Client.replay``."""
        return await self.client.replay(source, vcpu=self.id, **options)

    async def stats(self) -> RunSummary:
        """The run summary of every exit this vCPU has handled."""
        return await self.client.stats(self.id)

    async def snapshot(self) -> bytes:
        """This vCPU's snapshot bytes."""
        return await self.client.snapshot(self.id)
