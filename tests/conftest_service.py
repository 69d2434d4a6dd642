"""Fixtures and helpers for the gRPC service tests: a real server on an ephemeral loopback port,
talked to through the generated stubs (never through the servicer object).

The fixtures are registered by ``tests/conftest.py``; test modules import the helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_server.app import BackgroundServer, channel_options, start_background
from vmxsim_server.config import ServerConfig
from vmxsim_server.vmx.capabilities import Capabilities
from vmxsim_server.vmx.entry_checks import valid_state
from vmxsim_server.vmx.mixes import load_mix, synthesize
from vmxsim_server.vmx.records import ExitBatch

VMXON_REGION = 0x1000
VMCS_REGION = 0x2000
TEST_CONFIG = ServerConfig(listen="127.0.0.1:0", metrics_listen=None, grace_seconds=1.0)


@contextmanager
def serving(**changes: Any) -> Iterator[tuple[BackgroundServer, pb_grpc.VcpuServiceStub]]:
    """A fresh server with some settings changed, and a stub connected to it."""
    config = TEST_CONFIG.with_changes(**changes)
    with (
        start_background(config) as server,
        grpc.insecure_channel(server.address, options=channel_options()) as channel,
    ):
        yield server, pb_grpc.VcpuServiceStub(channel)


def rpc_error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.RpcError:
    """The RpcError a call raises (the call is consumed fully when it returns a stream)."""
    with pytest.raises(grpc.RpcError) as raised:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):  # a response stream
            list(result)
    return raised.value


def ins(op: str, line: int = 0, **operands: Any) -> pb.Instruction:
    """``ins("vmwrite", field=pb.FieldRef(name="GUEST_RIP"), value=1)`` -> an Instruction."""
    message_type = pb.Instruction.DESCRIPTOR.fields_by_name[op].message_type.name
    return pb.Instruction(line=line, **{op: getattr(pb, message_type)(**operands)})


def named(name: str) -> pb.FieldRef:
    """A field reference by name."""
    return pb.FieldRef(name=name)


def root_setup() -> list[pb.Instruction]:
    """VMXON and a clear, current VMCS (the CR0/CR4/feature-control defaults allow VMXON)."""
    return [
        ins("revid", address=VMXON_REGION),
        ins("vmxon", address=VMXON_REGION),
        ins("revid", address=VMCS_REGION),
        ins("vmclear", address=VMCS_REGION),
        ins("vmptrld", address=VMCS_REGION),
    ]


def valid_writes() -> list[pb.Instruction]:
    """VMWRITEs of a VMCS with which VM entry succeeds."""
    return [
        ins("vmwrite", field=named(name), value=value)
        for name, value in valid_state(Capabilities()).items()
    ]


def synthetic_batches(exits: int, size: int, mix: str = "linux-boot") -> list[ExitBatch]:
    """A reproducible exit sequence of a named mix, cut into core batches numbered from 1."""
    records = list(synthesize(load_mix(mix), exits, seed=7))
    return [
        ExitBatch.from_records(records[i : i + size], sequence=i // size + 1)
        for i in range(0, exits, size)
    ]


def wire_batch(batch: ExitBatch) -> pb.ExitBatch:
    """A core batch as packed wire columns (timestamps left out)."""
    columns = ("reason", "rip", "qualification", "info2", "intr_info", "error_code",
               "guest_physical_address", "instruction_len")  # fmt: skip
    return pb.ExitBatch(sequence=batch.sequence, **{name: getattr(batch, name) for name in columns})


def cpuid_batch(n: int, sequence: int = 0) -> pb.ExitBatch:
    """``n`` CPUID exits."""
    return pb.ExitBatch(sequence=sequence, reason=[10] * n, instruction_len=[2] * n)


def drive_requests(vcpu_id: str, batches: Iterable[pb.ExitBatch]) -> Iterator[pb.DriveRequest]:
    """A Drive stream: the vCPU, then one request per batch."""
    yield pb.DriveRequest(vcpu_id=vcpu_id)
    for batch in batches:
        yield pb.DriveRequest(batch=batch)


@pytest.fixture(scope="session")
def service_server() -> Iterator[BackgroundServer]:
    with start_background(TEST_CONFIG) as server:
        yield server


@pytest.fixture(scope="session")
def service_channel(service_server: BackgroundServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(service_server.address, options=channel_options()) as channel:
        yield channel


@pytest.fixture
def stub(service_channel: grpc.Channel) -> pb_grpc.VcpuServiceStub:
    return pb_grpc.VcpuServiceStub(service_channel)


@pytest.fixture
def vcpu_id(stub: pb_grpc.VcpuServiceStub) -> Iterator[str]:
    """A fresh kvm/native vCPU in its own VM, deleted with its VM afterwards."""
    vcpu = stub.CreateVcpu(pb.CreateVcpuRequest(profile="kvm")).vcpu
    yield vcpu.vcpu_id
    stub.DeleteVm(pb.DeleteVmRequest(vm_id=vcpu.vm_id))
