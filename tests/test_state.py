"""Nothing lost: replays that resume after the server was killed, vCPUs that outlive a restart,
and damaged state files that are set aside instead of stopping the server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest_service import cpuid_batch, ins, named, root_setup, rpc_error
from server_process import ServerProcess

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_client.client import Client
from vmxsim_server.app import BackgroundServer, start_background
from vmxsim_server.config import ServerConfig
from vmxsim_server.state import ReplayCheckpoint, StateDir
from vmxsim_server.vmx.exceptions import Busy
from vmxsim_server.vmx.mixes import load_mix, synthesize

EXITS, BATCH = 240_000, 2_000  # 120 batches


def _exits() -> Iterator[Any]:
    """The same exit sequence every time, read once (a generator, like a trace reader)."""
    return synthesize(load_mix("linux-boot"), EXITS, seed=11)


def _uninterrupted(**options: Any) -> dict[str, Any]:
    with start_background() as server, Client(server.address) as client:
        return client.replay(_exits(), batch_size=BATCH, **options)


def test_a_replay_resumes_after_sigkill_with_exactly_the_uninterrupted_counts(
    tmp_path: Path,
) -> None:
    options = {"profile": "haxm-legacy", "mode": "nested"}
    expected = _uninterrupted(**options)
    server = ServerProcess(state_dir=tmp_path)
    kill_now, restarted = threading.Event(), threading.Event()
    progress: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {}

    def on_progress(update: dict[str, Any]) -> None:
        progress.append(update)
        if len(progress) == 10:  # hold the acks back while the server dies
            kill_now.set()
            restarted.wait(30)

    def replay() -> None:
        with Client(f"127.0.0.1:{server.port}", timeout=10) as client:
            outcome["summary"] = client.replay(
                _exits(), batch_size=BATCH, resume=True, on_progress=on_progress, **options
            )

    runner = threading.Thread(target=replay)
    runner.start()
    try:
        assert kill_now.wait(30)
        # let the server make a few more batches durable than the client saw acknowledged
        while _durable(tmp_path) < 15:
            time.sleep(0.01)
        server.stop(kill=True)
        server = ServerProcess(state_dir=tmp_path, port=server.port)
        restarted.set()
        runner.join(60)
    finally:
        restarted.set()
        server.stop()
    assert outcome["summary"] == expected  # nothing lost, nothing counted twice
    assert progress[-1]["exits"] == EXITS and any(p["duplicate"] for p in progress)
    assert any(line["message"].startswith("resuming replay") for line in server.log)
    assert not list((tmp_path / "replays").glob("*.state"))  # forgotten once ended


def _durable(state_dir: Path) -> int:
    """The last durable batch of the one open replay in ``state_dir`` (0 = none yet)."""
    for path in (state_dir / "replays").glob("*.state"):
        return ReplayCheckpoint.from_bytes(path.read_bytes()).acked_sequence
    return 0


@contextmanager
def _server(state_dir: Path, port: int = 0, **changes: Any) -> Iterator[BackgroundServer]:
    config = ServerConfig(
        listen=f"127.0.0.1:{port}", metrics_listen=None, grace_seconds=0.2,
        state_dir=str(state_dir), **changes,
    )  # fmt: skip
    with start_background(config) as server:
        yield server


def _vcpu_state(stub: pb_grpc.VcpuServiceStub, vcpu_id: str) -> tuple[Any, ...]:
    vcpu = stub.GetVcpu(pb.GetVcpuRequest(vcpu_id=vcpu_id)).vcpu
    stats = stub.GetStats(pb.GetStatsRequest(vcpu_id=vcpu_id)).summary
    read = ins("vmread", field=named("GUEST_RIP"))
    rip = stub.Execute(pb.ExecuteRequest(vcpu_id=vcpu_id, instructions=[read])).results[0].value
    return vcpu, stats, rip


def test_vcpus_survive_a_graceful_restart_with_their_ids(tmp_path: Path) -> None:
    with _server(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.VcpuServiceStub(channel)
        empty_vm = stub.CreateVm(pb.CreateVmRequest(maxphyaddr=40)).vm.vm_id
        first = stub.CreateVcpu(pb.CreateVcpuRequest(profile="haxm-cache")).vcpu
        second = stub.CreateVcpu(pb.CreateVcpuRequest(vm_id=first.vm_id)).vcpu
        stub.Execute(pb.ExecuteRequest(vcpu_id=second.vcpu_id, instructions=root_setup()))
        batches = [pb.DriveRequest(vcpu_id=first.vcpu_id, batch=cpuid_batch(50, 1))]
        list(stub.Drive(iter(batches)))
        before = [_vcpu_state(stub, v.vcpu_id) for v in (first, second)]
    with _server(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.VcpuServiceStub(channel)
        assert [_vcpu_state(stub, v.vcpu_id) for v in (first, second)] == before
        vms = {vm.vm_id: list(vm.vcpu_ids) for vm in stub.ListVms(pb.ListVmsRequest()).vms}
        assert vms == {empty_vm: [], first.vm_id: [first.vcpu_id, second.vcpu_id]}
        third = stub.CreateVcpu(pb.CreateVcpuRequest()).vcpu  # ids are not reused
        assert third.vcpu_id not in (first.vcpu_id, second.vcpu_id)
        assert third.vm_id not in vms
        stub.DeleteVcpu(pb.DeleteVcpuRequest(vcpu_id=second.vcpu_id))
    assert sorted(p.name for p in (tmp_path / "vcpus").iterdir()) == [
        f"{first.vcpu_id}.state",
        f"{third.vcpu_id}.state",
    ]


def test_a_damaged_state_file_is_set_aside_and_the_rest_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _server(tmp_path) as server, Client(server.address) as client:
        kept, damaged = client.create_vcpu(), client.create_vcpu()
    path = tmp_path / "vcpus" / f"{damaged.id}.state"
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    (tmp_path / "vms.state").write_bytes(b"rubbish")
    with (
        caplog.at_level(logging.ERROR, logger="vmxsim.server"),
        _server(tmp_path) as server,
        Client(server.address) as client,
    ):
        assert [v.vcpu_id for v in client.list_vcpus()] == [kept.id]
    assert path.with_name(path.name + ".corrupt").exists() and not path.exists()
    assert (tmp_path / "vms.state.corrupt").exists()
    messages = [r.getMessage() for r in caplog.records]
    assert any("vCPU state is corrupted: its CRC32" in m and ".corrupt" in m for m in messages)


def test_a_replay_on_an_existing_vcpu_resumes_after_a_restart(tmp_path: Path) -> None:
    records = list(synthesize(load_mix("linux-boot"), 20_000, seed=3))
    with start_background() as reference, Client(reference.address) as client:
        vcpu = client.create_vcpu("kvm", "nested")
        vcpu.replay(records[:5_000], batch_size=1_000)
        expected = vcpu.replay(records[5_000:], batch_size=1_000)
        expected_totals = vcpu.stats()
    with _server(tmp_path) as server, Client(server.address) as client:
        vcpu = client.create_vcpu("kvm", "nested")
        vcpu.replay(records[:5_000], batch_size=1_000)
        port = server.port
        stub = pb_grpc.VcpuServiceStub(grpc.insecure_channel(server.address))
        start = pb.ReplayStart(vcpu_id=vcpu.id)
        first = pb.ExitBatch(sequence=1, reason=[r.reason for r in records[5_000:6_000]])
        answers = stub.Replay(iter([pb.ReplayRequest(start=start), pb.ReplayRequest(batch=first)]))
        token = next(answers).progress.resume_token
        answers.cancel()  # type: ignore[attr-defined]
    assert token
    # the restart restores the vCPU as saved at shutdown; the resume resets it to the checkpoint
    with _server(tmp_path, port) as server, Client(server.address) as client:
        rest = pb.ExitBatch(sequence=2, reason=[r.reason for r in records[6_000:]])
        resumed = stub.Replay(
            iter([pb.ReplayRequest(start=pb.ReplayStart(resume_token=token)),
                  pb.ReplayRequest(batch=first), pb.ReplayRequest(batch=rest),
                  pb.ReplayRequest(end=pb.ReplayEnd())])
        )  # fmt: skip
        *progress, summary = list(resumed)
        assert [p.progress.duplicate for p in progress] == [True, False]
        assert summary.summary.exits == expected["exits"] == 15_000
        assert client.stats(vcpu.id)["instructions"] == expected_totals["instructions"]


def test_resume_tokens_that_cannot_be_resumed(tmp_path: Path) -> None:
    with _server(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.VcpuServiceStub(channel)

        def resume(token: str) -> grpc.RpcError:
            start = pb.ReplayRequest(start=pb.ReplayStart(resume_token=token))
            return rpc_error(stub.Replay, iter([start, pb.ReplayRequest(end=pb.ReplayEnd())]))

        error = resume("../../etc/passwd")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "is not a resume token this server issues" in error.details()
        error = resume("A" * 22)
        assert error.code() == grpc.StatusCode.NOT_FOUND and "no open replay" in error.details()
        (tmp_path / "replays" / f"{'B' * 22}.state").write_bytes(b"VMXRPLY damaged")
        error = resume("B" * 22)
        assert error.code() == grpc.StatusCode.NOT_FOUND and "damaged" in error.details()
        assert (tmp_path / "replays" / f"{'B' * 22}.state.corrupt").exists()
        held = StateDir(tmp_path)
        with (
            held.replay_open("C" * 22),
            pytest.raises(Busy, match="still open on another stream"),
            held.replay_open("C" * 22),
        ):
            pass
