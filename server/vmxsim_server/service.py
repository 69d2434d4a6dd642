"""The ``vmxsim.v1.VcpuService`` servicer on ``grpc.aio``: thin, typed ``(request, context)``
methods that translate the wire to the registry and the core and back.

Core exceptions propagate to ``status.ErrorInterceptor``, which turns them into status codes.
Emulation work (instructions, batches, snapshots) runs on worker threads under the vCPU's lock,
so the event loop keeps answering other calls and health checks meanwhile. A stream's batches
go to its lane (lanes.py: worker threads serve the streams round robin, one batch each per
turn); a stream reads a few requests ahead of the one it answers (``lanes.READ_AHEAD``), so
its next batch is queued while one runs, and answers in order. Streams check their deadline
before each batch, and ``Streams`` keeps a record of open streams so a shutdown can log which
ones it cut.
With a state directory, a replay is persisted after each batch before the batch is
acknowledged, and a ReplayStart with a resume token continues it (state.py).

Hooks of other modules, kept small here: who calls (``_caller``: tenancy.py, security.py) is
passed to every registry call; limits (limits.py, bounds.py) are checked before work starts;
with a state directory a new VM or vCPU is saved before it is acknowledged (``_persist``), and
a batch whose checkpoint cannot be written is undone and answered UNAVAILABLE (replays.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from grpc import aio

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc

from .bounds import add_count_maps, add_counts, deadline_of, idle_bounded
from .config import ServerConfig
from .discovery import DiscoveryMethods
from .execute import check_size, execute
from .lanes import Lanes, in_order
from .paging import numbered_key, paginate
from .registry import Registry, VcpuEntry
from .replays import ReplayRun, bring_back, checkpoint_bytes, rolled_back
from .security import AuthInterceptor, caller_of
from .state import ReplayCheckpoint, StateDir
from .tenancy import Caller
from .translate import (
    batch_stats,
    capability_changes,
    exit_batch,
    mode_from_pb,
    run_summary,
    vcpu_message,
    vm_message,
)
from .valid_state import valid_state_fields
from .vmx.engine import BatchStats
from .vmx.exceptions import InvalidArgument, NotFound, StateError, Unavailable, VmxsimError
from .vmx.snapshot import FORMAT_VERSION

__all__ = ["SERVICE_NAME", "ReplayRun", "StreamInfo", "Streams", "VcpuService"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VcpuService"].full_name
log = logging.getLogger("vmxsim.server")
T = TypeVar("T")
Context = aio.ServicerContext[Any, Any]


@dataclass
class StreamInfo:
    """One open Drive or Replay stream, for logs: what it drives and how far it got."""

    kind: str
    number: int
    vcpu_id: str = ""
    batches: int = 0
    exits: int = 0
    cut: bool = False

    def describe(self) -> str:
        """E.g. ``Drive stream 3 on vcpu-1 (12 batches, 12000 exits)``."""
        target = f" on {self.vcpu_id}" if self.vcpu_id else ""
        return (
            f"{self.kind} stream {self.number}{target} ({self.batches} batches, {self.exits} exits)"
        )


class Streams:
    """The streams open now; a shutdown marks those it cuts."""

    def __init__(self) -> None:
        self.active: dict[int, StreamInfo] = {}
        self._numbers = itertools.count(1)

    def cut_open(self) -> list[StreamInfo]:
        """Mark every open stream as cut (the shutdown's grace ran out) and return them."""
        cut = list(self.active.values())
        for info in cut:
            info.cut = True
        return cut

    @contextmanager
    def track(self, kind: str) -> Iterator[StreamInfo]:
        """Record a stream while it is open; log one line when it ends."""
        info = StreamInfo(kind, next(self._numbers))
        self.active[info.number] = info
        ending = "ended"
        try:
            yield info
        except Exception:
            ending = "failed"
            raise
        except BaseException:  # cancelled: the client went away or the deadline passed
            ending = "cancelled"
            raise
        finally:
            del self.active[info.number]
            log.info(
                "%s %s",
                info.describe(),
                "cut by the shutdown" if info.cut else ending,
                extra={"vcpu_id": info.vcpu_id, "batches": info.batches, "exits": info.exits},
            )


def _check_deadline(deadline: float | None, info: StreamInfo) -> None:
    """Stop a stream whose deadline (``deadline_of``) passed while its last batch ran or
    waited (DEADLINE_EXCEEDED)."""
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(f"deadline exceeded after {info.batches} batches ({info.exits} exits)")


class VcpuService(DiscoveryMethods, pb_grpc.VcpuServiceServicer):
    """vmxsim's one gRPC service over a ``Registry`` (discovery.py: the Discovery RPCs)."""

    def __init__(
        self,
        registry: Registry,
        config: ServerConfig,
        state: StateDir | None = None,
        auth: AuthInterceptor | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self.state = state
        self.auth = auth
        self.streams = Streams()
        self.lanes = Lanes()

    def _caller(self, context: Context) -> Caller:
        return caller_of(self.auth, context.invocation_metadata(), context.peer())

    async def _persist(self, entry: VcpuEntry | None, undo: Callable[[], object]) -> None:
        """Make a new VM (``entry`` None) or vCPU durable before it is acknowledged; when the
        write fails, undo it and answer UNAVAILABLE (retry: nothing was made)."""
        if self.state is None:
            return
        try:
            await self._in_thread(self.state.save_vcpu, self.registry, entry)
        except OSError as exc:
            undo()
            raise Unavailable(
                f"the state directory cannot be written ({exc.strerror or exc}); nothing was"
                " made, retry"
            ) from None

    def _forget_files(self, vcpu_ids: list[str]) -> None:
        if self.state is not None:
            self.state.forget_vcpus(self.registry, vcpu_ids)

    async def _in_thread(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(call, *args)

    @contextmanager
    def _stream(self, kind: str, caller: Caller) -> Iterator[StreamInfo]:
        """Hold a stream slot and track the stream while it is open."""
        with self.registry.stream_slot(caller.identity), self.streams.track(kind) as info:
            yield info

    # --- VMs and vCPUs -------------------------------------------------------------------------

    async def CreateVm(self, request: pb.CreateVmRequest, context: Context) -> pb.CreateVmResponse:
        vm = self.registry.create_vm(request.maxphyaddr, self._caller(context))
        await self._persist(None, partial(self.registry.delete_vm, vm.vm_id))
        return pb.CreateVmResponse(vm=vm_message(vm))

    async def ListVms(self, request: pb.ListVmsRequest, context: Context) -> pb.ListVmsResponse:
        vms = self.registry.list_vms(self._caller(context))
        page = paginate(
            vms, lambda vm: numbered_key(vm.vm_id), request.page_size, request.page_token, "ListVms"
        )
        return pb.ListVmsResponse(
            vms=[vm_message(vm) for vm in page.items], next_page_token=page.next_page_token
        )

    async def DeleteVm(self, request: pb.DeleteVmRequest, context: Context) -> pb.DeleteVmResponse:
        deleted = self.registry.delete_vm(request.vm_id, self._caller(context))
        await self._in_thread(self._forget_files, deleted)
        log.info(
            "deleted %s with %d vCPUs", request.vm_id, len(deleted), extra={"vm_id": request.vm_id}
        )
        return pb.DeleteVmResponse()

    async def CreateVcpu(
        self, request: pb.CreateVcpuRequest, context: Context
    ) -> pb.CreateVcpuResponse:
        changes = (
            capability_changes(request.capabilities) if request.HasField("capabilities") else {}
        )
        entry = self.registry.create_vcpu(
            request.vm_id, request.profile, mode_from_pb(request.mode), changes,
            l0=request.l0, caller=self._caller(context),
        )  # fmt: skip
        await self._persist(entry, partial(self.registry.delete_vcpu, entry.vcpu_id, True))
        log.debug(
            "created %s in %s (%s, %s)", entry.vcpu_id, entry.vm.vm_id, entry.profile, entry.mode,
            extra={"vcpu_id": entry.vcpu_id},
        )  # fmt: skip
        return pb.CreateVcpuResponse(vcpu=vcpu_message(entry))

    async def ListVcpus(
        self, request: pb.ListVcpusRequest, context: Context
    ) -> pb.ListVcpusResponse:
        page = paginate(
            self.registry.list_vcpus(request.vm_id, self._caller(context)),
            lambda entry: numbered_key(entry.vcpu_id),
            request.page_size,
            request.page_token,
            "ListVcpus",
            scope=request.vm_id,
        )
        return pb.ListVcpusResponse(
            vcpus=[vcpu_message(entry) for entry in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetVcpu(self, request: pb.GetVcpuRequest, context: Context) -> pb.GetVcpuResponse:
        entry = self.registry.get(request.vcpu_id, self._caller(context))
        return pb.GetVcpuResponse(vcpu=vcpu_message(entry))

    async def DeleteVcpu(
        self, request: pb.DeleteVcpuRequest, context: Context
    ) -> pb.DeleteVcpuResponse:
        self.registry.delete_vcpu(request.vcpu_id, caller=self._caller(context))
        await self._in_thread(self._forget_files, [request.vcpu_id])
        log.debug("deleted %s", request.vcpu_id, extra={"vcpu_id": request.vcpu_id})
        return pb.DeleteVcpuResponse()

    # --- raw VMX instructions ------------------------------------------------------------------

    async def Execute(self, request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        entry = self.registry.get(request.vcpu_id, self._caller(context))
        check_size(request.instructions, self.config.max_instructions)
        run = partial(
            execute,
            instructions=request.instructions,
            stop_on_failure=request.stop_on_failure,
            registry=self.registry,
            deadline=deadline_of(context),
        )
        results = await self._in_thread(self.registry.change_vcpu, entry, run)
        return pb.ExecuteResponse(results=results)

    # --- streams -------------------------------------------------------------------------------

    def _run_batch(
        self,
        entry: VcpuEntry,
        message: pb.ExitBatch,
        per_exit: bool,
        info: StreamInfo,
        deadline: float | None,
    ) -> BatchStats:
        """Translate and run one batch of a stream (on its lane's worker thread)."""
        _check_deadline(deadline, info)
        batch = exit_batch(message, self.config.max_batch_exits)
        stats = self.registry.run_batch(entry, batch, per_exit)
        info.batches += 1
        info.exits += stats.exits
        return stats

    def _drive_batch(
        self, entry: VcpuEntry, request: pb.DriveRequest, info: StreamInfo, deadline: float | None
    ) -> pb.DriveResponse:
        stats = self._run_batch(entry, request.batch, request.per_exit, info, deadline)
        return pb.DriveResponse(stats=batch_stats(stats, request.per_exit))

    async def Drive(
        self, request_iterator: AsyncIterator[pb.DriveRequest], context: Context
    ) -> AsyncIterator[pb.DriveResponse]:
        caller = self._caller(context)
        with self._stream("Drive", caller) as info:
            requests = idle_bounded(request_iterator, self.config.stream_idle_seconds)
            first = await anext(requests, None)
            if first is None:
                return
            if not first.vcpu_id:
                raise InvalidArgument("the first DriveRequest must name a vcpu_id", field="vcpu_id")
            with self.registry.claim(first.vcpu_id, caller) as entry:
                info.vcpu_id = entry.vcpu_id
                jobs = self._drive_jobs(entry, first, requests, info, deadline_of(context))
                async with aclosing(in_order(self.lanes, jobs)) as responses:
                    async for response in responses:
                        yield response

    async def _drive_jobs(
        self,
        entry: VcpuEntry,
        first: pb.DriveRequest,
        requests: AsyncIterator[pb.DriveRequest],
        info: StreamInfo,
        deadline: float | None,
    ) -> AsyncIterator[Callable[[], pb.DriveResponse]]:
        """A Drive stream's batches as jobs for its lane."""
        request: pb.DriveRequest | None = first
        while request is not None:
            if request.vcpu_id not in ("", entry.vcpu_id):
                raise InvalidArgument(
                    f"this stream drives {entry.vcpu_id}, not {request.vcpu_id!r}"
                )
            if request.HasField("batch"):
                yield partial(self._drive_batch, entry, request, info, deadline)
            request = await anext(requests, None)

    async def Replay(
        self, request_iterator: AsyncIterator[pb.ReplayRequest], context: Context
    ) -> AsyncIterator[pb.ReplayResponse]:
        caller = self._caller(context)
        with self._stream("Replay", caller) as info:
            requests = idle_bounded(request_iterator, self.config.stream_idle_seconds)
            first = await anext(requests, None)
            if first is None:
                return
            if first.WhichOneof("kind") != "start":
                raise InvalidArgument("the first ReplayRequest must be a ReplayStart")
            async with self._replay_target(first.start, caller) as (entry, run):
                info.vcpu_id = entry.vcpu_id
                async for response in self._replay(entry, run, requests, info, context):
                    yield response

    @asynccontextmanager
    async def _replay_target(
        self, start: pb.ReplayStart, caller: Caller
    ) -> AsyncIterator[tuple[VcpuEntry, ReplayRun]]:
        """The claimed vCPU and the run of a new or resumed replay; a temporary vCPU is deleted
        at the end, and a replay's checkpoint when it ends or fails on bad input."""
        if start.resume_token:
            state = self._state_for_resume()
            token = start.resume_token
            with state.replay_open(token):
                checkpoint = await self._in_thread(state.load_replay, token)
                if not caller.may_see(checkpoint.owner):
                    raise NotFound(f"no open replay {token} on this server")
                run = ReplayRun.resumed(checkpoint)
                run.durable, run.base = checkpoint.to_bytes(), checkpoint.base
                log.info(
                    "resuming replay %s after batch %d", token, checkpoint.acked_sequence,
                    extra={"resume_token": token},
                )  # fmt: skip
                await self._in_thread(bring_back, self.registry, checkpoint, caller)
                async with self._replay_vcpu(checkpoint.vcpu_id, checkpoint, start, caller) as e:
                    yield e, run
            return
        token = secrets.token_urlsafe(16) if self.state is not None else ""
        run = ReplayRun(
            token, start.vcpu_id, start.per_exit,
            skipped=add_counts(0, start.skipped, "skipped lines"), unknown=Counter(),
        )  # fmt: skip
        add_count_maps(run.unknown, start.unknown_reasons, "unknown reason")
        async with self._replay_vcpu(start.vcpu_id, None, start, caller) as entry:
            if token:
                run.base = await self._in_thread(self.registry.snapshot, entry)
                run.durable = await self._in_thread(checkpoint_bytes, self.registry, entry, run)
            yield entry, run

    def _state_for_resume(self) -> StateDir:
        if self.state is None:
            raise StateError(
                "this server keeps no replay state (start it with --state-dir); start a new replay"
            )
        return self.state

    @asynccontextmanager
    async def _replay_vcpu(
        self,
        vcpu_id: str,
        checkpoint: ReplayCheckpoint | None,
        start: pb.ReplayStart,
        caller: Caller,
    ) -> AsyncIterator[VcpuEntry]:
        """Claim ``vcpu_id`` (reset to the checkpoint's snapshot when resuming), or make a
        temporary vCPU in a VM of its own (from the checkpoint's when resuming) and delete it at
        the end."""
        temporary_vm = ""
        if not vcpu_id:
            if checkpoint is not None:
                restore = partial(self.registry.restore, checkpoint.whole, caller=caller)
                made = await self._in_thread(restore)
            else:
                made = self.registry.create_vcpu(
                    "", start.profile, mode_from_pb(start.mode), l0=start.l0, caller=caller
                )
            made.temporary = True
            vcpu_id, temporary_vm = made.vcpu_id, made.vm.vm_id
        try:
            with self.registry.claim(vcpu_id, caller) as entry:
                if checkpoint is not None and (checkpoint.base or not temporary_vm):
                    await self._in_thread(self.registry.reset, entry, checkpoint.snapshot)
                yield entry
        finally:
            if temporary_vm:
                self.registry.delete_vm(temporary_vm)

    async def _replay(
        self,
        entry: VcpuEntry,
        run: ReplayRun,
        requests: AsyncIterator[pb.ReplayRequest],
        info: StreamInfo,
        context: Context,
    ) -> AsyncIterator[pb.ReplayResponse]:
        jobs = self._replay_jobs(entry, run, requests, info, deadline_of(context))
        try:
            async with aclosing(in_order(self.lanes, jobs)) as responses:
                async for response in responses:
                    if not response.HasField("summary"):
                        yield response
                        continue
                    try:
                        yield response
                    finally:  # also when the client closes the stream on the summary
                        self._forget(run)
                    return
        except Unavailable:
            raise  # the checkpoint stays: the client resumes from it
        except VmxsimError:
            self._forget(run)  # bad input: resuming would only fail again
            raise
        raise InvalidArgument("the replay stream closed before its ReplayEnd")

    async def _replay_jobs(
        self,
        entry: VcpuEntry,
        run: ReplayRun,
        requests: AsyncIterator[pb.ReplayRequest],
        info: StreamInfo,
        deadline: float | None,
    ) -> AsyncIterator[Callable[[], pb.ReplayResponse]]:
        """A Replay stream's batches and its end as jobs for its lane."""
        async for request in requests:
            kind = request.WhichOneof("kind")
            if kind == "batch":
                yield partial(self._replay_batch, entry, run, request.batch, info, deadline)
            elif kind == "end":
                yield partial(self._replay_end, entry, run, request.end)
                return
            else:
                raise InvalidArgument(
                    f"a ReplayRequest after the start must be a batch or the end, not {kind}"
                )

    def _replay_end(self, entry: VcpuEntry, run: ReplayRun, end: pb.ReplayEnd) -> pb.ReplayResponse:
        run.skipped = add_counts(run.skipped, end.skipped, "skipped lines")
        add_count_maps(run.unknown, end.unknown_reasons, "unknown reason")
        summary = run_summary(run.totals, entry.profile, entry.mode, run.skipped, dict(run.unknown))
        return pb.ReplayResponse(summary=summary)

    def _replay_batch(
        self,
        entry: VcpuEntry,
        run: ReplayRun,
        message: pb.ExitBatch,
        info: StreamInfo,
        deadline: float | None,
    ) -> pb.ReplayResponse:
        """Run one batch (on its lane's worker thread) and, with a state directory, persist the
        replay before acking it."""
        sequence = message.sequence
        if run.duplicate(sequence):
            progress = pb.ReplayProgress(
                acked_sequence=sequence,
                exits=run.totals.exits + run.totals.panics.total(),  # panicking exits too
                batch=pb.BatchStats(sequence=sequence),
                resume_token=run.token,
                duplicate=True,
            )
            return pb.ReplayResponse(progress=progress)
        if run.last is not None and sequence <= run.last:
            raise InvalidArgument(f"batch sequence {sequence} does not follow {run.last}")
        stats = self._run_batch(entry, message, run.per_exit, info, deadline)
        run.totals.add(stats)
        run.last = sequence
        if self.state is not None and run.token:
            try:
                self._checkpoint(entry, run)
            except OSError as exc:
                rolled_back(self.registry, entry, run)
                raise Unavailable(
                    f"batch {sequence} was not applied: its checkpoint cannot be written"
                    f" ({exc.strerror or exc}); resume the replay"
                ) from None
        progress = pb.ReplayProgress(
            acked_sequence=sequence,
            exits=run.totals.exits + run.totals.panics.total(),  # panicking exits too
            batch=batch_stats(stats, run.per_exit),
            resume_token=run.token,
        )
        return pb.ReplayResponse(progress=progress)

    def _checkpoint(self, entry: VcpuEntry, run: ReplayRun) -> None:
        assert self.state is not None and run.last is not None
        data = checkpoint_bytes(self.registry, entry, run)
        self.state.save_replay(run.token, data)
        run.durable = data

    def _forget(self, run: ReplayRun) -> None:
        if self.state is not None and run.token:
            self.state.drop_replay(run.token)

    # --- stats and snapshots -------------------------------------------------------------------

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        entry = self.registry.get(request.vcpu_id, self._caller(context))
        summary = await self._in_thread(
            self.registry.with_vcpu,
            entry,
            lambda e: run_summary(e.engine.totals, e.profile, e.mode),
        )
        return pb.GetStatsResponse(summary=summary)

    async def Snapshot(self, request: pb.SnapshotRequest, context: Context) -> pb.SnapshotResponse:
        entry = self.registry.get(request.vcpu_id, self._caller(context))
        data = await self._in_thread(self.registry.snapshot, entry)
        return pb.SnapshotResponse(data=data, format_version=FORMAT_VERSION)

    async def Restore(self, request: pb.RestoreRequest, context: Context) -> pb.RestoreResponse:
        restore = partial(
            self.registry.restore, request.data, request.vm_id, caller=self._caller(context)
        )
        entry = await self._in_thread(restore)
        await self._persist(entry, partial(self.registry.delete_vcpu, entry.vcpu_id, True))
        log.info(
            "restored %s in %s", entry.vcpu_id, entry.vm.vm_id, extra={"vcpu_id": entry.vcpu_id}
        )
        return pb.RestoreResponse(vcpu=vcpu_message(entry))

    # --- Diagnose (issue 12): VMCS dumps through the entry checks --------------------------

    async def Diagnose(self, request: pb.DiagnoseRequest, context: Context) -> pb.DiagnoseResponse:
        # imported on the first Diagnose: the dump readers are ~15 ms of every start-up
        from .translate_diagnose import diagnose_capabilities, diagnose_response
        from .vmx.diagnosis import diagnose_input

        diagnoses = await self._in_thread(
            diagnose_input,
            request.dump or None,
            dict(request.values) or None,
            request.format or None,
            diagnose_capabilities(request),
        )
        return diagnose_response(diagnoses)

    # --- client helpers ------------------------------------------------------------------------

    async def ValidState(
        self, request: pb.ValidStateRequest, context: Context
    ) -> pb.ValidStateResponse:
        entry = self.registry.get(request.vcpu_id)
        fields = valid_state_fields(entry.vcpu.capabilities, dict(request.overrides))
        return pb.ValidStateResponse(fields=fields)
