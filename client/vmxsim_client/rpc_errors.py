"""Typed exceptions for the gRPC status codes the vmxsim service answers with.

Hierarchy (one class per status code the service documents; anything else is the base)::

    VmxsimRpcError                  any failed RPC; .code (grpc.StatusCode), .details (server text)
    ├── InvalidArgumentError        INVALID_ARGUMENT: a malformed request (unknown field name, ...)
    ├── NotFoundError               NOT_FOUND: an unknown VM or vCPU id
    ├── FailedPreconditionError     FAILED_PRECONDITION: wrong service state (a busy vCPU, ...)
    ├── ResourceExhaustedError      RESOURCE_EXHAUSTED: a quota or a message-size limit
    ├── DeadlineExceededError       DEADLINE_EXCEEDED: the call's timeout passed
    ├── AbortedError                ABORTED: a conflict that retrying later may cure
    ├── UnavailableError            UNAVAILABLE: no server, or it is shutting down (retry later)
    ├── UnauthenticatedError        UNAUTHENTICATED
    └── PermissionDeniedError       PERMISSION_DENIED

Architectural outcomes (VMfailInvalid, VMfailValid(n), faults, failed entries) are never
exceptions: they are values (``InstructionResult``), as the SDM defines them.
"""

from __future__ import annotations

import grpc
import grpc.aio

__all__ = [
    "AbortedError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "VmxsimRpcError",
    "from_rpc_error",
]


class VmxsimRpcError(Exception):
    """A vmxsim RPC failed; ``str()`` is ``"CODE_NAME: the server's message"``."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, code: grpc.StatusCode | None = None) -> None:
        if code is not None:
            self.code = code
        self.details = details
        super().__init__(f"{self.code.name}: {details}")


class InvalidArgumentError(VmxsimRpcError):
    """INVALID_ARGUMENT: the request is malformed whatever the server's state."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(VmxsimRpcError):
    """NOT_FOUND: the VM or vCPU id is unknown."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(VmxsimRpcError):
    """FAILED_PRECONDITION: fix the state first (e.g. another stream drives the vCPU)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(VmxsimRpcError):
    """RESOURCE_EXHAUSTED: a vCPU or stream quota, or a message-size limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(VmxsimRpcError):
    """DEADLINE_EXCEEDED: the call did not finish within its timeout."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class AbortedError(VmxsimRpcError):
    """ABORTED: e.g. a replay resumed while its old stream is still open; retry shortly."""

    code = grpc.StatusCode.ABORTED


class UnavailableError(VmxsimRpcError):
    """UNAVAILABLE: the server cannot be reached or is draining; retrying may work."""

    code = grpc.StatusCode.UNAVAILABLE


class UnauthenticatedError(VmxsimRpcError):
    """UNAUTHENTICATED: the call carries no valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(VmxsimRpcError):
    """PERMISSION_DENIED: the caller may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


_BY_CODE: dict[grpc.StatusCode, type[VmxsimRpcError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        FailedPreconditionError,
        ResourceExhaustedError,
        DeadlineExceededError,
        AbortedError,
        UnavailableError,
        UnauthenticatedError,
        PermissionDeniedError,
    )
}


def from_rpc_error(error: grpc.RpcError) -> VmxsimRpcError:
    """The typed exception for a failed call (``grpc.RpcError`` raised by a sync or asyncio
    stub)."""
    call = isinstance(error, grpc.Call | grpc.aio.AioRpcError)  # sync and asyncio calls
    code = error.code() if call else grpc.StatusCode.UNKNOWN
    details = (error.details() if call else None) or str(error)
    cls = _BY_CODE.get(code, VmxsimRpcError)
    return cls(details, code)
