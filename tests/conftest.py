"""Shared fixtures: vCPUs in VMX root operation with a current VMCS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vmxsim_server.vmx import Capabilities, Vcpu
from vmxsim_server.vmx.entry_checks import valid_state
from vmxsim_server.vmx.fields import BY_NAME

VMXON_REGION = 0x1000
VMCS_REGION = 0x2000


def make_root_vcpu(capabilities: Capabilities | None = None) -> Vcpu:
    """A vCPU after VMXON with the VMCS at VMCS_REGION current (clear)."""
    vcpu = Vcpu(capabilities=capabilities or Capabilities())
    rev = vcpu.capabilities.revision_id
    vcpu.memory.write32(VMXON_REGION, rev)
    vcpu.memory.write32(VMCS_REGION, rev)
    assert vcpu.vmxon(VMXON_REGION).ok
    assert vcpu.vmclear(VMCS_REGION).ok
    assert vcpu.vmptrld(VMCS_REGION).ok
    return vcpu


def load_valid_state(vcpu: Vcpu) -> None:
    """Write a VMCS set-up with which VM entry succeeds."""
    for name, value in valid_state(vcpu.capabilities).items():
        assert vcpu.vmwrite(BY_NAME[name].encoding, value).ok, name


@pytest.fixture
def root_vcpu() -> Vcpu:
    return make_root_vcpu()


@pytest.fixture
def ready_vcpu() -> Vcpu:
    vcpu = make_root_vcpu()
    load_valid_state(vcpu)
    return vcpu


@pytest.fixture(scope="session")
def vmxsim_address() -> Iterator[str]:
    """A real vmxsim server on a free loopback port, shared by the session's remote tests."""
    from vmxsim_server.app import start_background
    from vmxsim_server.config import ServerConfig

    with start_background(ServerConfig(listen="127.0.0.1:0", metrics_listen=None)) as server:
        yield server.address


# --- gRPC service fixtures (tests/test_service_*.py); defined in conftest_service.py ---------
from conftest_service import service_channel, service_server, stub, vcpu_id  # noqa: E402, F401
