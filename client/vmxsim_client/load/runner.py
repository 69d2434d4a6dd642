"""Multi-client load on one or several vmxsim servers: ``vmxsim load`` without the CLI.

``run_load(plan)`` creates ``clients`` x ``vcpus_per_client`` vCPUs (each simulated client is a
VM with its vCPUs; vCPUs are placed round robin over the targets by ``ShardedClient``), then
drives every vCPU with its own Drive stream, closed loop: write a batch, read its stats, record
the round trip in an HdrHistogram (microseconds), repeat, until the exit quota (``exits``,
split evenly over the vCPUs) or the ``duration`` is reached. Each simulated client has one
``grpc.aio`` channel per target it uses (channels multiplex, so sharing one would hide
per-client head-of-line effects). The clients run as coroutines in one event loop, or split
over ``processes`` child processes (docs/performance.md "Load generator: asyncio or
processes" measured which is faster here). At the end every vCPU's own counts are fetched
(GetStats) and summed: they must equal what the clients were acknowledged.

Bounded: at most ``MAX_CLIENTS`` clients, ``MAX_VCPUS_PER_CLIENT`` vCPUs each,
``MAX_VCPUS`` in all, ``MAX_DURATION_SECONDS`` per run (also with an exit quota). Loopback
targets only unless ``allow_remote``. ``security`` holds ``Client``'s TLS and token keyword
arguments (connection.client_kwargs, like every other command); they apply to ``targets``,
never to the in-process server. ``metrics_listen`` serves the clients' own latency histograms
(load/metrics.py) while the run lasts.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim_server.config import is_loopback

from ..inprocess import connect
from ..traces import open_trace
from ..wire import batch_exits, exit_batches
from .driver import Payload, drive_group, drive_in_children, new_histogram
from .sharding import ShardedClient

if TYPE_CHECKING:
    from .metrics import LoadMetrics

__all__ = [
    "LOAD_BATCH_SIZE",
    "MAX_CLIENTS",
    "MAX_DURATION_SECONDS",
    "MAX_VCPUS",
    "MAX_VCPUS_PER_CLIENT",
    "LoadError",
    "LoadPlan",
    "run_load",
]

LOAD_BATCH_SIZE = 4096
"""Exits per batch of a load run (its figures are per-batch round trips; replay and drive
default to ``client.DEFAULT_BATCH_SIZE``)."""
MAX_CLIENTS = 256
MAX_VCPUS_PER_CLIENT = 64
MAX_VCPUS = 1024
MAX_DURATION_SECONDS = 600.0
MAX_EXITS = 10**10
MAX_PROCESSES = 16
PAYLOAD_EXITS = 1_000_000
"""At most this many exits are read from the trace; every vCPU cycles through them."""
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class LoadError(ValueError):
    """A load plan that breaks a limit or a rule; the message says which."""


@dataclass(frozen=True)
class LoadPlan:
    """What to run. ``targets`` empty = an in-process server; ``source`` is a trace file or a
    ``mix:NAME[:EXITS[:SEED]]`` spec; exactly one of ``duration_seconds`` and ``exits``."""

    targets: tuple[str, ...]
    clients: int
    vcpus_per_client: int
    source: str
    profile: str = "kvm"
    mode: str = "native"
    l0: str | None = None
    duration_seconds: float | None = None
    exits: int | None = None
    batch_size: int = LOAD_BATCH_SIZE
    processes: int = 1
    allow_remote: bool = False
    timeout: float = 30.0
    security: dict[str, Any] = field(default_factory=dict)
    metrics_listen: str | None = None

    def check(self) -> None:
        """LoadError naming the first bound or rule the plan breaks."""
        _within("clients", self.clients, 1, MAX_CLIENTS)
        _within("vCPUs per client", self.vcpus_per_client, 1, MAX_VCPUS_PER_CLIENT)
        _within("vCPUs in all", self.clients * self.vcpus_per_client, 1, MAX_VCPUS)
        _within("processes", self.processes, 1, min(MAX_PROCESSES, self.clients))
        _within("batch size", self.batch_size, 1, 1_000_000)
        if (self.duration_seconds is None) == (self.exits is None):
            raise LoadError("give either a duration or an exit count")
        if self.duration_seconds is not None and not (
            0 < self.duration_seconds <= MAX_DURATION_SECONDS
        ):
            raise LoadError(f"the duration must be in (0, {MAX_DURATION_SECONDS:g}] seconds")
        if self.exits is not None:
            _within("exits", self.exits, 1, MAX_EXITS)
        if self.metrics_listen is not None and self.processes != 1:
            raise LoadError("metrics can be exported from one process only (--processes 1)")
        for target in self.targets:
            if not self.allow_remote and not is_loopback(target):
                raise LoadError(f"{target} is not a loopback address (allow it explicitly)")


def _within(what: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise LoadError(f"{what}: {value} is outside {low}..{high}")


# --- the exits -----------------------------------------------------------------------------------


def load_payload(source: str, batch_size: int) -> Payload:
    """Up to ``PAYLOAD_EXITS`` exits of ``source`` as serialized DriveRequests."""
    with open_trace(source) as reader:
        payload = []
        exits = 0
        for batch in exit_batches(reader, batch_size):
            size = batch_exits(batch)
            payload.append((pb.DriveRequest(batch=batch).SerializeToString(), size))
            exits += size
            if exits >= PAYLOAD_EXITS:
                break
    if not payload:
        raise LoadError(f"{source} holds no exits")
    return payload


def split_quota(total: int | None, parts: int) -> list[int | None]:
    """``total`` exits split over ``parts`` vCPUs as evenly as possible (None = no quota)."""
    if total is None:
        return [None] * parts
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# --- driving -------------------------------------------------------------------------------------


def _drive_all(
    plan: LoadPlan,
    targets: Sequence[str],
    vcpus: list[list[str]],
    payload: Payload,
    metrics: LoadMetrics | None = None,
) -> list[dict[str, Any]]:
    """Every client's streams, in this process or split over ``plan.processes`` children."""
    flat_quotas = split_quota(plan.exits, plan.clients * plan.vcpus_per_client)
    m = plan.vcpus_per_client
    quotas = [flat_quotas[i * m : (i + 1) * m] for i in range(plan.clients)]
    duration = plan.duration_seconds or MAX_DURATION_SECONDS
    security = plan.security if plan.targets else {}  # the in-process server is plaintext
    if plan.processes == 1:
        return [
            asyncio.run(
                drive_group(
                    targets, vcpus, payload, quotas, duration, plan.timeout, security, metrics
                )
            )
        ]
    groups = [range(i, plan.clients, plan.processes) for i in range(plan.processes)]
    return drive_in_children(
        [
            (
                targets,
                [vcpus[i] for i in group],
                payload,
                [quotas[i] for i in group],
                duration,
                plan.timeout,
                security,
            )
            for group in groups
        ]
    )


# --- the run -------------------------------------------------------------------------------------


@contextmanager
def _targets(plan: LoadPlan) -> Iterator[tuple[str, ...]]:
    if plan.targets:
        yield plan.targets
        return
    with connect(None, timeout=plan.timeout) as client:
        yield (client.target,)


def _create_vcpus(sharded: ShardedClient, plan: LoadPlan, vms: list[str]) -> list[list[str]]:
    """Each client's vCPUs (qualified ids): vCPU k of the run goes to shard k mod targets, in
    a VM of that client on that shard (created on first use and listed in ``vms``)."""
    shards = len(sharded.shards)
    clients = []
    for c in range(plan.clients):
        client_vms: dict[int, str] = {}
        ids = []
        for j in range(plan.vcpus_per_client):
            shard = (c * plan.vcpus_per_client + j) % shards
            if shard not in client_vms:
                client_vms[shard] = sharded.create_vm(shard)
                vms.append(client_vms[shard])
            vcpu = sharded.create_vcpu(plan.profile, plan.mode, vm=client_vms[shard], l0=plan.l0)
            ids.append(sharded.qualified_id(vcpu))
        clients.append(ids)
    return clients


def _server_totals(sharded: ShardedClient, vcpus: list[list[str]]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for qualified in (q for client in vcpus for q in client):
        summary = sharded.stats(qualified)
        totals.update(
            exits=summary["exits"],
            vmread=summary["instructions"]["vmread"],
            vmwrite=summary["instructions"]["vmwrite"],
        )
    return {key: totals[key] for key in ("exits", "vmread", "vmwrite")}


def _merge(plan: LoadPlan, targets: Sequence[str], parts: list[dict[str, Any]]) -> dict[str, Any]:
    from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

    histogram = new_histogram()
    errors: Counter[str] = Counter()
    for part in parts:
        histogram.add(HdrHistogram.decode(part["histogram"]))
        errors.update(part["errors"])
    client = {key: sum(p[key] for p in parts) for key in ("exits", "vmread", "vmwrite")}
    batches = sum(p["batches"] for p in parts)
    seconds = max(p["ended"] for p in parts) - min(p["started"] for p in parts)
    latency: dict[str, float] = {
        f"p{q:g}": histogram.get_value_at_percentile(q) for q in PERCENTILES
    }
    latency.update(max=histogram.get_max_value(), mean=round(histogram.get_mean_value(), 1))
    return {
        "targets": list(targets),
        "clients": plan.clients,
        "vcpus_per_client": plan.vcpus_per_client,
        "vcpus": plan.clients * plan.vcpus_per_client,
        "processes": plan.processes,
        "profile": plan.profile,
        "mode": plan.mode,
        "source": plan.source,
        "batch_size": plan.batch_size,
        "seconds": round(seconds, 3),
        "exits": client["exits"],
        "batches": batches,
        "exits_per_second": round(client["exits"] / seconds) if seconds > 0 else 0,
        "batch_latency_us": latency,
        "errors": dict(sorted(errors.items())),
        "client": client,
    }


@contextmanager
def _exported(plan: LoadPlan) -> Iterator[LoadMetrics | None]:
    """The run's metrics served on ``plan.metrics_listen`` (None without one)."""
    if plan.metrics_listen is None:
        yield None
        return
    from .metrics import LoadMetrics

    metrics = LoadMetrics(plan.profile, plan.mode)
    metrics.start(plan.metrics_listen)
    try:
        yield metrics
    finally:
        metrics.close()


def run_load(plan: LoadPlan) -> dict[str, Any]:
    """Run a load plan; the report (see ``vmxsim load --json`` in docs/load.md)."""
    plan.check()
    payload = load_payload(plan.source, plan.batch_size)
    security = plan.security if plan.targets else {}
    with (
        _targets(plan) as targets,
        ShardedClient(targets, timeout=plan.timeout, **security) as sharded,
        _exported(plan) as metrics,
    ):
        vms: list[str] = []
        try:
            vcpus = _create_vcpus(sharded, plan, vms)
            parts = _drive_all(plan, targets, vcpus, payload, metrics)
            report = _merge(plan, targets, parts)
            report["server"] = _server_totals(sharded, vcpus)
        finally:
            for vm in vms:
                sharded.delete_vm(vm)
    report["consistent"] = report["server"] == report["client"]
    return report
