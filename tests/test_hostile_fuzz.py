"""Property: no well-formed request of any RPC is answered INTERNAL or UNKNOWN.

Requests are drawn by hypothesis from the proto's message descriptors, generically: every field
of every message type, nested messages to ``MAX_DEPTH``, at most one member of each oneof,
repeated fields of 0-3 elements, and scalar values at the edges of their types (``EDGES``).
Streams get 1-3 such messages. The server is real (loopback, a state directory), holds
``vcpu-1`` in ``vm-1`` so that ids in requests find something, and answers health SERVING
afterwards. docs/reliability.md describes exactly these strategies (``fuzz_markdown``; a test
keeps the page equal to it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim_server.app import BackgroundServer, start_background
from vmxsim_server.config import ServerConfig
from vmxsim_server.vmx import snapshot as snapshots
from vmxsim_server.vmx.vcpu import Vcpu

SERVICE = pb.DESCRIPTOR.services_by_name["VcpuService"]
BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
MAX_DEPTH = 3
REPEATED = (0, 3)
STREAM_MESSAGES = (1, 3)
F = d.FieldDescriptor
_INTS = {
    F.TYPE_UINT32: (0, (1 << 32) - 1),
    F.TYPE_FIXED32: (0, (1 << 32) - 1),
    F.TYPE_UINT64: (0, (1 << 64) - 1),
    F.TYPE_FIXED64: (0, (1 << 64) - 1),
    F.TYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    F.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    F.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1),
    F.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    F.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1),
    F.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
}
EDGES: dict[str, list[Any]] = {
    "integers": [0, 1, "the type's minimum and maximum (e.g. 2**32-1, 2**64-1, -2**63)",
                 "any integer of the type's range"],
    "booleans": [False, True],
    "floating point": [0.0, -1.0, 1e308, math.inf, -math.inf, math.nan],
    "strings": ["", "vcpu-1", "vm-1", "kvm", "vcpu-999", "\u2603", "x" * 10_000],
    "bytes": [b"", b"VMXSNAP", b"\xff" * 1_000, "a real snapshot of a vCPU"],
    "enums": ["every value of the enum", 99, -1],
}  # fmt: skip
"""What each kind of scalar is drawn from: values at the edges of its type."""
_SNAPSHOT = snapshots.dump(Vcpu(), "kvm", "native")


def _scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _INTS:
        low, high = _INTS[field.type]
        return st.sampled_from([0, 1, low, high]) | st.integers(low, high)
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.sampled_from(EDGES["floating point"])
    if field.type == F.TYPE_STRING:
        return st.sampled_from(EDGES["strings"])
    if field.type == F.TYPE_BYTES:
        return st.sampled_from([b"", b"VMXSNAP", b"\xff" * 1_000, _SNAPSHOT])
    if field.type == F.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99, -1])
    raise AssertionError(f"no strategy for {field.full_name}")


def _value(field: d.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    return _scalar(field)


def _is_map(field: d.FieldDescriptor) -> bool:
    return field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


@st.composite
def _message(draw: st.DrawFn, descriptor: d.Descriptor, depth: int) -> Message:
    message: Any = message_factory.GetMessageClass(descriptor)()
    chosen = {
        oneof.name: draw(st.sampled_from([None, *oneof.fields])) for oneof in descriptor.oneofs
    }
    for field in descriptor.fields:
        group = field.containing_oneof
        if group is not None and not group.name.startswith("_"):
            if chosen[group.name] is not field:
                continue
        elif not draw(st.booleans()):
            continue
        if depth >= MAX_DEPTH and field.type == F.TYPE_MESSAGE:
            continue
        if _is_map(field):
            entry = field.message_type
            keys = _scalar(entry.fields_by_name["key"])
            values = _value(entry.fields_by_name["value"], depth)
            mapping = draw(st.dictionaries(keys, values, max_size=REPEATED[1]))
            target = getattr(message, field.name)
            for key, value in mapping.items():
                if isinstance(value, Message):
                    target[key].CopyFrom(value)
                else:
                    target[key] = value
        elif field.is_repeated:
            items = draw(st.lists(_value(field, depth), min_size=REPEATED[0], max_size=REPEATED[1]))
            target = getattr(message, field.name)
            if field.type == F.TYPE_MESSAGE:
                for item in items:
                    target.add().CopyFrom(item)
            else:
                target.extend(items)
        elif field.type == F.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(draw(_value(field, depth)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


def messages(descriptor: d.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of ``descriptor``'s type, drawn as the module docstring says."""
    return _message(descriptor, depth)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    config = ServerConfig(
        listen="127.0.0.1:0", metrics_listen=None, grace_seconds=0.2,
        state_dir=str(tmp_path_factory.mktemp("fuzz-state")),
    )  # fmt: skip
    with start_background(config) as server, grpc.insecure_channel(server.address) as channel:
        create = channel.unary_unary(
            f"/{SERVICE.full_name}/CreateVcpu",
            request_serializer=pb.CreateVcpuRequest.SerializeToString,
            response_deserializer=pb.CreateVcpuResponse.FromString,
        )
        assert create(pb.CreateVcpuRequest(), timeout=10).vcpu.vcpu_id == "vcpu-1"
        yield server


def _call(channel: grpc.Channel, method: d.MethodDescriptor, requests: list[Message]) -> None:
    path = f"/{SERVICE.full_name}/{method.name}"
    serialize = type(requests[0]).SerializeToString
    try:
        if method.client_streaming:
            call = channel.stream_stream(path, request_serializer=serialize)
            list(call(iter(requests), timeout=20))
        else:
            channel.unary_unary(path, request_serializer=serialize)(requests[0], timeout=20)
    except grpc.RpcError as exc:
        assert exc.code() not in BAD, f"{method.name}: {exc.code().name}: {exc.details()}"
        assert "Traceback" not in (exc.details() or "")


FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
def test_no_well_formed_request_is_answered_internal_or_unknown(
    fuzzed_server: BackgroundServer, method: d.MethodDescriptor
) -> None:
    count = STREAM_MESSAGES if method.client_streaming else (1, 1)
    strategy = st.lists(messages(method.input_type), min_size=count[0], max_size=count[1])

    @FUZZ
    @given(requests=strategy)
    def check(requests: list[Message]) -> None:
        with grpc.insecure_channel(fuzzed_server.address) as channel:
            _call(channel, method, requests)

    check()
    with grpc.insecure_channel(fuzzed_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def fuzz_markdown() -> str:
    """The "What fuzzing covers" list of docs/reliability.md."""
    lines = [
        f"- every RPC of `{SERVICE.full_name}` ({len(SERVICE.methods)}), {FUZZ.max_examples}"
        " examples each (derandomized); streams get"
        f" {STREAM_MESSAGES[0]}-{STREAM_MESSAGES[1]} messages",
        f"- every field of every request message, nested messages to depth {MAX_DEPTH}, at"
        f" most one member of each oneof, repeated and map fields of"
        f" {REPEATED[0]}-{REPEATED[1]} elements",
    ]
    for kind, values in EDGES.items():
        shown = ", ".join(v if isinstance(v, str) and " " in v else _shown(v) for v in values)
        lines.append(f"- {kind}: {shown}")
    return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    if isinstance(value, str) and len(value) > 20:
        return f"`{value[:1]!r} * {len(value):,}`"
    if isinstance(value, bytes) and len(value) > 20:
        return f"`{value[:1]!r} * {len(value):,}`"
    return f"`{value!r}`"


def test_the_page_describes_exactly_these_strategies() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text()
    assert fuzz_markdown() in page
