"""The reproductions of issue 14, as a careless or hostile client would send them, against a
real ``vmxsim serve`` child process (tokens for three tenants, a state directory, small
stream limits).

Each ends in a specific status with a readable message naming the problem or the limit, and
after each the server is alive, a second client (another tenant) still lists its vCPUs, and
the server's peak resident memory (``VmHWM`` of ``/proc/<pid>/status``) stayed within
``RSS_BOUND_KIB`` of what it was at the start.
"""

from __future__ import annotations

import queue
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest_service import cpuid_batch, ins, root_setup, rpc_error
from server_process import ServerProcess

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_server.vmx import snapshot as snapshots
from vmxsim_server.vmx.vcpu import INVALID_POINTER

Code = grpc.StatusCode
U64 = (1 << 64) - 1
TOKENS = {"alice": "alice-secret-1", "bob": "bob-secret-2", "admin": "ops-secret-3"}
RSS_BOUND_KIB = 150 * 1024
"""How far the server's peak RSS may rise over its start (a 1 GB zlib bomb would be 1 GiB)."""
IDLE_SECONDS = 2.0
STREAMS_PER_CLIENT = 4


@dataclass
class Hostile:
    """The server under attack and a stub per tenant."""

    server: ServerProcess
    channel: grpc.Channel
    stub: pb_grpc.VcpuServiceStub
    full_flag: Path
    start_kib: int

    def md(self, who: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {TOKENS[who]}"),)

    def unharmed(self) -> None:
        """Alive, another tenant's calls work, and memory stayed bounded."""
        assert self.server.process.poll() is None
        reply = self.stub.ListVcpus(pb.ListVcpusRequest(), metadata=self.md("bob"), timeout=10)
        assert all(v.vcpu_id for v in reply.vcpus)
        peak = self.server.memory_kib("VmHWM")
        assert peak - self.start_kib < RSS_BOUND_KIB, f"peak RSS {peak} KiB"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    where = tmp_path_factory.mktemp("hostile")
    tokens = where / "tokens"
    tokens.write_text(
        "# tenants\n"
        f"{TOKENS['alice']} tenant=alice\n{TOKENS['bob']} tenant=bob\n"
        f"{TOKENS['admin']} admin  # operators\n"
    )
    flag = where / "disk-full"
    server = ServerProcess(
        "--auth-token-file", str(tokens), "--max-streams-per-client", str(STREAMS_PER_CLIENT),
        "--stream-idle-seconds", str(IDLE_SECONDS), "--max-vcpus-per-client", "40",
        state_dir=where / "state", env={"VMXSIM_TEST_DISK_FULL_FLAG": str(flag)},
    )  # fmt: skip
    channel = grpc.insecure_channel(server.address)
    try:
        start = server.memory_kib("VmRSS")
        print(f"\nvmxsim serve RSS: {start} KiB at the start")
        yield Hostile(server, channel, pb_grpc.VcpuServiceStub(channel), flag, start)
    finally:
        channel.close()
        peak = server.memory_kib("VmHWM")
        print(f"\nvmxsim serve RSS: {server.memory_kib('VmRSS')} KiB at the end, {peak} KiB peak")
        assert server.stop() == 0


def _vcpu(h: Hostile, who: str = "alice") -> pb.Vcpu:
    return h.stub.CreateVcpu(pb.CreateVcpuRequest(), metadata=h.md(who), timeout=10).vcpu


def _raw_execute(
    h: Hostile, vcpu_id: str, instruction: pb.Instruction, count: int
) -> grpc.RpcError:
    """An Execute of ``count`` copies of one instruction, built as bytes (fast for millions)."""
    field = pb.ExecuteRequest.DESCRIPTOR.fields_by_name["instructions"].number
    one = pb.Instruction.SerializeToString(instruction)
    head = pb.ExecuteRequest(vcpu_id=vcpu_id).SerializeToString()
    item = _varint(field << 3 | 2) + _varint(len(one)) + one
    call = h.channel.unary_unary("/vmxsim.v1.VcpuService/Execute")
    with pytest.raises(grpc.RpcError) as raised:
        call(head + item * count, metadata=h.md("alice"), timeout=60)
    return raised.value


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# --- memory and time that one request can take ---------------------------------------------


def test_zlib_bomb(hostile: Hostile) -> None:
    """Item 1: a snapshot whose small payload inflates to 512 MiB."""
    squeeze = zlib.compressobj(9)
    chunk = b" " * (1 << 20)
    payload = b"".join(squeeze.compress(chunk) for _ in range(512)) + squeeze.flush()
    assert len(payload) < 1 << 20
    data = struct.pack(">7sHI", snapshots.MAGIC, snapshots.FORMAT_VERSION, zlib.crc32(payload))
    error = rpc_error(
        hostile.stub.Restore, pb.RestoreRequest(data=data + payload), metadata=hostile.md("alice")
    )
    assert error.code() == Code.INVALID_ARGUMENT
    assert "--max-snapshot-bytes" in error.details() and "inflates" in error.details()
    hostile.unharmed()


def test_execute_is_bounded(hostile: Hostile) -> None:
    """Item 2: 150,000 VMCLEARs, 3.5 M VMPTRSTs, and regions/words past a VM's limits."""
    vcpu = _vcpu(hostile)
    error = _raw_execute(hostile, vcpu.vcpu_id, ins("vmclear", address=0x1000), 150_000)
    assert error.code() == Code.INVALID_ARGUMENT and "--max-instructions" in error.details()
    error = _raw_execute(hostile, vcpu.vcpu_id, ins("vmptrst"), 3_500_000)
    # 3.5 M instructions are more bytes than a message may have: gRPC refuses it unread
    assert error.code() in (Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED), error.details()
    pages = [ins("vmclear", address=0x1000 * (i + 3)) for i in range(1_100)]
    request = pb.ExecuteRequest(vcpu_id=vcpu.vcpu_id, instructions=root_setup() + pages)
    error = rpc_error(hostile.stub.Execute, request, metadata=hostile.md("alice"))
    assert error.code() == Code.RESOURCE_EXHAUSTED and "--max-vmcs-regions" in error.details()
    words = [ins("mem32", address=4 * i, value=1) for i in range(9_000)]
    request = pb.ExecuteRequest(vcpu_id=vcpu.vcpu_id, instructions=words + words[:1])
    assert hostile.stub.Execute(request, metadata=hostile.md("alice")).results  # 9,000 fit
    words = [ins("mem32", address=0x10_0000 + 4 * i, value=1) for i in range(9_000)]
    request = pb.ExecuteRequest(vcpu_id=vcpu.vcpu_id, instructions=words)
    error = rpc_error(hostile.stub.Execute, request, metadata=hostile.md("alice"))
    assert error.code() == Code.RESOURCE_EXHAUSTED and "--max-memory-words" in error.details()
    # nothing of a refused request ran: the set-up before the 1,100 VMCLEARs did not either
    got = hostile.stub.GetVcpu(
        pb.GetVcpuRequest(vcpu_id=vcpu.vcpu_id), metadata=hostile.md("alice")
    )
    assert got.vcpu.vcpu_mode == pb.VCPU_MODE_OFF
    hostile.unharmed()


def _idle_stream(h: Hostile, who: str, release: threading.Event) -> dict[str, Any]:
    """A Replay stream that sends nothing until released; its outcome lands in the dict."""
    outcome: dict[str, Any] = {}

    def requests() -> Iterator[pb.ReplayRequest]:
        release.wait(30)
        return
        yield

    def run() -> None:
        try:
            list(h.stub.Replay(requests(), metadata=h.md(who), timeout=30))
            outcome["code"] = Code.OK
        except grpc.RpcError as exc:
            outcome["code"], outcome["details"] = exc.code(), exc.details()

    outcome["thread"] = threading.Thread(target=run, daemon=True)
    outcome["thread"].start()
    return outcome


def test_idle_streams_cannot_take_every_slot(hostile: Hostile) -> None:
    """Item 4: one client's idle streams take its own slots only; another client streams."""
    release = threading.Event()
    idle = [_idle_stream(hostile, "alice", release) for _ in range(STREAMS_PER_CLIENT)]
    try:
        time.sleep(0.5)  # every idle stream holds its slot
        start = pb.ReplayRequest(start=pb.ReplayStart(profile="kvm"))
        error = rpc_error(hostile.stub.Replay, iter([start]), metadata=hostile.md("alice"))
        assert error.code() == Code.RESOURCE_EXHAUSTED
        assert "--max-streams-per-client" in error.details()
        requests = [start, pb.ReplayRequest(batch=cpuid_batch(5, 1)), pb.ReplayRequest(end={})]
        responses = list(hostile.stub.Replay(iter(requests), metadata=hostile.md("bob")))
        assert responses[-1].summary.exits == 5
    finally:
        release.set()
        for stream in idle:
            stream["thread"].join(10)
    hostile.unharmed()


def test_idle_streams_time_out(hostile: Hostile) -> None:
    """Item 4: a stream that sends nothing is ended after --stream-idle-seconds."""
    release = threading.Event()
    began = time.monotonic()
    stream = _idle_stream(hostile, "alice", release)
    stream["thread"].join(IDLE_SECONDS + 10)
    release.set()
    assert stream["code"] == Code.RESOURCE_EXHAUSTED, stream
    assert "--stream-idle-seconds" in stream["details"]
    assert IDLE_SECONDS <= time.monotonic() - began < IDLE_SECONDS + 5
    hostile.unharmed()


def test_vcpus_are_capped_per_client(hostile: Hostile) -> None:
    """Item 4: one client cannot take every vCPU; another still creates its own."""
    made = []
    with pytest.raises(grpc.RpcError) as raised:
        for _ in range(50):
            made.append(_vcpu(hostile, "bob"))
    assert raised.value.code() == Code.RESOURCE_EXHAUSTED
    assert "--max-vcpus-per-client" in raised.value.details()
    assert _vcpu(hostile, "alice").vcpu_id
    for vcpu in made:
        hostile.stub.DeleteVm(pb.DeleteVmRequest(vm_id=vcpu.vm_id), metadata=hostile.md("bob"))
    hostile.unharmed()


# --- values that poison state --------------------------------------------------------------


def _snapshot_doc(h: Hostile) -> dict[str, Any]:
    """A real snapshot (a VMCS with exits run through it), decoded."""
    vcpu = _vcpu(h)  # the engine enters VMX operation and sets up a VMCS itself
    drive = [pb.DriveRequest(vcpu_id=vcpu.vcpu_id, batch=cpuid_batch(10, 1))]
    list(h.stub.Drive(iter(drive), metadata=h.md("alice")))
    data = h.stub.Snapshot(pb.SnapshotRequest(vcpu_id=vcpu.vcpu_id), metadata=h.md("alice")).data
    return snapshots.unpack(data)


POISON: dict[str, tuple[tuple[str, ...], Any]] = {
    "capability flag 2**64-1": (("capabilities", "vmcs_shadowing"), U64),
    "32-bit control capability 2**64-1": (("capabilities", "proc_allowed1"), U64),
    "engine total 2**64-1": (("engine", "totals", "exits"), U64),
    "instruction counter 2**64-1": (("engine", "totals", "counters", "vmread"), U64),
    "VMXON epoch 2**64-1": (("vcpu", "vmxon_epoch"), U64),
    "a list as vcpu.mode": (("vcpu", "mode"), ["root"]),
    "an object as a launch state": (("memory", "regions", 0, "launch_state"), {"a": 1}),
    "non-root without a current VMCS": (("vcpu", "current_pointer"), INVALID_POINTER),
    "a string as cr0": (("vcpu", "cr0"), "0x31"),
    "NaN simulated seconds": (("engine", "totals", "simulated_seconds"), float("nan")),
}


@pytest.mark.parametrize("case", POISON)
def test_restore_validates_every_value(hostile: Hostile, case: str) -> None:
    """Items 5 and 6: every poisoned snapshot is refused whole; nothing is registered."""
    doc = _snapshot_doc(hostile)
    path, value = POISON[case]
    if case.startswith("non-root"):
        doc["vcpu"]["mode"] = "non-root"
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    before = hostile.stub.ListVcpus(pb.ListVcpusRequest(), metadata=hostile.md("admin")).vcpus
    request = pb.RestoreRequest(data=snapshots.pack(doc))
    error = rpc_error(hostile.stub.Restore, request, metadata=hostile.md("alice"))
    assert error.code() == Code.INVALID_ARGUMENT, error.details()
    assert error.details().startswith(("snapshot is malformed", "snapshot is corrupted"))
    after = hostile.stub.ListVcpus(pb.ListVcpusRequest(), metadata=hostile.md("admin")).vcpus
    assert len(after) == len(before)
    hostile.unharmed()


def test_counts_at_their_limit_run_on_without_overflow(hostile: Hostile) -> None:
    """Item 5: totals at the largest allowed count restore, run another batch and answer."""
    doc = _snapshot_doc(hostile)
    doc["engine"]["totals"]["exits"] = snapshots.COUNTER_MAX
    doc["vcpu"]["injected_exits"] = 0  # injected exits count in the engine's totals
    restored = hostile.stub.Restore(
        pb.RestoreRequest(data=snapshots.pack(doc)), metadata=hostile.md("alice")
    ).vcpu
    drive = [pb.DriveRequest(vcpu_id=restored.vcpu_id, batch=cpuid_batch(10, 1))]
    list(hostile.stub.Drive(iter(drive), metadata=hostile.md("alice")))
    stats = hostile.stub.GetStats(
        pb.GetStatsRequest(vcpu_id=restored.vcpu_id), metadata=hostile.md("alice")
    )
    assert stats.summary.exits == snapshots.COUNTER_MAX + 10
    listed = hostile.stub.ListVcpus(pb.ListVcpusRequest(), metadata=hostile.md("alice")).vcpus
    assert restored.vcpu_id in [v.vcpu_id for v in listed]
    hostile.unharmed()


def test_injected_and_engine_exits_past_the_counter_limit_are_refused(hostile: Hostile) -> None:
    """Item 5 with one exit counter: injected exits join the engine's totals on restore, so
    their sum is bounded too."""
    doc = _snapshot_doc(hostile)
    doc["engine"]["totals"]["exits"] = snapshots.COUNTER_MAX
    doc["vcpu"]["injected_exits"] = 1
    request = pb.RestoreRequest(data=snapshots.pack(doc))
    error = rpc_error(hostile.stub.Restore, request, metadata=hostile.md("alice"))
    assert error.code() == Code.INVALID_ARGUMENT and "injected_exits" in error.details()
    hostile.unharmed()


@pytest.mark.parametrize("start, end", [(U64, 0), (snapshots.COUNTER_MAX, 1)])
def test_replay_counters_that_would_overflow(hostile: Hostile, start: int, end: int) -> None:
    """Item 6: ReplayStart/ReplayEnd skipped counts past uint64's headroom."""
    requests = [
        pb.ReplayRequest(start=pb.ReplayStart(profile="kvm", skipped=start)),
        pb.ReplayRequest(batch=cpuid_batch(3, 1)),
        pb.ReplayRequest(end=pb.ReplayEnd(skipped=end)),
    ]
    error = rpc_error(hostile.stub.Replay, iter(requests), metadata=hostile.md("alice"))
    assert error.code() == Code.INVALID_ARGUMENT and "skipped lines" in error.details()
    hostile.unharmed()


# --- a full disk ---------------------------------------------------------------------------


class _Stream:
    """A Replay stream fed one request at a time, its responses read one at a time."""

    def __init__(self, h: Hostile) -> None:
        self._requests: queue.Queue[pb.ReplayRequest | None] = queue.Queue()
        self.call = h.stub.Replay(iter(self._requests.get, None), metadata=h.md("alice"))

    def send(self, request: pb.ReplayRequest) -> pb.ReplayResponse:
        self._requests.put(request)
        return next(self.call)

    def close(self) -> None:
        self._requests.put(None)


def test_a_full_disk_is_unavailable_and_applies_nothing(hostile: Hostile) -> None:
    """Item 7: ENOSPC answers UNAVAILABLE before acknowledging; a resume counts exactly."""
    before = len(hostile.stub.ListVcpus(pb.ListVcpusRequest(), metadata=hostile.md("alice")).vcpus)
    hostile.full_flag.touch()
    try:
        error = rpc_error(hostile.stub.CreateVcpu, pb.CreateVcpuRequest(),
                          metadata=hostile.md("alice"))  # fmt: skip
        assert error.code() == Code.UNAVAILABLE and "nothing was made" in error.details()
        after = hostile.stub.ListVcpus(pb.ListVcpusRequest(), metadata=hostile.md("alice")).vcpus
        assert len(after) == before
    finally:
        hostile.full_flag.unlink()
    vcpu = _vcpu(hostile)
    stream = _Stream(hostile)
    start = pb.ReplayRequest(start=pb.ReplayStart(vcpu_id=vcpu.vcpu_id))
    stream._requests.put(start)
    token = stream.send(pb.ReplayRequest(batch=cpuid_batch(100, 1))).progress.resume_token
    hostile.full_flag.touch()
    try:
        with pytest.raises(grpc.RpcError) as raised:
            stream.send(pb.ReplayRequest(batch=cpuid_batch(100, 2)))
        assert raised.value.code() == Code.UNAVAILABLE
        assert "batch 2 was not applied" in raised.value.details()
    finally:
        stream.close()
        hostile.full_flag.unlink()
    resumed = [
        pb.ReplayRequest(start=pb.ReplayStart(resume_token=token)),
        pb.ReplayRequest(batch=cpuid_batch(100, 2)),
        pb.ReplayRequest(batch=cpuid_batch(100, 3)),
        pb.ReplayRequest(end={}),
    ]
    responses = list(hostile.stub.Replay(iter(resumed), metadata=hostile.md("alice")))
    assert responses[-1].summary.exits == 300  # batch 2 counted once
    stats = hostile.stub.GetStats(pb.GetStatsRequest(vcpu_id=vcpu.vcpu_id),
                                  metadata=hostile.md("alice"))  # fmt: skip
    assert stats.summary.exits == 300
    hostile.unharmed()


def test_a_failed_final_save_exits_non_zero(tmp_path: Path) -> None:
    """Item 7: SIGTERM while the disk is full: the server says so and exits 1."""
    flag = tmp_path / "full"
    server = ServerProcess(
        state_dir=tmp_path / "state", env={"VMXSIM_TEST_DISK_FULL_FLAG": str(flag)}
    )
    with grpc.insecure_channel(server.address) as channel:
        pb_grpc.VcpuServiceStub(channel).CreateVcpu(pb.CreateVcpuRequest(), timeout=10)
    flag.touch()
    assert server.stop() == 1
    assert any(line["message"].startswith("saving the vCPUs") for line in server.log)


# --- tenancy and the stream's claim ---------------------------------------------------------


def test_each_token_sees_only_its_own(hostile: Hostile) -> None:
    """Item 10: bob cannot see or touch alice's vCPU or VM; an admin token can."""
    vcpu = _vcpu(hostile)
    bob = hostile.md("bob")
    listed = hostile.stub.ListVcpus(pb.ListVcpusRequest(), metadata=bob).vcpus
    assert vcpu.vcpu_id not in [v.vcpu_id for v in listed]
    assert vcpu.vm_id not in [v.vm_id for v in hostile.stub.ListVms(pb.ListVmsRequest(),
                                                                   metadata=bob).vms]  # fmt: skip
    calls = [
        (hostile.stub.GetVcpu, pb.GetVcpuRequest(vcpu_id=vcpu.vcpu_id)),
        (hostile.stub.GetStats, pb.GetStatsRequest(vcpu_id=vcpu.vcpu_id)),
        (hostile.stub.Snapshot, pb.SnapshotRequest(vcpu_id=vcpu.vcpu_id)),
        (hostile.stub.Execute, pb.ExecuteRequest(vcpu_id=vcpu.vcpu_id, instructions=root_setup())),
        (hostile.stub.DeleteVcpu, pb.DeleteVcpuRequest(vcpu_id=vcpu.vcpu_id)),
        (hostile.stub.DeleteVm, pb.DeleteVmRequest(vm_id=vcpu.vm_id)),
        (hostile.stub.CreateVcpu, pb.CreateVcpuRequest(vm_id=vcpu.vm_id)),
        (hostile.stub.ListVcpus, pb.ListVcpusRequest(vm_id=vcpu.vm_id)),
    ]
    for method, request in calls:
        error = rpc_error(method, request, metadata=bob)
        assert error.code() == Code.NOT_FOUND and "on this server" in error.details()
    drive = [pb.DriveRequest(vcpu_id=vcpu.vcpu_id, batch=cpuid_batch(1, 1))]
    assert rpc_error(hostile.stub.Drive, iter(drive), metadata=bob).code() == Code.NOT_FOUND
    admin = hostile.md("admin")
    assert hostile.stub.GetVcpu(pb.GetVcpuRequest(vcpu_id=vcpu.vcpu_id), metadata=admin).vcpu
    hostile.unharmed()


def test_a_streams_claim_covers_every_change(hostile: Hostile) -> None:
    """Item 10: while a stream drives a vCPU, no other call changes it or its VM's memory."""
    vcpu = _vcpu(hostile)
    doc = _snapshot_doc(hostile)
    requests: queue.Queue[pb.DriveRequest | None] = queue.Queue()
    requests.put(pb.DriveRequest(vcpu_id=vcpu.vcpu_id, batch=cpuid_batch(10, 1)))
    drive = hostile.stub.Drive(iter(requests.get, None), metadata=hostile.md("alice"))
    try:
        assert next(drive).stats.exits == 10  # the stream holds its claim now
        execute = pb.ExecuteRequest(vcpu_id=vcpu.vcpu_id, instructions=root_setup())
        error = rpc_error(hostile.stub.Execute, execute, metadata=hostile.md("alice"))
        assert error.code() == Code.FAILED_PRECONDITION and "driven by a stream" in error.details()
        restore = pb.RestoreRequest(data=snapshots.pack(doc), vm_id=vcpu.vm_id)
        error = rpc_error(hostile.stub.Restore, restore, metadata=hostile.md("alice"))
        assert error.code() == Code.FAILED_PRECONDITION and "driven by a stream" in error.details()
        requests.put(pb.DriveRequest(batch=cpuid_batch(10, 2)))
        assert next(drive).stats.exits == 10  # the stream carries on unharmed
    finally:
        requests.put(None)
    hostile.unharmed()
