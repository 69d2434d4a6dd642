"""Drive and Replay streams over gRPC: batches of packed columns, exact totals, per-exit arrays,
one stream per vCPU, stream and batch limits, deadlines and concurrent clients."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from conftest_service import (
    cpuid_batch,
    drive_requests,
    rpc_error,
    serving,
    synthetic_batches,
    wire_batch,
)

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_server.vmx.engine import BatchStats, Engine
from vmxsim_server.vmx.latency import LatencyModel
from vmxsim_server.vmx.profiles import load_profile
from vmxsim_server.vmx.records import ExitBatch
from vmxsim_server.vmx.summary import summary
from vmxsim_server.vmx.vcpu import Vcpu


def in_process(batches: list[ExitBatch], profile: str, mode: str) -> BatchStats:
    """The same batches through an in-process Engine: the reference for the server's totals."""
    engine = Engine(Vcpu(), load_profile(profile), LatencyModel(mode))
    for batch in batches:
        engine.run_batch(batch)
    return engine.totals


def replay_requests(
    batches: list[pb.ExitBatch], start: pb.ReplayStart, end: pb.ReplayEnd | None = None
) -> Iterator[pb.ReplayRequest]:
    yield pb.ReplayRequest(start=start)
    for batch in batches:
        yield pb.ReplayRequest(batch=batch)
    yield pb.ReplayRequest(end=end or pb.ReplayEnd())


def held_stream(stub: pb_grpc.VcpuServiceStub, vcpu_id: str, release: threading.Event) -> object:
    """A Drive stream that has run one batch and stays open until ``release`` is set."""

    def requests() -> Iterator[pb.DriveRequest]:
        yield pb.DriveRequest(vcpu_id=vcpu_id, batch=cpuid_batch(10))
        release.wait(10)

    responses = stub.Drive(requests())
    next(responses)
    return responses


def test_drive_answers_one_stats_per_batch_with_per_exit_arrays_on_request(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    requests = [
        pb.DriveRequest(vcpu_id=vcpu_id, batch=cpuid_batch(100, sequence=1), per_exit=True),
        pb.DriveRequest(batch=cpuid_batch(50, sequence=2)),
    ]
    first, second = (r.stats for r in stub.Drive(iter(requests)))
    assert (first.sequence, first.exits, second.sequence, second.exits) == (1, 100, 2, 50)
    assert len(first.vmreads_per_exit) == len(first.latency_seconds_per_exit) == 100
    assert sum(first.vmreads_per_exit) == first.instructions.vmread
    assert sum(first.vmwrites_per_exit) == first.instructions.vmwrite
    assert not second.vmreads_per_exit and not second.latency_seconds_per_exit
    assert first.by_reason["CPUID"].exits == 100
    stats = stub.GetStats(pb.GetStatsRequest(vcpu_id=vcpu_id)).summary
    assert stats.exits == 150 and stats.profile == "kvm" and stats.mode_name == "native"
    assert stats.instructions.vmread == first.instructions.vmread + second.instructions.vmread
    assert stub.GetVcpu(pb.GetVcpuRequest(vcpu_id=vcpu_id)).vcpu.exits == 150


def test_drive_rejects_a_stream_without_a_vcpu_or_for_another_vcpu(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    error = rpc_error(stub.Drive, iter([pb.DriveRequest(batch=cpuid_batch(1))]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "vcpu_id" in error.details()
    switch = [pb.DriveRequest(vcpu_id=vcpu_id), pb.DriveRequest(vcpu_id="vcpu-0")]
    error = rpc_error(stub.Drive, iter(switch))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "vcpu-0" in error.details()
    error = rpc_error(stub.Drive, drive_requests("vcpu-999999", []))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_malformed_batches_are_invalid_argument(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    short_rip = pb.ExitBatch(reason=[10, 10], rip=[1])
    error = rpc_error(stub.Drive, drive_requests(vcpu_id, [short_rip]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "rip" in error.details()
    stamps = pb.ExitBatch(reason=[10, 10], timestamp=[0.5])
    error = rpc_error(stub.Drive, drive_requests(vcpu_id, [stamps]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "timestamp" in error.details()
    start = pb.ReplayStart(vcpu_id=vcpu_id)
    backwards = [cpuid_batch(1, sequence=5), cpuid_batch(1, sequence=5)]
    error = rpc_error(stub.Replay, replay_requests(backwards, start))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "sequence 5" in error.details()
    no_start = iter([pb.ReplayRequest(batch=cpuid_batch(1))])
    assert rpc_error(stub.Replay, no_start).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_second_stream_on_a_busy_vcpu_is_failed_precondition(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    release = threading.Event()
    held = held_stream(stub, vcpu_id, release)
    try:
        error = rpc_error(stub.Drive, drive_requests(vcpu_id, [cpuid_batch(1)]))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert vcpu_id in error.details() and "another stream" in error.details()
        replay = replay_requests([], pb.ReplayStart(vcpu_id=vcpu_id))
        assert rpc_error(stub.Replay, replay).code() == grpc.StatusCode.FAILED_PRECONDITION
        deleting = rpc_error(stub.DeleteVcpu, pb.DeleteVcpuRequest(vcpu_id=vcpu_id))
        assert deleting.code() == grpc.StatusCode.FAILED_PRECONDITION
        # unary calls still work on the driven vCPU, serialised with its batches
        assert stub.GetStats(pb.GetStatsRequest(vcpu_id=vcpu_id)).summary.exits == 10
    finally:
        release.set()
        list(held)  # type: ignore[call-overload]
    assert [r.stats.exits for r in stub.Drive(drive_requests(vcpu_id, [cpuid_batch(3)]))] == [3]


def test_limits_on_streams_batches_and_message_size() -> None:
    limits = {"max_streams": 2, "max_batch_exits": 1000, "max_message_bytes": 16 * 1024}
    with serving(**limits) as (_, stub):
        ids = [stub.CreateVcpu(pb.CreateVcpuRequest()).vcpu.vcpu_id for _ in range(3)]
        release = threading.Event()
        held = [held_stream(stub, vcpu, release) for vcpu in ids[:2]]
        try:
            error = rpc_error(stub.Drive, drive_requests(ids[2], [cpuid_batch(1)]))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "2 streams" in error.details()
        finally:
            release.set()
            for responses in held:
                list(responses)  # type: ignore[call-overload]
        error = rpc_error(stub.Drive, drive_requests(ids[2], [cpuid_batch(1001, sequence=4)]))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1001 exits" in error.details() and "1000" in error.details()
        big = [0xFFFF_FFFF_8100_0000] * 999  # 10 bytes each on the wire
        huge = pb.ExitBatch(reason=[10] * 999, rip=big, qualification=big)  # ~20 KB > 16 KiB
        error = rpc_error(stub.Drive, drive_requests(ids[2], [huge]))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ok = stub.Drive(drive_requests(ids[2], [cpuid_batch(1000)]))
        assert [r.stats.exits for r in ok] == [1000]


@pytest.mark.parametrize(("profile", "mode"), [("haxm-legacy", "nested"), ("kvm", "nested-shadow")])
def test_long_replay_in_many_batches_matches_the_in_process_engine(
    stub: pb_grpc.VcpuServiceStub, profile: str, mode: str
) -> None:
    batches = synthetic_batches(60_000, 2_000)
    modes = {"nested": pb.LATENCY_MODE_NESTED, "nested-shadow": pb.LATENCY_MODE_NESTED_SHADOW}
    start = pb.ReplayStart(profile=profile, mode=modes[mode], skipped=2, unknown_reasons={"X": 1})
    end = pb.ReplayEnd(skipped=3, unknown_reasons={"X": 4, "Y": 5})
    vcpus_before = len(stub.ListVcpus(pb.ListVcpusRequest()).vcpus)
    responses = list(stub.Replay(replay_requests([wire_batch(b) for b in batches], start, end)))
    *progress, last = responses
    assert [p.progress.acked_sequence for p in progress] == list(range(1, 31))
    assert progress[-1].progress.exits == 60_000 and not progress[-1].progress.resume_token
    got = last.summary
    want = summary(in_process(batches, profile, mode), profile, mode, 5, {"X": 5, "Y": 5})
    exits = got.exits + sum(got.panics.values())  # a panicking exit is not counted as one
    assert (got.profile, got.mode_name, exits, got.skipped) == (profile, mode, 60_000, 5)
    assert dict(got.unknown_reasons) == want["unknown_reasons"]
    instructions = dict(want["instructions"])
    assert dict(got.other_instructions) == instructions.pop("other")
    assert {n: getattr(got.instructions, n) for n in instructions} == instructions
    assert (got.l0.model, got.l0.exits) == (want["l0"]["model"], want["l0"]["exits"])
    assert {"hits": got.cache.hits, "misses": got.cache.misses} == want["cache"]
    assert got.simulated_seconds == want["simulated_seconds"]
    assert got.per_exit.vmread.p99 == want["per_exit"]["vmread"]["p99"]
    assert got.per_exit.vmwrite.mean == want["per_exit"]["vmwrite"]["mean"]
    by_reason = {n: (r.exits, r.vmread, r.vmwrite) for n, r in got.by_reason.items()}
    assert by_reason == {
        n: (r["exits"], r["vmread"], r["vmwrite"]) for n, r in want["by_reason"].items()
    }
    assert len(stub.ListVcpus(pb.ListVcpusRequest()).vcpus) == vcpus_before  # temporary deleted


def test_replay_on_an_existing_vcpu_adds_to_its_stats(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    start = pb.ReplayStart(vcpu_id=vcpu_id, per_exit=True)
    *progress, last = stub.Replay(replay_requests([cpuid_batch(7, 1), cpuid_batch(5, 2)], start))
    assert [len(p.progress.batch.vmreads_per_exit) for p in progress] == [7, 5]
    assert last.summary.exits == 12 and last.summary.by_reason["CPUID"].exits == 12
    assert stub.GetStats(pb.GetStatsRequest(vcpu_id=vcpu_id)).summary.exits == 12


def test_replay_without_an_end_or_with_a_resume_token_is_refused(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    unended = iter([pb.ReplayRequest(start=pb.ReplayStart(vcpu_id=vcpu_id))])
    error = rpc_error(stub.Replay, unended)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "ReplayEnd" in error.details()
    resumed = replay_requests([], pb.ReplayStart(vcpu_id=vcpu_id, resume_token="t"))
    assert rpc_error(stub.Replay, resumed).code() == grpc.StatusCode.FAILED_PRECONDITION
    unknown = replay_requests([], pb.ReplayStart(profile="nope"))
    error = rpc_error(stub.Replay, unknown)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'nope'" in error.details()


def test_a_deadline_that_expires_during_a_long_replay(stub: pb_grpc.VcpuServiceStub) -> None:
    batch = wire_batch(synthetic_batches(20_000, 20_000)[0])
    vcpus_before = len(stub.ListVcpus(pb.ListVcpusRequest()).vcpus)

    def endless() -> Iterator[pb.ReplayRequest]:
        yield pb.ReplayRequest(start=pb.ReplayStart(profile="haxm-legacy"))
        for sequence in range(1, 1_000_000):
            batch.sequence = sequence
            yield pb.ReplayRequest(batch=batch)

    error = rpc_error(stub.Replay, endless(), timeout=0.5)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(100):  # the server deletes the temporary vCPU once the stream is cancelled
        if len(stub.ListVcpus(pb.ListVcpusRequest()).vcpus) == vcpus_before:
            break
        threading.Event().wait(0.02)
    assert len(stub.ListVcpus(pb.ListVcpusRequest()).vcpus) == vcpus_before


def test_concurrent_clients_on_different_vcpus(stub: pb_grpc.VcpuServiceStub) -> None:
    batches = synthetic_batches(8_000, 1_000, mix="windows7")
    want = in_process(batches, "kvm", "nested")
    results: dict[int, pb.RunSummary] = {}
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            request = pb.CreateVcpuRequest(profile="kvm", mode=pb.LATENCY_MODE_NESTED)
            vcpu = stub.CreateVcpu(request).vcpu
            list(stub.Drive(drive_requests(vcpu.vcpu_id, [wire_batch(b) for b in batches])))
            results[index] = stub.GetStats(pb.GetStatsRequest(vcpu_id=vcpu.vcpu_id)).summary
            stub.DeleteVm(pb.DeleteVmRequest(vm_id=vcpu.vm_id))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(results) == 6
    for got in results.values():
        assert got.exits == want.exits and got.simulated_seconds == want.simulated_seconds
        assert got.instructions.vmread == want.counters.vmread
