"""Core exceptions -> gRPC status codes, in one place (an aio server interceptor).

    InvalidArgument (UnknownField, UnknownReason, ProfileError) -> INVALID_ARGUMENT
    SnapshotError                                               -> INVALID_ARGUMENT
    NotFound                                                    -> NOT_FOUND
    Busy (a StateError that retrying later may cure)            -> ABORTED
    StateError                                                  -> FAILED_PRECONDITION
    LimitExceeded                                               -> RESOURCE_EXHAUSTED
    Unavailable (state could not be saved; nothing applied)     -> UNAVAILABLE
    TimeoutError (a stream's deadline passed between batches)   -> DEADLINE_EXCEEDED
    anything else                       -> INTERNAL with a generic message; the traceback is logged

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

import grpc
from grpc import aio

from .vmx.exceptions import (
    Busy,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    SnapshotError,
    StateError,
    Unavailable,
)

__all__ = ["Continuation", "ErrorInterceptor", "status_of"]

log = logging.getLogger("vmxsim.server")

_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (SnapshotError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Busy, grpc.StatusCode.ABORTED),
    (StateError, grpc.StatusCode.FAILED_PRECONDITION),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
)
Continuation = Callable[
    [grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]
]
"""The ``continuation`` an aio server interceptor gets (the next interceptor or the handler)."""
INTERNAL_MESSAGE = "internal server error (the server log has the details)"


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message an exception is answered with."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code, str(exc) or kind.__name__
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


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
        raise InvalidArgument(f"malformed request: it does not parse ({reason})")
    return request


async def _parsed_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _parsed(request)


async def _abort(exc: Exception, method: str, context: aio.ServicerContext[Any, Any]) -> None:
    code, message = status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("rpc %s failed unexpectedly", method, extra={"method": method})
    else:
        log.info("rpc %s answered %s: %s", method, code.name, message, extra={"method": method})
    await context.abort(code, message)


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
