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

Every vmxsim error also carries the server's ``google.rpc.Status`` details (grpcio-status,
server/vmxsim_server/status.py), decoded here into attributes, empty when the server sent none:

    .reason             ErrorInfo.reason, a stable name to branch on (``VCPU_NOT_FOUND``,
                        ``BAD_PAGE_TOKEN``, ``MAX_VCPUS_EXCEEDED``, ...)
    .domain, .metadata  ErrorInfo.domain ("vmxsim.v1") and metadata
    .field_violations   BadRequest: ((field, description), ...), e.g. (("profile", "..."),)
    .resource           ResourceInfo: (resource_type, resource_name), e.g. ("vcpu", "vcpu-7")
    .quota_violations   QuotaFailure: ((subject, description), ...), e.g. (("max_vcpus", "..."),)

Architectural outcomes (VMfailInvalid, VMfailValid(n), faults, failed entries) are never
exceptions: they are values (``InstructionResult``), as the SDM defines them.
"""

from __future__ import annotations

from typing import Any

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
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


_DETAILS_KEY = "grpc-status-details-bin"
"""The trailer that carries the google.rpc.Status (gRPC's rich error model)."""


class VmxsimRpcError(Exception):
    """A vmxsim RPC failed; ``str()`` is ``"CODE_NAME: the server's message"``."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self, details: str, code: grpc.StatusCode | None = None, status: bytes | None = None
    ) -> None:
        if code is not None:
            self.code = code
        self.details = details
        self.reason = self.domain = ""
        self.metadata: dict[str, str] = {}
        self.field_violations: tuple[tuple[str, str], ...] = ()
        self.resource: tuple[str, str] | None = None
        self.quota_violations: tuple[tuple[str, str], ...] = ()
        if status:
            self._read_status(status)
        super().__init__(f"{self.code.name}: {details}")

    def _read_status(self, data: bytes) -> None:
        """Fill the attributes from a serialized google.rpc.Status (ignored when damaged)."""
        try:
            status = status_pb2.Status.FromString(data)
        except Exception:  # a peer's garbage must not hide the error itself
            return
        info, request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        resource, quota = error_details_pb2.ResourceInfo(), error_details_pb2.QuotaFailure()
        for detail in status.details:
            if detail.Unpack(info):
                self.reason, self.domain, self.metadata = (
                    info.reason,
                    info.domain,
                    dict(info.metadata),
                )
            elif detail.Unpack(request):
                self.field_violations = tuple(
                    (v.field, v.description) for v in request.field_violations
                )
            elif detail.Unpack(resource):
                self.resource = (resource.resource_type, resource.resource_name)
            elif detail.Unpack(quota):
                self.quota_violations = tuple((v.subject, v.description) for v in quota.violations)


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
    """The typed exception for a failed call (``grpc.RpcError`` raised by a stub, sync or aio),
    with the server's error details."""
    # grpc.Call (sync stubs) and grpc.aio.AioRpcError have the same three accessors
    call: Any = error if callable(getattr(error, "code", None)) else None
    code = call.code() if call is not None else grpc.StatusCode.UNKNOWN
    details = (call.details() if call is not None else None) or str(error)
    trailers: Any = (call.trailing_metadata() if call is not None else None) or ()
    status = next((value for key, value in trailers if key == _DETAILS_KEY), None)
    cls = _BY_CODE.get(code, VmxsimRpcError)
    return cls(details, code, status if isinstance(status, bytes) else None)
