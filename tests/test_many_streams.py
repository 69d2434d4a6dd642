"""Fair under load (issue 15.3): a real server on a loopback socket serves 64 replay streams at
once, from 64 channels, and none fails; a replay lost before its first acknowledgement is
started over (a bounded number of times), one lost later or on a named vCPU is not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

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
