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
"""

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
from .wire import VcpuInfo, VmInfo

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
    "Mode",
    "NotFoundError",
    "PermissionDeniedError",
    "Profile",
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
