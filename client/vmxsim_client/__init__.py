"""vmxsim's client side: the typed gRPC client (sync ``Client``, asyncio ``AsyncClient``), the
``vmxsim`` CLI (``cli``), trace readers (``traces``), reports (``reports``) and load (``load``).

    from vmxsim_client import Client

    with Client("127.0.0.1:50051") as client:
        vcpu = client.create_vcpu(profile="kvm", mode="nested")
        vcpu.enter_vmx()
        vcpu.write_valid_state()
        assert vcpu.vmlaunch().result == "VMsucceed"

Failed RPCs raise the ``VmxsimRpcError`` family (rpc_errors.py); architectural outcomes are
``InstructionResult`` values; the harness helpers raise ``VmxSetupError``. docs/client.md is
the guide.

Names are imported on first use (PEP 562 ``__getattr__``): ``import vmxsim_client`` and the CLI's
start-up do not import grpc (issue 15.4, cli/entry.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .aio import AsyncClient, AsyncRemoteVcpu
    from .calls import VmxSetupError
    from .client import Client, RemoteVcpu
    from .instructions import Instruction, InstructionResult
    from .names import Mode, Profile
    from .rpc_errors import (
        AbortedError,
        DeadlineExceededError,
        FailedPreconditionError,
        InvalidArgumentError,
        NotFoundError,
        PermissionDeniedError,
        ResourceExhaustedError,
        UnauthenticatedError,
        UnavailableError,
        VmxsimRpcError,
    )
    from .summaries import (
        BatchReport,
        DriveSummary,
        ReplayProgress,
        RunSummary,
    )
    from .wire import L0ModelInfo, MixInfo, ProfileInfo, VcpuInfo, VmInfo

__all__ = [
    "AbortedError",
    "AsyncClient",
    "AsyncRemoteVcpu",
    "BatchReport",
    "Client",
    "DeadlineExceededError",
    "DriveSummary",
    "FailedPreconditionError",
    "Instruction",
    "InstructionResult",
    "InvalidArgumentError",
    "L0ModelInfo",
    "MixInfo",
    "Mode",
    "NotFoundError",
    "PermissionDeniedError",
    "Profile",
    "ProfileInfo",
    "RemoteVcpu",
    "ReplayProgress",
    "ResourceExhaustedError",
    "RunSummary",
    "UnauthenticatedError",
    "UnavailableError",
    "VcpuInfo",
    "VmInfo",
    "VmxSetupError",
    "VmxsimRpcError",
]

_HOMES = {
    # each public name -> its module, as the imports above for type checkers say
    "AsyncClient": "aio", "AsyncRemoteVcpu": "aio", "VmxSetupError": "calls",
    "Client": "client", "RemoteVcpu": "client", "Instruction": "instructions",
    "InstructionResult": "instructions", "Mode": "names", "Profile": "names",
    "BatchReport": "summaries", "DriveSummary": "summaries", "ReplayProgress": "summaries",
    "RunSummary": "summaries", "VcpuInfo": "wire", "VmInfo": "wire", "ProfileInfo": "wire",
    "MixInfo": "wire", "L0ModelInfo": "wire",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name, "rpc_errors" if name in __all__ else None)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
