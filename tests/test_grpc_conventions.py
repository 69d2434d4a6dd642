"""gRPC conventions on a real server: google.rpc error details on every vmxsim error, the
Discovery RPCs, and page tokens on every List RPC (Node clients check the same from outside:
tests/test_foreign_client.py)."""

from __future__ import annotations

from collections import Counter
from concurrent import futures
from typing import Any

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
import pytest
from conftest_service import rpc_error, serving
from grpc_status import rpc_status

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_client.client import Client
from vmxsim_client.connection import IDEMPOTENT_METHODS, SERVICE_CONFIG
from vmxsim_client.rpc_errors import (
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from vmxsim_server.app import BackgroundServer
from vmxsim_server.paging import MAX_PAGE_SIZE
from vmxsim_server.vmx.l0 import available_l0_models
from vmxsim_server.vmx.mixes import available_mixes
from vmxsim_server.vmx.profiles import available_profiles

DETAIL_TYPES = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.ResourceInfo,
    error_details_pb2.QuotaFailure,
)


def details(error: grpc.RpcError) -> tuple[status_pb2.Status, dict[str, object]]:
    """The rich status of a failed call and its details by message type name."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"{error} carries no google.rpc.Status"
    unpacked: dict[str, object] = {}
    for any_detail in status.details:
        for kind in DETAIL_TYPES:
            if any_detail.Is(kind.DESCRIPTOR):
                message = kind()
                any_detail.Unpack(message)
                unpacked[kind.DESCRIPTOR.name] = message
    return status, unpacked


# --- error details --------------------------------------------------------------------------


def test_not_found_carries_resource_info_and_a_stable_reason(
    stub: pb_grpc.VcpuServiceStub,
) -> None:
    error = rpc_error(stub.GetVcpu, pb.GetVcpuRequest(vcpu_id="vcpu-424242"))
    status, found = details(error)
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert status.message == error.details()  # type: ignore[attr-defined]
    info = found["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("VCPU_NOT_FOUND", "vmxsim.v1")
    resource = found["ResourceInfo"]
    assert isinstance(resource, error_details_pb2.ResourceInfo)
    assert (resource.resource_type, resource.resource_name) == ("vcpu", "vcpu-424242")
    _, vm = details(rpc_error(stub.DeleteVm, pb.DeleteVmRequest(vm_id="vm-424242")))
    assert vm["ErrorInfo"].reason == "VM_NOT_FOUND"  # type: ignore[attr-defined]


def test_invalid_argument_names_the_field(stub: pb_grpc.VcpuServiceStub) -> None:
    error = rpc_error(stub.CreateVcpu, pb.CreateVcpuRequest(profile="kvmm"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    _, found = details(error)
    request = found["BadRequest"]
    assert isinstance(request, error_details_pb2.BadRequest)
    (violation,) = request.field_violations
    assert violation.field == "profile" and "kvmm" in violation.description
    assert found["ErrorInfo"].reason == "INVALID_ARGUMENT"  # type: ignore[attr-defined]


def test_every_error_has_error_info_even_without_a_field(stub: pb_grpc.VcpuServiceStub) -> None:
    vcpu = stub.CreateVcpu(pb.CreateVcpuRequest(profile="kvm")).vcpu
    try:
        bad = pb.Instruction(line=1, vmread=pb.Vmread(field=pb.FieldRef(name="NO_SUCH_FIELD")))
        error = rpc_error(stub.Execute, pb.ExecuteRequest(vcpu_id=vcpu.vcpu_id, instructions=[bad]))
        _, found = details(error)
        assert found["ErrorInfo"].reason == "UNKNOWN_FIELD"  # type: ignore[attr-defined]
        assert "BadRequest" not in found
    finally:
        stub.DeleteVm(pb.DeleteVmRequest(vm_id=vcpu.vm_id))


def test_resource_exhausted_carries_a_quota_failure() -> None:
    with serving(max_vcpus=1) as (_, stub):
        stub.CreateVcpu(pb.CreateVcpuRequest(profile="kvm"))
        error = rpc_error(stub.CreateVcpu, pb.CreateVcpuRequest(profile="kvm"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    _, found = details(error)
    quota = found["QuotaFailure"]
    assert isinstance(quota, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject in ("max_vcpus", "max_vms")
    info = found["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    subject = quota.violations[0].subject
    assert info.reason == f"{subject.upper()}_EXCEEDED"
    assert dict(info.metadata) == {"quota": subject, "limit": "1"}


# --- discovery ------------------------------------------------------------------------------


def test_discovery_lists_the_names_a_client_may_pass(stub: pb_grpc.VcpuServiceStub) -> None:
    profiles = stub.ListProfiles(pb.ListProfilesRequest()).profiles
    assert [p.name for p in profiles] == available_profiles()
    kvm = next(p for p in profiles if p.name == "kvm")
    assert kvm.title and any(s.startswith("torvalds/linux@") for s in kvm.sources)
    mixes = stub.ListMixes(pb.ListMixesRequest()).mixes
    assert [m.name for m in mixes] == available_mixes()
    for mix in mixes:
        assert sum(mix.weights.values()) == pytest.approx(1.0)
    boot = next(m for m in mixes if m.name == "linux-boot")
    assert "CPUID" in boot.weights or "EPT_VIOLATION" in boot.weights
    # every listed profile is accepted by CreateVcpu
    for profile in profiles:
        made = stub.CreateVcpu(pb.CreateVcpuRequest(profile=profile.name)).vcpu
        stub.DeleteVm(pb.DeleteVmRequest(vm_id=made.vm_id))


def test_l0_models_are_listed(stub: pb_grpc.VcpuServiceStub) -> None:
    listed = stub.ListL0Models(pb.ListL0ModelsRequest()).l0_models
    assert [m.name for m in listed] == available_l0_models() and "kvm-4.17" in available_l0_models()
    assert all(m.title for m in listed)
    # every listed model is accepted by CreateVcpu
    for model in listed:
        made = stub.CreateVcpu(
            pb.CreateVcpuRequest(profile="kvm", mode=pb.LATENCY_MODE_NESTED, l0=model.name)
        ).vcpu
        assert made.l0 == model.name
        stub.DeleteVm(pb.DeleteVmRequest(vm_id=made.vm_id))


# --- page tokens ----------------------------------------------------------------------------


def _all_pages(stub: pb_grpc.VcpuServiceStub, size: int, vm_id: str = "") -> list[list[str]]:
    pages, token = [], ""
    while True:
        answer = stub.ListVcpus(pb.ListVcpusRequest(vm_id=vm_id, page_size=size, page_token=token))
        pages.append([v.vcpu_id for v in answer.vcpus])
        token = answer.next_page_token
        if not token:
            return pages


def test_pages_cover_the_list_once_in_order() -> None:
    with serving() as (_, stub):
        vm = stub.CreateVm(pb.CreateVmRequest()).vm
        made = [
            stub.CreateVcpu(pb.CreateVcpuRequest(vm_id=vm.vm_id, profile="kvm")).vcpu.vcpu_id
            for _ in range(11)
        ]
        stub.CreateVcpu(pb.CreateVcpuRequest(profile="kvm"))  # another VM's
        pages = _all_pages(stub, 4, vm.vm_id)
        assert [len(p) for p in pages] == [4, 4, 3]
        assert [v for page in pages for v in page] == made  # vcpu-10 after vcpu-9
        assert _all_pages(stub, 0, vm.vm_id) == [made]  # 0 = everything, as before paging
        # a vCPU deleted between two pages neither repeats nor shifts the next page
        first = stub.ListVcpus(pb.ListVcpusRequest(vm_id=vm.vm_id, page_size=4))
        stub.DeleteVcpu(pb.DeleteVcpuRequest(vcpu_id=made[2]))
        second = stub.ListVcpus(
            pb.ListVcpusRequest(vm_id=vm.vm_id, page_size=4, page_token=first.next_page_token)
        )
        assert [v.vcpu_id for v in second.vcpus] == made[4:8]
        vms = stub.ListVms(pb.ListVmsRequest(page_size=1))
        assert len(vms.vms) == 1 and vms.next_page_token
        rest = stub.ListVms(pb.ListVmsRequest(page_size=1, page_token=vms.next_page_token))
        assert rest.vms[0].vm_id != vms.vms[0].vm_id


def test_bad_page_requests_are_invalid_argument(stub: pb_grpc.VcpuServiceStub) -> None:
    vms = stub.CreateVm(pb.CreateVmRequest()).vm, stub.CreateVm(pb.CreateVmRequest()).vm
    try:
        token = stub.ListVms(pb.ListVmsRequest(page_size=1)).next_page_token
        cases = [
            (stub.ListVcpus, pb.ListVcpusRequest(page_token="not-a-token"), "page_token"),
            # a token of another RPC, or of the same RPC with another filter
            (stub.ListVcpus, pb.ListVcpusRequest(page_token=token), "page_token"),
            (stub.ListProfiles, pb.ListProfilesRequest(page_token=token), "page_token"),
            (stub.ListVms, pb.ListVmsRequest(page_size=-1), "page_size"),
        ]
        for call, request, field in cases:
            error = rpc_error(call, request)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, request  # type: ignore[attr-defined]
            _, found = details(error)
            assert found["BadRequest"].field_violations[0].field == field  # type: ignore[attr-defined]
    finally:
        for vm in vms:
            stub.DeleteVm(pb.DeleteVmRequest(vm_id=vm.vm_id))


def test_page_size_is_capped(stub: pb_grpc.VcpuServiceStub) -> None:
    profiles = stub.ListProfiles(pb.ListProfilesRequest(page_size=MAX_PAGE_SIZE * 10))
    assert len(profiles.profiles) == len(available_profiles()) and not profiles.next_page_token
    first = stub.ListProfiles(pb.ListProfilesRequest(page_size=1))
    second = stub.ListProfiles(
        pb.ListProfilesRequest(page_size=1, page_token=first.next_page_token)
    )
    assert [p.name for p in (*first.profiles, *second.profiles)] == available_profiles()[:2]


# --- the client: error details and retries ---------------------------------------------------


def test_the_client_exposes_the_error_details(service_server: BackgroundServer) -> None:
    with Client(service_server.address, timeout=5) as client:
        with pytest.raises(NotFoundError) as missing:
            client.get_vcpu("vcpu-515151")
        with pytest.raises(InvalidArgumentError) as invalid:
            client.create_vm(maxphyaddr=99)  # the server's check (profiles the client checks)
    assert missing.value.reason == "VCPU_NOT_FOUND" and missing.value.domain == "vmxsim.v1"
    assert missing.value.resource == ("vcpu", "vcpu-515151")
    assert invalid.value.reason == "INVALID_ARGUMENT"
    assert [field for field, _ in invalid.value.field_violations] == ["maxphyaddr"]
    with serving(max_vcpus=1) as (server, _), Client(server.address, timeout=5) as client:
        client.create_vcpu()
        with pytest.raises(ResourceExhaustedError) as full:
            client.create_vcpu()
    assert full.value.quota_violations[0][0] in ("max_vcpus", "max_vms")
    assert full.value.metadata["limit"] == "1"


class FlakyProxy:
    """A real gRPC server on loopback in front of a real vmxsim server: every unary call is
    forwarded, except that the first ``failures`` calls of each method answer UNAVAILABLE."""

    def __init__(self, backend: str, failures: int) -> None:
        self.failures = failures
        self.calls: Counter[str] = Counter()
        self._backend = grpc.insecure_channel(backend)
        self._server = grpc.server(futures.ThreadPoolExecutor(4))
        self._server.add_generic_rpc_handlers((self,))  # type: ignore[arg-type]
        self.address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        method: str = details.method

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.calls[method.rsplit("/", 1)[1]] += 1
            if self.calls[method.rsplit("/", 1)[1]] <= self.failures:
                context.abort(grpc.StatusCode.UNAVAILABLE, "flaky: try again")
            answer: bytes = self._backend.unary_unary(method)(request, timeout=5)
            return answer

        return grpc.unary_unary_rpc_method_handler(forward)

    def close(self) -> None:
        self._server.stop(0)
        self._backend.close()


def test_idempotent_calls_are_retried_on_unavailable(service_server: BackgroundServer) -> None:
    assert set(IDEMPOTENT_METHODS) == {
        "ListVms", "ListVcpus", "GetVcpu", "GetStats", "Snapshot",
        "ListProfiles", "ListMixes", "ListL0Models",
    }  # fmt: skip
    with Client(service_server.address, timeout=5) as direct:
        vcpu = direct.create_vcpu(profile="kvm")
    proxy = FlakyProxy(service_server.address, failures=2)
    try:
        with Client(proxy.address, timeout=10) as client:
            assert client.get_vcpu(vcpu.id).vcpu_id == vcpu.id  # the third attempt answers
            assert proxy.calls["GetVcpu"] == 3
            # a call that changes state is not retried: it could run twice
            with pytest.raises(UnavailableError, match="flaky"):
                client.create_vcpu(profile="kvm")
            assert proxy.calls["CreateVcpu"] == 1
    finally:
        proxy.close()
    # more failures than attempts: the caller sees UNAVAILABLE after 4 tries
    proxy = FlakyProxy(service_server.address, failures=10)
    try:
        with Client(proxy.address, timeout=10) as client, pytest.raises(UnavailableError):
            client.get_vcpu(vcpu.id)
        assert (
            proxy.calls["GetVcpu"]
            == SERVICE_CONFIG["methodConfig"][0]["retryPolicy"]["maxAttempts"]
        )
    finally:
        proxy.close()
