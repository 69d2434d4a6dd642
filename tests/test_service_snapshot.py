"""Snapshot and Restore over gRPC, and the snapshot format's validation (pure core)."""

from __future__ import annotations

import json
import struct
import zlib

import grpc
import pytest
from conftest_service import (
    VMCS_REGION,
    cpuid_batch,
    drive_requests,
    ins,
    named,
    root_setup,
    rpc_error,
)

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_server.vmx import snapshot
from vmxsim_server.vmx.exceptions import SnapshotError

HEADER = struct.Struct(">7sHI")


def state(stub: pb_grpc.VcpuServiceStub, vcpu_id: str) -> tuple[object, ...]:
    vcpu = stub.GetVcpu(pb.GetVcpuRequest(vcpu_id=vcpu_id)).vcpu
    stats = stub.GetStats(pb.GetStatsRequest(vcpu_id=vcpu_id)).summary
    rip = stub.Execute(
        pb.ExecuteRequest(vcpu_id=vcpu_id, instructions=[ins("vmread", field=named("GUEST_RIP"))])
    ).results[0]
    return (
        vcpu.profile, vcpu.mode, vcpu.vcpu_mode, vcpu.current_vmcs_pointer, vcpu.exits,
        vcpu.capabilities, stats, rip.value,
    )  # fmt: skip


def test_snapshot_restore_round_trip_continues_the_same_run(stub: pb_grpc.VcpuServiceStub) -> None:
    request = pb.CreateVcpuRequest(profile="haxm-cache", mode=pb.LATENCY_MODE_NESTED)
    vcpu = stub.CreateVcpu(request).vcpu
    list(stub.Drive(drive_requests(vcpu.vcpu_id, [cpuid_batch(100, 1), cpuid_batch(20, 2)])))
    saved = stub.Snapshot(pb.SnapshotRequest(vcpu_id=vcpu.vcpu_id))
    assert saved.format_version == 1 and saved.data.startswith(b"VMXSNAP")
    restored = stub.Restore(pb.RestoreRequest(data=saved.data)).vcpu
    assert restored.vcpu_id != vcpu.vcpu_id and restored.vm_id != vcpu.vm_id
    assert state(stub, restored.vcpu_id) == state(stub, vcpu.vcpu_id)
    # the engine's cache state came along: the next batch costs the same on both
    nexts = [
        next(iter(stub.Drive(drive_requests(v, [cpuid_batch(30, 3)])))).stats
        for v in (vcpu.vcpu_id, restored.vcpu_id)
    ]
    assert nexts[0] == nexts[1]
    for vm_id in (vcpu.vm_id, restored.vm_id):
        stub.DeleteVm(pb.DeleteVmRequest(vm_id=vm_id))


def test_restore_into_an_existing_vm_brings_its_vmcs_along(stub: pb_grpc.VcpuServiceStub) -> None:
    source = stub.CreateVcpu(pb.CreateVcpuRequest()).vcpu
    write = ins("vmwrite", field=named("GUEST_RIP"), value=0x1234)
    stub.Execute(pb.ExecuteRequest(vcpu_id=source.vcpu_id, instructions=[*root_setup(), write]))
    data = stub.Snapshot(pb.SnapshotRequest(vcpu_id=source.vcpu_id)).data
    target = stub.CreateVm(pb.CreateVmRequest()).vm
    restored = stub.Restore(pb.RestoreRequest(vm_id=target.vm_id, data=data)).vcpu
    assert restored.vm_id == target.vm_id
    assert restored.vcpu_mode == pb.VCPU_MODE_ROOT
    assert restored.current_vmcs_pointer == VMCS_REGION
    read = ins("vmread", field=named("GUEST_RIP"))
    result = stub.Execute(pb.ExecuteRequest(vcpu_id=restored.vcpu_id, instructions=[read]))
    assert result.results[0].value == 0x1234
    narrow = stub.CreateVm(pb.CreateVmRequest(maxphyaddr=36)).vm
    error = rpc_error(stub.Restore, pb.RestoreRequest(vm_id=narrow.vm_id, data=data))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "46" in error.details()
    for vm_id in (source.vm_id, target.vm_id, narrow.vm_id):
        stub.DeleteVm(pb.DeleteVmRequest(vm_id=vm_id))


def _repacked(data: bytes, edit: object) -> bytes:
    """The snapshot with its JSON document changed by ``edit`` and a correct CRC."""
    doc = json.loads(zlib.decompress(data[HEADER.size :]))
    edit(doc)  # type: ignore[operator]
    payload = zlib.compress(json.dumps(doc).encode())
    return HEADER.pack(b"VMXSNAP", 1, zlib.crc32(payload)) + payload


@pytest.fixture
def snapshot_bytes(stub: pb_grpc.VcpuServiceStub, vcpu_id: str) -> bytes:
    stub.Execute(pb.ExecuteRequest(vcpu_id=vcpu_id, instructions=root_setup()))
    return bytes(stub.Snapshot(pb.SnapshotRequest(vcpu_id=vcpu_id)).data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[:-3] + bytes(x ^ 0xFF for x in d[-3:]), "CRC32"),
        (lambda d: d[:7] + struct.pack(">H", 2) + d[9:], "version 2 is not supported"),
        (lambda d: b"NOTSNAP" + d[7:], "not a vmxsim snapshot"),
        (lambda d: d[:5], "too short"),
        (lambda d: b"", "too short"),
        (lambda d: _repacked(d, lambda doc: doc["vcpu"].pop("cr0")), "vcpu.cr0 is missing"),
        (lambda d: _repacked(d, lambda doc: doc.update(profile="nope")), "'nope'"),
        (lambda d: _repacked(d, lambda doc: doc.update(mode="warp")), "'warp'"),
        (
            lambda d: _repacked(d, lambda doc: doc["memory"]["regions"][0]["values"].update(X=1)),
            "unknown VMCS field 'X'",
        ),
        (
            lambda d: _repacked(d, lambda doc: doc["capabilities"].update(maxphyaddr=99)),
            "99",
        ),
    ],
)
def test_damaged_snapshots_are_invalid_argument(
    stub: pb_grpc.VcpuServiceStub, snapshot_bytes: bytes, damage: object, message: str
) -> None:
    data = damage(snapshot_bytes)  # type: ignore[operator]
    error = rpc_error(stub.Restore, pb.RestoreRequest(data=data))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details() and "Traceback" not in error.details()


def test_snapshot_load_reports_shape_errors_by_path(snapshot_bytes: bytes) -> None:
    bad = _repacked(snapshot_bytes, lambda doc: doc["vcpu"].update(msrs=[[1, "x"]]))
    with pytest.raises(SnapshotError, match=r"vcpu\.msrs\[0\] must be an integer"):
        snapshot.load(bad)
    loaded = snapshot.load(snapshot_bytes)
    assert loaded.profile == "kvm" and loaded.mode == "native"
    assert loaded.totals is not None and loaded.totals.exits == 0


def test_a_vcpu_keeps_its_l0_model_through_snapshot_and_restore(
    stub: pb_grpc.VcpuServiceStub,
) -> None:
    request = pb.CreateVcpuRequest(profile="kvm", mode=pb.LATENCY_MODE_NESTED, l0="kvm-modern")
    vcpu = stub.CreateVcpu(request).vcpu
    assert vcpu.l0 == "kvm-modern"
    list(stub.Drive(drive_requests(vcpu.vcpu_id, [cpuid_batch(50, 1)])))
    data = stub.Snapshot(pb.SnapshotRequest(vcpu_id=vcpu.vcpu_id)).data
    restored = stub.Restore(pb.RestoreRequest(data=data)).vcpu
    assert restored.l0 == "kvm-modern"
    nexts = [
        next(iter(stub.Drive(drive_requests(v, [cpuid_batch(30, 2)])))).stats
        for v in (vcpu.vcpu_id, restored.vcpu_id)
    ]
    assert nexts[0] == nexts[1] and nexts[0].l0.model == "kvm-modern"
    native = rpc_error(stub.CreateVcpu, pb.CreateVcpuRequest(profile="kvm", l0="kvm-modern"))
    assert native.code() == grpc.StatusCode.INVALID_ARGUMENT and "native" in native.details()
    for vm_id in (vcpu.vm_id, restored.vm_id):
        stub.DeleteVm(pb.DeleteVmRequest(vm_id=vm_id))
