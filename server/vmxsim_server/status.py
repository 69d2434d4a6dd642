"""Core exceptions -> gRPC status codes and google.rpc error details, in one place (an aio
server interceptor).

    exception                                          code                 ErrorInfo.reason
    UnknownField                                       INVALID_ARGUMENT     UNKNOWN_FIELD
    UnknownReason                                      INVALID_ARGUMENT     UNKNOWN_EXIT_REASON
    ProfileError                                       INVALID_ARGUMENT     INVALID_PROFILE_FILE
    InvalidArgument                                    INVALID_ARGUMENT     INVALID_ARGUMENT
    SnapshotError                                      INVALID_ARGUMENT     INVALID_SNAPSHOT
    NotFound                                           NOT_FOUND            <TYPE>_NOT_FOUND
    Busy (a StateError that retrying later may cure)   ABORTED              BUSY
    StateError                                         FAILED_PRECONDITION  FAILED_PRECONDITION
    LimitExceeded                                      RESOURCE_EXHAUSTED   <QUOTA>_EXCEEDED
    Unavailable (state could not be saved; nothing     UNAVAILABLE          UNAVAILABLE
      applied; retry)
    TimeoutError (a stream's deadline passed)          DEADLINE_EXCEEDED    DEADLINE_EXCEEDED
    anything else               INTERNAL with a generic message (the traceback is logged), INTERNAL

An exception's own ``reason`` replaces the table's (e.g. ``MALFORMED_REQUEST``, ``BAD_PAGE_TOKEN``);
``<TYPE>``/``<QUOTA>`` come from NotFound's ``resource_type`` (``VCPU_NOT_FOUND``) and
LimitExceeded's ``quota`` (``MAX_VCPUS_EXCEEDED``), and are ``NOT_FOUND``/``LIMIT_EXCEEDED``
without them. Every error carries a ``google.rpc.Status`` (trailer ``grpc-status-details-bin``,
grpcio-status; AIP-193) with the same code and message and these details:

    every error           ErrorInfo(reason, domain "vmxsim.v1", metadata: the attributes below)
    INVALID_ARGUMENT      BadRequest with one FieldViolation(field, description) when ``field``
    NOT_FOUND             ResourceInfo(resource_type, resource_name, description)
    RESOURCE_EXHAUSTED    QuotaFailure with one Violation(subject = quota, description)

A request whose bytes do not parse as its message type is INVALID_ARGUMENT too (gRPC itself
would answer UNKNOWN with the parser's exception text). The message of a mapped error is the
exception's own one-line text, never a traceback.
Architectural outcomes are not errors and never reach this module (DESIGN.md "Service").
Only vmxsim's own service is wrapped; health and reflection keep their behaviour.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import any_pb2
from grpc import aio
from grpc_status import rpc_status

from .vmx.exceptions import (
    Busy,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    ProfileError,
    SnapshotError,
    StateError,
    Unavailable,
    UnknownField,
    UnknownReason,
)

__all__ = ["DOMAIN", "Continuation", "ErrorInterceptor", "rich_status", "status_of"]

log = logging.getLogger("vmxsim.server")

_CODES: tuple[tuple[type[Exception], grpc.StatusCode, str], ...] = (
    # most specific first: the first row an exception is an instance of applies
    (UnknownField, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_FIELD"),
    (UnknownReason, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_EXIT_REASON"),
    (ProfileError, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROFILE_FILE"),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    (SnapshotError, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SNAPSHOT"),
    (NotFound, grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    (Busy, grpc.StatusCode.ABORTED, "BUSY"),
    (StateError, grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED"),
    (Unavailable, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
)
DOMAIN = "vmxsim.v1"
"""ErrorInfo.domain: the API the reasons belong to."""
Continuation = Callable[
    [grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]
]
"""The ``continuation`` an aio server interceptor gets (the next interceptor or the handler)."""
INTERNAL_MESSAGE = "internal server error (the server log has the details)"


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message an exception is answered with."""
    code, message, _ = _classify(exc)
    return code, message


def _classify(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """Code, message and ErrorInfo reason of an exception."""
    for kind, code, reason in _CODES:
        if isinstance(exc, kind):
            own = getattr(exc, "reason", "")
            if not own and isinstance(exc, NotFound) and exc.resource_type:
                own = f"{exc.resource_type.upper()}_NOT_FOUND"
            if not own and isinstance(exc, LimitExceeded) and exc.quota:
                own = f"{exc.quota.upper()}_EXCEEDED"
            return code, str(exc) or kind.__name__, own or reason
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, "INTERNAL"


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rich_status(exc: BaseException) -> status_pb2.Status:
    """The ``google.rpc.Status`` an exception is answered with (table in the docstring)."""
    code, message, reason = _classify(exc)
    metadata: dict[str, str] = {}
    details: list[Any] = []
    if isinstance(exc, InvalidArgument) and exc.field:
        metadata["field"] = exc.field
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=message, reason=reason
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    elif isinstance(exc, NotFound) and exc.resource_type:
        metadata.update(resource_type=exc.resource_type, resource_name=exc.resource_name)
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=exc.resource_type,
                resource_name=exc.resource_name,
                description=message,
            )
        )
    elif isinstance(exc, LimitExceeded) and exc.quota:
        metadata["quota"] = exc.quota
        if exc.limit is not None:
            metadata["limit"] = str(int(exc.limit) if float(exc.limit).is_integer() else exc.limit)
        quota = error_details_pb2.QuotaFailure.Violation(subject=exc.quota, description=message)
        details.append(error_details_pb2.QuotaFailure(violations=[quota]))
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    return status_pb2.Status(
        code=code.value[0],
        message=message,
        details=[_packed(info), *(_packed(detail) for detail in details)],
    )


class _Malformed:
    """What the wrapped deserializer returns for bytes that do not parse."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` returning ``_Malformed`` instead of raising (the handler reports it)."""
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:
            return _Malformed(exc)

    return deserialize


def _parsed(request: Any) -> Any:
    if isinstance(request, _Malformed):
        reason = str(request.error).rsplit(": ", 1)[-1] or type(request.error).__name__
        raise InvalidArgument(
            f"malformed request: it does not parse ({reason})", reason="MALFORMED_REQUEST"
        )
    return request


async def _parsed_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _parsed(request)


async def _abort(exc: Exception, method: str, context: aio.ServicerContext[Any, Any]) -> None:
    status = rich_status(exc)
    code, message = status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("rpc %s failed unexpectedly", method, extra={"method": method})
    else:
        log.info("rpc %s answered %s: %s", method, code.name, message, extra={"method": method})
    await context.abort_with_status(rpc_status.to_status(status))


def _wrap_unary(behaviour: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Any]:
    async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behaviour(_parsed(request), context)
        except aio.AbortError:
            raise
        except Exception as exc:
            await _abort(exc, method, context)

    return call


def _wrap_stream(behaviour: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., Any]:
    async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async for response in behaviour(_parsed_stream(request), context):
                yield response
        except aio.AbortError:
            raise
        except Exception as exc:
            await _abort(exc, method, context)

    return call


class ErrorInterceptor(aio.ServerInterceptor):
    """Wraps every method of the services whose full names start with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(self.prefix):
            return handler
        name = method.rsplit("/", 1)[-1]
        codecs = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, name), **codecs
            )
        if handler.stream_stream and inspect.isasyncgenfunction(handler.stream_stream):
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, name), **codecs
            )
        return handler  # vmxsim has no unary-stream or stream-unary methods
