"""VMs and vCPUs over gRPC: every management RPC, NOT_FOUND, INVALID_ARGUMENT, the vCPU limit,
health and reflection."""

from __future__ import annotations

import grpc
import pytest
from conftest_service import rpc_error, serving
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_server.app import BackgroundServer

SERVICE = "vmxsim.v1.VcpuService"


def test_vm_lifecycle_create_list_delete(stub: pb_grpc.VcpuServiceStub) -> None:
    vm = stub.CreateVm(pb.CreateVmRequest(maxphyaddr=40)).vm
    assert vm.vm_id.startswith("vm-") and vm.maxphyaddr == 40 and not vm.vcpu_ids
    assert vm.vm_id in [v.vm_id for v in stub.ListVms(pb.ListVmsRequest()).vms]
    stub.DeleteVm(pb.DeleteVmRequest(vm_id=vm.vm_id))
    assert vm.vm_id not in [v.vm_id for v in stub.ListVms(pb.ListVmsRequest()).vms]


def test_vcpus_share_a_vm_and_list_by_vm(stub: pb_grpc.VcpuServiceStub) -> None:
    vm = stub.CreateVm(pb.CreateVmRequest()).vm
    made = [
        stub.CreateVcpu(
            pb.CreateVcpuRequest(vm_id=vm.vm_id, profile=profile, mode=pb.LATENCY_MODE_NESTED)
        ).vcpu
        for profile in ("kvm", "haxm-cache")
    ]
    listed = stub.ListVcpus(pb.ListVcpusRequest(vm_id=vm.vm_id)).vcpus
    assert [v.vcpu_id for v in listed] == [v.vcpu_id for v in made]
    assert [v.profile for v in listed] == ["kvm", "haxm-cache"]
    assert {v.mode for v in listed} == {pb.LATENCY_MODE_NESTED}
    assert stub.ListVms(pb.ListVmsRequest()).vms[-1].vcpu_ids == [v.vcpu_id for v in made]
    every = {v.vcpu_id for v in stub.ListVcpus(pb.ListVcpusRequest()).vcpus}
    assert every >= {v.vcpu_id for v in made}
    stub.DeleteVcpu(pb.DeleteVcpuRequest(vcpu_id=made[0].vcpu_id))
    assert stub.GetVcpu(pb.GetVcpuRequest(vcpu_id=made[1].vcpu_id)).vcpu.vm_id == vm.vm_id
    stub.DeleteVm(pb.DeleteVmRequest(vm_id=vm.vm_id))
    assert rpc_error(stub.GetVcpu, pb.GetVcpuRequest(vcpu_id=made[1].vcpu_id)).code() == (
        grpc.StatusCode.NOT_FOUND
    )


def test_create_vcpu_defaults_and_capabilities(stub: pb_grpc.VcpuServiceStub) -> None:
    plain = stub.CreateVcpu(pb.CreateVcpuRequest()).vcpu
    assert (plain.profile, plain.mode, plain.vcpu_mode) == (
        "kvm",
        pb.LATENCY_MODE_NATIVE,
        pb.VCPU_MODE_OFF,
    )
    assert plain.current_vmcs_pointer == 0xFFFF_FFFF_FFFF_FFFF and plain.exits == 0
    assert plain.capabilities.revision_id == 0x11E5_7ED0
    assert plain.capabilities.maxphyaddr == 46
    caps = pb.Capabilities(revision_id=0x1234, maxphyaddr=39, vmx_misc_bit29=True)
    custom = stub.CreateVcpu(pb.CreateVcpuRequest(capabilities=caps)).vcpu
    assert custom.capabilities.revision_id == 0x1234
    assert custom.capabilities.vmx_misc_bit29 and custom.capabilities.cr3_target_count == 4
    assert stub.ListVms(pb.ListVmsRequest()).vms[-1].maxphyaddr == 39
    for vcpu in (plain, custom):
        stub.DeleteVm(pb.DeleteVmRequest(vm_id=vcpu.vm_id))


@pytest.mark.parametrize(
    ("request_", "offending"),
    [
        (pb.CreateVcpuRequest(profile="no-such-hypervisor"), "no-such-hypervisor"),
        (pb.CreateVcpuRequest(profile="/etc/passwd"), "/etc/passwd"),
        (pb.CreateVcpuRequest(mode=99), "99"),  # type: ignore[arg-type]
        (pb.CreateVcpuRequest(capabilities=pb.Capabilities(maxphyaddr=99)), "99"),
        (pb.CreateVcpuRequest(capabilities=pb.Capabilities(revision_id=1 << 31)), "0x80000000"),
    ],
)
def test_create_vcpu_rejects_bad_values_naming_them(
    stub: pb_grpc.VcpuServiceStub, request_: pb.CreateVcpuRequest, offending: str
) -> None:
    error = rpc_error(stub.CreateVcpu, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert offending in error.details()
    assert "Traceback" not in error.details()


def test_create_vcpu_maxphyaddr_must_match_its_vm(stub: pb_grpc.VcpuServiceStub) -> None:
    vm = stub.CreateVm(pb.CreateVmRequest(maxphyaddr=40)).vm
    request = pb.CreateVcpuRequest(vm_id=vm.vm_id, capabilities=pb.Capabilities(maxphyaddr=46))
    error = rpc_error(stub.CreateVcpu, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "46" in error.details()
    stub.DeleteVm(pb.DeleteVmRequest(vm_id=vm.vm_id))


def test_create_vm_rejects_a_bad_maxphyaddr(stub: pb_grpc.VcpuServiceStub) -> None:
    error = rpc_error(stub.CreateVm, pb.CreateVmRequest(maxphyaddr=60))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "60" in error.details()


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("GetVcpu", pb.GetVcpuRequest(vcpu_id="vcpu-999999")),
        ("DeleteVcpu", pb.DeleteVcpuRequest(vcpu_id="vcpu-999999")),
        ("Execute", pb.ExecuteRequest(vcpu_id="vcpu-999999")),
        ("GetStats", pb.GetStatsRequest(vcpu_id="vcpu-999999")),
        ("Snapshot", pb.SnapshotRequest(vcpu_id="vcpu-999999")),
        ("DeleteVm", pb.DeleteVmRequest(vm_id="vm-999999")),
        ("ListVcpus", pb.ListVcpusRequest(vm_id="vm-999999")),
        ("CreateVcpu", pb.CreateVcpuRequest(vm_id="vm-999999")),
        ("Restore", pb.RestoreRequest(vm_id="vm-999999")),
        ("ValidState", pb.ValidStateRequest(vcpu_id="vcpu-999999")),
    ],
)
def test_unknown_ids_are_not_found(
    stub: pb_grpc.VcpuServiceStub, method: str, request_: object
) -> None:
    if method == "Restore":  # needs a valid snapshot to get as far as the VM
        vcpu = stub.CreateVcpu(pb.CreateVcpuRequest()).vcpu
        data = stub.Snapshot(pb.SnapshotRequest(vcpu_id=vcpu.vcpu_id)).data
        request_ = pb.RestoreRequest(vm_id="vm-999999", data=data)
        stub.DeleteVm(pb.DeleteVmRequest(vm_id=vcpu.vm_id))
    error = rpc_error(getattr(stub, method), request_)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "999999" in error.details()


def test_vcpu_limit_is_resource_exhausted() -> None:
    with serving(max_vcpus=2) as (_, stub):
        for _ in range(2):
            stub.CreateVcpu(pb.CreateVcpuRequest())
        error = rpc_error(stub.CreateVcpu, pb.CreateVcpuRequest())
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 vCPUs" in error.details()
        stub.DeleteVm(pb.DeleteVmRequest(vm_id="vm-1"))  # VMs count against the limit too
        assert stub.CreateVcpu(pb.CreateVcpuRequest()).vcpu.vcpu_id == "vcpu-3"


def test_health_serves_overall_and_the_service(service_server: BackgroundServer) -> None:
    with grpc.insecure_channel(service_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            response = health.Check(health_pb2.HealthCheckRequest(service=name))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as raised:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(service_server: BackgroundServer) -> None:
    with grpc.insecure_channel(service_server.address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
        ]
        listed, described = list(reflection.ServerReflectionInfo(iter(requests)))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names
    assert any(
        b"VcpuService" in f for f in described.file_descriptor_response.file_descriptor_proto
    )
