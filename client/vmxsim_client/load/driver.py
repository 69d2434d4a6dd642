"""The driving half of ``vmxsim load`` (load.py plans and reports): closed-loop Drive streams
on ``grpc.aio`` channels, in this event loop or in child processes.

Each vCPU has one stream: write a batch (pre-serialized ``DriveRequest`` bytes, so the client
costs little), read its stats, record the round trip in an HdrHistogram (microseconds),
repeat, until the vCPU's exit quota or the deadline. A failed stream is counted under its
status code and stops; the others go on. Child processes are fresh interpreters fed pickled
arguments on standard input (no fork: gRPC's threads do not survive one).
"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from vmxsim.v1 import vmxsim_pb2 as pb

from ..client import bearer_metadata, open_channel
from .sharding import split_qualified

if TYPE_CHECKING:
    from .metrics import LoadMetrics

__all__ = ["HISTOGRAM_MICROSECONDS", "Payload", "Tally", "drive_group", "drive_in_children",
           "new_histogram"]  # fmt: skip

HISTOGRAM_MICROSECONDS = (1, 60_000_000, 3)
"""HdrHistogram range 1 us..60 s at 3 significant digits (ECOSYSTEM.md section 4)."""

_SERVICE = pb.DESCRIPTOR.services_by_name["VcpuService"]
_DRIVE = f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name['Drive'].name}"
Payload = list[tuple[bytes, int]]
"""Serialized DriveRequests, each with its number of exits."""


def _truncated(data: bytes, exits: int) -> bytes:
    """The first ``exits`` exits of a serialized DriveRequest."""
    request = pb.DriveRequest.FromString(data)
    for column in request.batch.DESCRIPTOR.fields:
        if column.is_repeated:
            values = getattr(request.batch, column.name)
            del values[exits:]
        elif column.name.endswith("_packed"):  # 8 bytes a value (wire.batch_exits)
            setattr(request.batch, column.name, getattr(request.batch, column.name)[: 8 * exits])
    return request.SerializeToString()


@dataclass
class Tally:
    """What one event loop's streams were acknowledged, and their batch round trips."""

    exits: int = 0
    batches: int = 0
    vmread: int = 0
    vmwrite: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    ended: float = 0.0
    histogram: Any = None
    metrics: LoadMetrics | None = None
    """The run's Prometheus metrics, when exported (in this process only)."""

    def result(self) -> dict[str, Any]:
        """Picklable: the histogram travels encoded, the metrics stay."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metrics"}
        out.update(histogram=self.histogram.encode(), errors=dict(self.errors))
        return out

    def failed(self, code: str) -> None:
        self.errors[code] += 1
        if self.metrics is not None:
            self.metrics.on_error(code)


def new_histogram() -> Any:
    from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

    return HdrHistogram(*HISTOGRAM_MICROSECONDS)


async def _drive_vcpu(
    channel: aio.Channel,
    vcpu_id: str,
    payload: Payload,
    quota: int | None,
    deadline: float,
    tally: Tally,
    timeout: float,
    token: str | None,
) -> None:
    """One vCPU's Drive stream, closed loop, until its quota or the deadline."""
    drive: aio.StreamStreamMultiCallable[bytes, pb.DriveResponse] = channel.stream_stream(
        _DRIVE, response_deserializer=pb.DriveResponse.FromString
    )
    call = drive(timeout=timeout, metadata=bearer_metadata(token))
    record = tally.histogram.record_value
    metrics = tally.metrics
    left = quota
    if metrics is not None:
        metrics.streams.inc()
    try:
        await call.write(pb.DriveRequest(vcpu_id=vcpu_id).SerializeToString())
        for data, exits in _cycle(payload):
            if (left is not None and left <= 0) or time.monotonic() >= deadline:
                break
            if left is not None and exits > left:
                data, exits = _truncated(data, left), left
            started = time.perf_counter_ns()
            await call.write(data)
            response = await call.read()
            if not isinstance(response, pb.DriveResponse):  # aio.EOF: the stream ended
                break
            elapsed_ns = time.perf_counter_ns() - started
            record(max(1, elapsed_ns // 1000))
            stats = response.stats
            if metrics is not None:
                metrics.on_batch(elapsed_ns / 1e9, stats.exits)
            tally.batches += 1
            tally.exits += stats.exits
            tally.vmread += stats.instructions.vmread
            tally.vmwrite += stats.instructions.vmwrite
            if left is not None:
                left -= exits
        await call.done_writing()
        code = await call.code()
        if code != grpc.StatusCode.OK:
            tally.failed(code.name)
    except aio.AioRpcError as exc:
        tally.failed(exc.code().name)
    finally:
        if metrics is not None:
            metrics.streams.dec()


def _open_channel(target: str, security: dict[str, Any]) -> aio.Channel:
    """An asyncio channel to ``target`` with ``Client``'s TLS keyword arguments."""
    channel: aio.Channel = open_channel(
        aio, target, security.get("tls_ca"), security.get("tls_cert"), security.get("tls_key"),
        bool(security.get("tls")),
    )  # fmt: skip
    return channel


def _cycle(payload: Payload) -> Iterator[tuple[bytes, int]]:
    while True:
        yield from payload


async def drive_group(
    targets: Sequence[str],
    assignments: Sequence[Sequence[str]],
    payload: Payload,
    quotas: Sequence[Sequence[int | None]],
    duration: float,
    timeout: float,
    security: dict[str, Any] | None = None,
    metrics: LoadMetrics | None = None,
) -> dict[str, Any]:
    """Drive some clients' vCPUs (qualified ids, one list per client) in this event loop.
    ``security``: ``Client``'s TLS and token keyword arguments; ``metrics``: where to report
    each batch too (this process only)."""
    security = dict(security or {})
    token = security.pop("token", None)
    tally = Tally(histogram=new_histogram(), metrics=metrics)
    channels: list[aio.Channel] = []
    streams = []
    try:
        for vcpus, client_quotas in zip(assignments, quotas, strict=True):
            by_shard: dict[int, aio.Channel] = {}  # one channel per client and target
            for qualified, quota in zip(vcpus, client_quotas, strict=True):
                shard, vcpu_id = split_qualified(qualified, len(targets))
                if shard not in by_shard:
                    by_shard[shard] = _open_channel(targets[shard], security)
                    channels.append(by_shard[shard])
                streams.append((by_shard[shard], vcpu_id, quota))
        await asyncio.wait_for(
            asyncio.gather(*(c.channel_ready() for c in channels)), timeout=timeout
        )
        tally.started = time.time()
        deadline = time.monotonic() + duration
        await asyncio.gather(
            *(
                _drive_vcpu(
                    channel, vcpu_id, payload, quota, deadline, tally, duration + timeout, token
                )
                for channel, vcpu_id, quota in streams
            )
        )
        tally.ended = time.time()
    finally:
        for channel in channels:
            await channel.close()
    return tally.result()


def _child_main() -> None:
    """A load child process: the arguments of ``drive_group`` pickled on standard input,
    its result pickled on standard output."""
    args = pickle.load(sys.stdin.buffer)
    result = asyncio.run(drive_group(*args))
    sys.stdout.buffer.write(pickle.dumps(result))


_CHILD = ("-c", "from vmxsim_client.load.driver import _child_main; _child_main()")


def drive_in_children(groups: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """``drive_group`` for each group of arguments in its own child process (a fresh
    interpreter: no fork, whose copy of gRPC's threads would not work)."""
    children = [
        subprocess.Popen([sys.executable, *_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in groups
    ]
    try:
        for child, args in zip(children, groups, strict=True):
            assert child.stdin is not None
            child.stdin.write(pickle.dumps(args))
            child.stdin.close()
        results = []
        for child in children:
            assert child.stdout is not None
            output = child.stdout.read()
            if child.wait() != 0:
                raise RuntimeError(f"a load process failed (exit status {child.returncode})")
            results.append(pickle.loads(output))
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()
