"""Issue 14, items 8, 9, 11 and 13: resume and identity across crashes, what a state directory
keeps and cleans up, truthful stream metrics, and operator errors. Real ``vmxsim serve``
processes (SIGKILL is a real crash) or real in-process servers on loopback ports."""

from __future__ import annotations

import argparse
import queue
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
import trustme
from conftest_service import cpuid_batch, ins, rpc_error
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_client.client import Client
from vmxsim_client.connection import add_connection_options, client_kwargs
from vmxsim_client.load.local_servers import free_port
from vmxsim_server.app import BackgroundServer, start_background
from vmxsim_server.config import ServerConfig
from vmxsim_server.limits import LIMITS, limits_markdown
from vmxsim_server.registry import Registry
from vmxsim_server.state import ReplayCheckpoint, StateDir
from vmxsim_server.vmx import snapshot as snapshots
from vmxsim_server.vmx.mixes import load_mix, synthesize

Code = grpc.StatusCode
BATCH = 100


def _stub(server: ServerProcess) -> tuple[grpc.Channel, pb_grpc.VcpuServiceStub]:
    channel = grpc.insecure_channel(server.address)
    return channel, pb_grpc.VcpuServiceStub(channel)


def _replay_two_batches(stub: pb_grpc.VcpuServiceStub, vcpu_id: str) -> str:
    """Start a replay on ``vcpu_id``, have two batches acknowledged, leave it open (the client
    then vanishes); returns its resume token."""
    requests: queue.Queue[pb.ReplayRequest | None] = queue.Queue()
    requests.put(pb.ReplayRequest(start=pb.ReplayStart(vcpu_id=vcpu_id)))
    call = stub.Replay(iter(requests.get, None))
    token = ""
    for sequence in (1, 2):
        requests.put(pb.ReplayRequest(batch=cpuid_batch(BATCH, sequence)))
        token = next(call).progress.resume_token
    call.cancel()
    return token


def _resume(stub: pb_grpc.VcpuServiceStub, token: str) -> pb.ReplayResponse:
    """Resume after batch 2 with batch 3 and the end; the last response (the summary)."""
    requests = [
        pb.ReplayRequest(start=pb.ReplayStart(resume_token=token)),
        pb.ReplayRequest(batch=cpuid_batch(BATCH, 3)),
        pb.ReplayRequest(end={}),
    ]
    return list(stub.Replay(iter(requests), timeout=20))[-1]


@pytest.mark.parametrize("lost_file", [False, True], ids=["vcpu-saved", "vcpu-file-lost"])
def test_resume_on_an_existing_vcpu_after_a_crash_before_any_periodic_save(
    tmp_path: Path, lost_file: bool
) -> None:
    """Item 8: SIGKILL before the first periodic save; the resume continues from the
    checkpoint's snapshot, also when the vCPU's own file is gone (an older server's crash)."""
    server = ServerProcess("--snapshot-interval", "3600", state_dir=tmp_path)
    channel, stub = _stub(server)
    vcpu_id = stub.CreateVcpu(pb.CreateVcpuRequest(), timeout=10).vcpu.vcpu_id
    token = _replay_two_batches(stub, vcpu_id)
    channel.close()
    server.stop(kill=True)
    if lost_file:
        (tmp_path / "vcpus" / f"{vcpu_id}.state").unlink()
    server = ServerProcess(state_dir=tmp_path, port=server.port)
    channel, stub = _stub(server)
    try:
        assert _resume(stub, token).summary.exits == 3 * BATCH
        stats = stub.GetStats(pb.GetStatsRequest(vcpu_id=vcpu_id), timeout=10)
        assert stats.summary.exits == 3 * BATCH
    finally:
        channel.close()
        server.stop()


def test_ids_are_never_reused_and_a_resume_refuses_another_vcpu(tmp_path: Path) -> None:
    """Item 8: the id counters survive a SIGKILL; a checkpoint resumed where another vCPU has
    its vCPU's id (a state directory reset around it) is refused, and that vCPU is intact."""
    first = tmp_path / "first"
    server = ServerProcess(state_dir=first)
    channel, stub = _stub(server)
    made = [stub.CreateVcpu(pb.CreateVcpuRequest(), timeout=10).vcpu.vcpu_id for _ in range(3)]
    stub.DeleteVcpu(pb.DeleteVcpuRequest(vcpu_id=made[-1]), timeout=10)
    token = _replay_two_batches(stub, made[0])
    channel.close()
    server.stop(kill=True)
    server = ServerProcess(state_dir=first, port=server.port)
    channel, stub = _stub(server)
    new = stub.CreateVcpu(pb.CreateVcpuRequest(), timeout=10).vcpu.vcpu_id
    assert int(new.split("-")[1]) > max(int(i.split("-")[1]) for i in made)  # vcpu-3 stays gone
    channel.close()
    server.stop()
    # a fresh state directory holding only the checkpoint: its vcpu-1 is someone else's
    second = tmp_path / "second"
    (second / "replays").mkdir(parents=True)
    for path in (first / "replays").glob("*.state"):
        shutil.copy(path, second / "replays" / path.name)
    server = ServerProcess(state_dir=second)
    channel, stub = _stub(server)
    try:
        other = stub.CreateVcpu(pb.CreateVcpuRequest(), timeout=10).vcpu.vcpu_id
        assert other == made[0]
        error = rpc_error(stub.Replay, iter([pb.ReplayRequest(start={"resume_token": token})]))
        assert error.code() == Code.FAILED_PRECONDITION
        assert "is not the vCPU replay" in error.details()
        assert stub.GetStats(pb.GetStatsRequest(vcpu_id=other), timeout=10).summary.exits == 0
    finally:
        channel.close()
        server.stop()


def test_an_implicit_vm_stays_implicit_across_a_restart(tmp_path: Path) -> None:
    """Item 9: the VM made for a vCPU goes with its last vCPU, also after a restart."""
    server = ServerProcess(state_dir=tmp_path)
    channel, stub = _stub(server)
    vcpu_id = stub.CreateVcpu(pb.CreateVcpuRequest(), timeout=10).vcpu.vcpu_id
    explicit = stub.CreateVm(pb.CreateVmRequest(), timeout=10).vm.vm_id
    channel.close()
    assert server.stop() == 0
    server = ServerProcess(state_dir=tmp_path, port=server.port)
    channel, stub = _stub(server)
    try:
        stub.DeleteVcpu(pb.DeleteVcpuRequest(vcpu_id=vcpu_id), timeout=10)
        assert [vm.vm_id for vm in stub.ListVms(pb.ListVmsRequest(), timeout=10).vms] == [explicit]
    finally:
        channel.close()
        server.stop()


def test_abandoned_checkpoints_are_cleaned_up(tmp_path: Path) -> None:
    """Item 9: a replay whose client vanished leaves no checkpoint past --replay-retention."""
    config = ServerConfig(
        listen="127.0.0.1:0", metrics_listen=None, state_dir=str(tmp_path),
        replay_retention_seconds=0.5, snapshot_interval_seconds=0.2, grace_seconds=0.2,
    )  # fmt: skip
    with start_background(config) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.VcpuServiceStub(channel)
        vcpu_id = stub.CreateVcpu(pb.CreateVcpuRequest(), timeout=10).vcpu.vcpu_id
        _replay_two_batches(stub, vcpu_id)
        assert list((tmp_path / "replays").glob("*.state"))
        deadline = time.monotonic() + 10
        while list((tmp_path / "replays").glob("*.state")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not list((tmp_path / "replays").glob("*.state"))


def test_the_periodic_save_writes_only_what_changed(tmp_path: Path) -> None:
    """Item 9: unchanged VMs are not serialised again."""
    registry = Registry()
    state = StateDir(tmp_path)
    first, second = registry.create_vcpu(), registry.create_vcpu()
    assert state.save_vcpus(registry) == 2
    assert state.save_vcpus(registry) == 0
    registry.change_vcpu(first, lambda entry: entry.vcpu.set_cr0(0x8005_0033))
    assert state.save_vcpus(registry) == 1
    registry.delete_vcpu(second.vcpu_id)
    assert state.save_vcpus(registry) == 0
    assert sorted(p.name for p in (tmp_path / "vcpus").iterdir()) == [f"{first.vcpu_id}.state"]


# --- truthful answers ----------------------------------------------------------------------


def _handled(port: int) -> dict[str, float]:
    """grpc_server_handled_total of Replay by code, scraped from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "grpc_server_handled_total"
                and sample.labels.get("grpc_method") == "Replay"
            ):
                counts[sample.labels["grpc_code"]] = sample.value
    return counts


def test_successful_replays_are_ok_and_a_cancel_is_cancelled() -> None:
    """Item 11: 20 replays count 20 OK (none UNKNOWN); a client's cancel counts CANCELLED."""
    metrics_port = free_port()
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen=f"127.0.0.1:{metrics_port}")
    with start_background(config) as server, Client(server.address, timeout=10) as client:
        for _ in range(20):
            records = synthesize(load_mix("linux-boot"), 50, seed=1)
            assert client.replay(records, batch_size=10)["exits"] == 50
        with grpc.insecure_channel(server.address) as channel:
            requests: queue.Queue[pb.ReplayRequest | None] = queue.Queue()
            requests.put(pb.ReplayRequest(start=pb.ReplayStart(per_exit=True)))
            for sequence in range(1, 41):  # queued: the server runs batch after batch
                requests.put(pb.ReplayRequest(batch=cpuid_batch(100_000, sequence)))
            call = pb_grpc.VcpuServiceStub(channel).Replay(iter(requests.get, None))
            next(call)
            time.sleep(0.05)  # the server is inside a batch now
            call.cancel()
        deadline = time.monotonic() + 10
        while _handled(metrics_port).get("CANCELLED", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        counts = _handled(metrics_port)
    assert counts.get("OK") == 20 and counts.get("CANCELLED") == 1, counts
    assert "UNKNOWN" not in counts


# --- operator errors -----------------------------------------------------------------------


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    vmxsim = Path(sys.executable).with_name("vmxsim")
    command = [str(vmxsim), "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    one, two = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    files = {name: where / name for name in ("cert", "key", "other_key", "junk")}
    one.cert_chain_pems[0].write_to_path(str(files["cert"]))
    one.private_key_pem.write_to_path(str(files["key"]))
    two.private_key_pem.write_to_path(str(files["other_key"]))
    files["junk"].write_text("not a certificate\n")
    return files


@pytest.mark.parametrize(
    "cert, key, message",
    [
        ("junk", "key", "not a PEM certificate chain"),
        ("cert", "junk", "not a PEM certificate chain"),
        ("cert", "other_key", "is not the key of --tls-cert"),
    ],
)
def test_a_bad_certificate_or_key_is_named(
    certificates: dict[str, Path], cert: str, key: str, message: str
) -> None:
    """Item 13: one line naming the file, exit 2, never "Failed to bind to address"."""
    done = _serve("--tls-cert", str(certificates[cert]), "--tls-key", str(certificates[key]))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(certificates[cert]) in lines[0]
    assert "Traceback" not in done.stderr and "bind" not in done.stderr


def test_an_empty_token_file_is_one_line(tmp_path: Path) -> None:
    """Item 13: an empty token file (or one of comments only) is one line naming it."""
    empty = tmp_path / "tokens"
    empty.write_text("# nobody yet\n\n")
    done = _serve("--auth-token-file", str(empty))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"vmxsim: error: token file {empty} holds no token (only blank or # comment lines)"
    )
    bad = tmp_path / "bad"
    bad.write_text("t0ken role=root\n")
    done = _serve("--auth-token-file", str(bad))
    assert done.returncode == 2 and f"{bad}:1: unknown option 'role=root'" in done.stderr


def test_the_client_token_file_skips_comments(tmp_path: Path) -> None:
    """Item 13: the client reads the server's format: the first word of the first line that is
    not a comment."""
    path = tmp_path / "token"
    path.write_text("# my token for the lab server\n\n  s3cret tenant=lab  # mine\n")
    parser = argparse.ArgumentParser()
    add_connection_options(parser)
    assert client_kwargs(parser.parse_args(["--token-file", str(path)]))["token"] == "s3cret"


def test_a_token_file_shared_by_server_and_client(tmp_path: Path) -> None:
    """The same file works on both ends: the client authenticates with it."""
    path = tmp_path / "tokens"
    path.write_text("# lab\nlab-s3cret tenant=lab\n")
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen=None, auth_token_file=str(path))
    parser = argparse.ArgumentParser()
    add_connection_options(parser)
    token = client_kwargs(parser.parse_args(["--token-file", str(path)]))["token"]
    with start_background(config) as server, Client(server.address, token=token) as client:
        vcpu = client.create_vcpu()
        assert [v.vcpu_id for v in client.list_vcpus()] == [vcpu.id]


def test_metrics_over_https_with_client_certificates_and_a_plaintext_health_port(
    tmp_path: Path,
) -> None:
    """Item 14: /metrics can need TLS and a client certificate; probes that cannot do TLS get
    health alone on --health-listen, while the API itself is TLS only."""
    ca = trustme.CA()
    server_cert, prometheus = ca.issue_cert("127.0.0.1"), ca.issue_cert("prometheus")
    files = {name: tmp_path / name for name in ("cert", "key", "ca")}
    server_cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server_cert.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    metrics_port, health_port = free_port(), free_port()
    cert, key, client_ca = (str(files[name]) for name in ("cert", "key", "ca"))
    config = ServerConfig(
        listen="127.0.0.1:0", metrics_listen=f"127.0.0.1:{metrics_port}",
        health_listen=f"127.0.0.1:{health_port}", tls_cert=cert, tls_key=key,
        metrics_tls_cert=cert, metrics_tls_key=key, metrics_tls_client_ca=client_ca,
    )  # fmt: skip
    url = f"https://127.0.0.1:{metrics_port}/metrics"
    with start_background(config):
        anonymous = ssl.create_default_context()
        ca.configure_trust(anonymous)
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            urllib.request.urlopen(url, timeout=10, context=anonymous).read()
        scraper = ssl.create_default_context()
        ca.configure_trust(scraper)
        prometheus.configure_cert(scraper)
        text = urllib.request.urlopen(url, timeout=10, context=scraper).read().decode()
        assert "grpc_server_started_total" in text or "vmxsim_" in text
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            request = health_pb2.HealthCheckRequest(service="vmxsim.v1.VcpuService")
            assert check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
            other = pb_grpc.VcpuServiceStub(channel).ListVcpus
            assert rpc_error(other, pb.ListVcpusRequest()).code() == Code.UNIMPLEMENTED


def test_the_limits_table_is_the_one_in_limits_py() -> None:
    """docs/reliability.md shows limits.LIMITS as generated, and each row's test exists."""
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "reliability.md").read_text()
    assert limits_markdown() in page
    for limit in LIMITS:
        path, _, name = limit.test.partition("::")
        assert f"def {name}(" in (root / path).read_text(), limit.test
        assert ServerConfig().__getattribute__(limit.name) == limit.default


def test_a_replay_checkpoint_carries_only_what_a_batch_changes(tmp_path: Path) -> None:
    """Item 9: per batch, the checkpoint holds the current VMCS, not every region of the VM;
    the whole VM is in its base, written once."""
    with _state_server(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.VcpuServiceStub(channel)
        vcpu_id = stub.CreateVcpu(pb.CreateVcpuRequest(), timeout=10).vcpu.vcpu_id
        pages = [ins("vmclear", address=0x1000 * (i + 8)) for i in range(200)]
        setup = [ins("cr4", value=0x2020), ins("revid", address=0x1000),
                 ins("vmxon", address=0x1000), *pages, ins("vmxoff")]  # fmt: skip
        results = stub.Execute(pb.ExecuteRequest(vcpu_id=vcpu_id, instructions=setup)).results
        assert all(r.result == pb.OUTCOME_RESULT_VMSUCCEED for r in results)
        _replay_two_batches(stub, vcpu_id)
        (path,) = (tmp_path / "replays").glob("*.state")
        checkpoint = ReplayCheckpoint.from_bytes(path.read_bytes())
        assert len(snapshots.load(checkpoint.snapshot).regions) == 1
        assert len(snapshots.load(checkpoint.base).regions) >= 200


def _state_server(state_dir: Path) -> BackgroundServer:
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen=None, state_dir=str(state_dir),
                          grace_seconds=0.2)  # fmt: skip
    return start_background(config)


def test_an_execute_stops_working_at_its_deadline() -> None:
    """Item 2: an Execute past its deadline stops; the vCPU is free again at once (a GetStats,
    which waits for the vCPU's lock, answers) instead of after the whole request."""
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen=None, max_instructions=1_000_000)
    vmptrst = pb.Instruction(vmptrst=pb.Vmptrst()).SerializeToString()
    with start_background(config) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.VcpuServiceStub(channel)
        vcpu_id = stub.CreateVcpu(pb.CreateVcpuRequest(), timeout=10).vcpu.vcpu_id
        head = pb.ExecuteRequest(vcpu_id=vcpu_id).SerializeToString()
        item = bytes([2 << 3 | 2, len(vmptrst)]) + vmptrst
        execute = channel.unary_unary("/vmxsim.v1.VcpuService/Execute")
        with pytest.raises(grpc.RpcError) as raised:
            execute(head + item * 1_000_000, timeout=0.5)
        assert raised.value.code() == Code.DEADLINE_EXCEEDED
        began = time.monotonic()
        stub.GetStats(pb.GetStatsRequest(vcpu_id=vcpu_id), timeout=10)
        assert time.monotonic() - began < 3  # the 1 M instructions take over 120 s here
