"""Fair under load (issue 15.3): a real server on a loopback socket serves 64 replay streams at
once, from 64 channels, and none fails; a stream's batches, read ahead of its answers, are
answered in order and none runs after a bad one; a replay lost before its first
acknowledgement is started over (a bounded number of times), one lost later or on a named vCPU
is not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from conftest_service import cpuid_batch, serving

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim_client.aio import AsyncClient
from vmxsim_client.calls import EARLY_RETRIES, ReplayRetry
from vmxsim_client.resume import ReplayFeed
from vmxsim_server.app import start_background
from vmxsim_server.config import ServerConfig
from vmxsim_server.vmx.mixes import load_mix, synthesize

STREAMS = 64


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen=None, max_streams=STREAMS,
                          max_streams_per_client=STREAMS)  # fmt: skip
    with start_background(config) as server:
        yield server.address


def test_64_concurrent_replays_all_finish_with_every_exit(address: str) -> None:
    records = list(synthesize(load_mix("linux-boot"), 2_000, seed=3))

    async def one(index: int) -> int:
        async with AsyncClient(address) as client:  # a channel each, as 64 CLI replays have
            summary = await client.replay(records, profile="kvm", mode="nested", batch_size=500)
        return int(summary["exits"]) + sum(summary["panics"].values())

    async def everyone() -> list[int | BaseException]:
        return await asyncio.gather(*(one(i) for i in range(STREAMS)), return_exceptions=True)

    results = asyncio.run(everyone())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert results == [len(records)] * STREAMS


def _acked_then_error(responses: Iterator[pb.ReplayResponse]) -> tuple[list[int], grpc.RpcError]:
    acked = []
    with pytest.raises(grpc.RpcError) as raised:
        for response in responses:
            acked.append(response.progress.acked_sequence)
    return acked, raised.value


def test_batches_sent_at_once_are_answered_in_order_and_none_runs_after_a_bad_one() -> None:
    bad = pb.ExitBatch(sequence=4, reason=[10, 10], rip=[1])  # a column too short
    batches = [*(cpuid_batch(10, n) for n in (1, 2, 3)), bad, cpuid_batch(10, 5)]
    with serving() as (_, stub):
        vcpu = stub.CreateVcpu(pb.CreateVcpuRequest(profile="kvm")).vcpu
        requests = [pb.ReplayRequest(start=pb.ReplayStart(vcpu_id=vcpu.vcpu_id))]
        requests += [pb.ReplayRequest(batch=batch) for batch in batches]
        requests.append(pb.ReplayRequest(end=pb.ReplayEnd()))
        acked, error = _acked_then_error(stub.Replay(iter(requests)))
        assert acked == [1, 2, 3]
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "rip" in str(error.details())
        stats = stub.GetStats(pb.GetStatsRequest(vcpu_id=vcpu.vcpu_id)).summary
        assert stats.exits == 30  # batch 5 was read ahead but never ran


def _feed(vcpu_id: str = "") -> ReplayFeed:
    return ReplayFeed(pb.ReplayStart(vcpu_id=vcpu_id), iter(()), pb.ReplayEnd)


def test_a_replay_cancelled_before_its_first_ack_starts_over_a_few_times() -> None:
    retry = ReplayRetry(_feed(), resume=False, timeout=60)
    delays = [retry.delay("CANCELLED") for _ in range(EARLY_RETRIES)]
    assert delays == [0.1, 0.2, 0.4]
    assert retry.delay("UNAVAILABLE") is None  # bounded: then the error reaches the caller


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "ABORTED"])
def test_other_errors_are_not_retried_without_resume(code: str) -> None:
    assert ReplayRetry(_feed(), resume=False, timeout=60).delay(code) is None


def test_no_start_over_after_an_ack_or_on_a_named_vcpu() -> None:
    acked = _feed()
    acked.acknowledged(1, "")
    assert ReplayRetry(acked, resume=False, timeout=60).delay("CANCELLED") is None
    named = ReplayRetry(_feed("vcpu-1"), resume=False, timeout=60)
    assert named.delay("UNAVAILABLE") is None
