"""Fuzzing every RPC of a real server with random, mutated and randomly filled messages.

Raw channel calls (bytes in, bytes out) reach the server's own parsing. Whatever arrives, the
server answers with OK or a status that says what was wrong: never UNKNOWN or INTERNAL, never
a traceback, and it keeps answering health checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest_service import cpuid_batch, ins, named, root_setup
from google.protobuf import descriptor as d
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim_server.app import BackgroundServer, channel_options, start_background
from vmxsim_server.config import ServerConfig

SERVICE = pb.DESCRIPTOR.services_by_name["VcpuService"]
METHODS = {m.name: m for m in SERVICE.methods}
STREAMS = {name for name, m in METHODS.items() if m.client_streaming}
BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
IDS = ["", "vcpu-1", "vm-1", "vcpu-999", "../etc"]
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _valid_requests() -> dict[str, list[Message]]:
    """A few well-formed requests per method, to mutate."""
    batch = cpuid_batch(3, 1)
    return {
        "CreateVm": [pb.CreateVmRequest(maxphyaddr=40)],
        "ListVms": [pb.ListVmsRequest()],
        "DeleteVm": [pb.DeleteVmRequest(vm_id="vm-999")],
        "CreateVcpu": [pb.CreateVcpuRequest(profile="haxm-cache", mode=pb.LATENCY_MODE_NESTED)],
        "ListVcpus": [pb.ListVcpusRequest(vm_id="vm-1")],
        "GetVcpu": [pb.GetVcpuRequest(vcpu_id="vcpu-1")],
        "DeleteVcpu": [pb.DeleteVcpuRequest(vcpu_id="vcpu-999")],
        "Execute": [
            pb.ExecuteRequest(vcpu_id="vcpu-1", instructions=root_setup()),
            pb.ExecuteRequest(
                vcpu_id="vcpu-1",
                instructions=[ins("vmwrite", field=named("GUEST_RIP"), value=7), ins("vmlaunch")],
            ),
        ],
        "Drive": [pb.DriveRequest(vcpu_id="vcpu-1", batch=batch)],
        "Replay": [
            pb.ReplayRequest(start=pb.ReplayStart(profile="kvm")),
            pb.ReplayRequest(batch=batch),
            pb.ReplayRequest(end=pb.ReplayEnd()),
        ],
        "GetStats": [pb.GetStatsRequest(vcpu_id="vcpu-1")],
        "Snapshot": [pb.SnapshotRequest(vcpu_id="vcpu-1")],
        "Restore": [pb.RestoreRequest(data=b"VMXSNAP\x00\x01\x00\x00\x00\x00")],
        "Diagnose": [  # issue 12 (engineer "diagnose")
            pb.DiagnoseRequest(
                dump=b"*** Guest State ***\nCR0: actual=0x31, shadow=0x31, gh_mask=0\n"
            ),
            pb.DiagnoseRequest(
                values={"GUEST_RIP": 1}, capability_msrs={"IA32_VMX_BASIC": 1 << 55}
            ),
        ],
        "ValidState": [pb.ValidStateRequest(vcpu_id="vcpu-1", overrides={"GUEST_RIP": 7})],
        # Discovery (page tokens are fuzzed through every List request's page_token)
        "ListProfiles": [pb.ListProfilesRequest(page_size=1, page_token="e30")],
        "ListMixes": [pb.ListMixesRequest(page_size=2)],
        "ListL0Models": [pb.ListL0ModelsRequest()],
    }


VALID = _valid_requests()
assert set(VALID) == set(METHODS), "every RPC needs sample requests"

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    d.FieldDescriptor.TYPE_BOOL: st.booleans(),
    d.FieldDescriptor.TYPE_STRING: st.one_of(st.sampled_from(IDS), st.text(max_size=12)),
    d.FieldDescriptor.TYPE_BYTES: st.binary(max_size=40),
    d.FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True),
    d.FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),  # page_size
    d.FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: st.one_of(st.integers(0, 2**16), st.integers(0, 2**64 - 1)),
    d.FieldDescriptor.TYPE_ENUM: st.integers(0, 5),
}


@st.composite
def _message(draw: st.DrawFn, descriptor: d.Descriptor, depth: int = 0) -> Message:
    """A message of ``descriptor`` with random values in a random subset of its fields."""
    message = pb.__dict__[descriptor.name]() if descriptor.file is pb.DESCRIPTOR else None
    if message is None:  # a map entry: never built directly
        raise AssertionError(descriptor.full_name)
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                key = draw(st.text(max_size=6))
                value = field.message_type.fields_by_name["value"]
                if value.message_type is None:
                    getattr(message, field.name)[key] = draw(_SCALARS[value.type])
                continue
            if depth >= 3:
                continue
            if field.is_repeated:
                for _ in range(draw(st.integers(0, 3))):
                    getattr(message, field.name).add().CopyFrom(
                        draw(_message(field.message_type, depth + 1))
                    )
            else:
                getattr(message, field.name).CopyFrom(draw(_message(field.message_type, depth + 1)))
        elif field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(_SCALARS[field.type], max_size=6)))
        else:
            setattr(message, field.name, draw(_SCALARS[field.type]))
    return message


@st.composite
def _flipped(draw: st.DrawFn, method: str) -> bytes:
    """A valid request's bytes with a few bits flipped (or cut short)."""
    data = bytearray(draw(st.sampled_from(VALID[method])).SerializeToString())
    if not data:
        return draw(st.binary(min_size=1, max_size=8))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) * 8 - 1))
        data[position // 8] ^= 1 << position % 8
    return bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)


def _payloads(method: str) -> st.SearchStrategy[bytes]:
    request_type = METHODS[method].input_type
    return st.one_of(
        st.binary(max_size=64),
        _flipped(method),
        _message(request_type).map(lambda m: m.SerializeToString()),
    )


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[tuple[BackgroundServer, grpc.Channel]]:
    config = ServerConfig(
        listen="127.0.0.1:0", metrics_listen=None, grace_seconds=0.5, max_vcpus=300
    )
    with (
        start_background(config) as server,
        grpc.insecure_channel(server.address, options=channel_options()) as channel,
    ):
        call = channel.unary_unary("/vmxsim.v1.VcpuService/CreateVcpu")
        call(pb.CreateVcpuRequest().SerializeToString(), timeout=5)  # vcpu-1 in vm-1
        yield server, channel


def _check(call: Any, payload: Any) -> None:
    try:
        result = call(payload, timeout=10)
        if hasattr(result, "__next__"):
            list(result)
    except grpc.RpcError as error:
        assert error.code() not in BAD, (error.code(), error.details())
        assert "Traceback" not in (error.details() or "")


def _healthy(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service=SERVICE.full_name), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", sorted(set(METHODS) - STREAMS))
def test_unary_rpcs_survive_random_and_mutated_requests(
    fuzz_server: tuple[BackgroundServer, grpc.Channel], method: str
) -> None:
    _, channel = fuzz_server
    call = channel.unary_unary(f"/{SERVICE.full_name}/{method}")

    @FUZZ
    @given(payload=_payloads(method))
    def run(payload: bytes) -> None:
        _check(call, payload)

    run()
    _healthy(channel)


@pytest.mark.parametrize("method", sorted(STREAMS))
def test_streams_survive_random_and_mutated_messages(
    fuzz_server: tuple[BackgroundServer, grpc.Channel], method: str
) -> None:
    _, channel = fuzz_server
    call = channel.stream_stream(f"/{SERVICE.full_name}/{method}")
    valid = [m.SerializeToString() for m in VALID[method]]

    @FUZZ
    @given(messages=st.lists(st.one_of(_payloads(method), st.sampled_from(valid)), max_size=4))
    def run(messages: list[bytes]) -> None:
        _check(call, iter(messages))

    run()
    _healthy(channel)
