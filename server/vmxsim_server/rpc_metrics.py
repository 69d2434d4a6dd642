"""gRPC server request metrics for ``grpc.aio``, under go-grpc-prometheus' names and labels.

py-grpc-prometheus has the same names but no ``grpc.aio`` support, so this interceptor
exports them itself and community gRPC dashboards work unchanged:

    grpc_server_started_total{grpc_type, grpc_service, grpc_method}
    grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}
    grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}   (histogram)

``grpc_type`` is unary, client_stream, server_stream or bidi_stream; ``grpc_code`` the status
name (OK, INVALID_ARGUMENT, ...). A stream is handled when its handler finishes, so its
handling time is the stream's whole life. Put this interceptor first, so that it sees the code
other interceptors (``status.ErrorInterceptor``) turn exceptions into.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import grpc
from grpc import aio
from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["HANDLING_BUCKETS_SECONDS", "RpcMetricsInterceptor"]

HANDLING_BUCKETS_SECONDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
"""From 100 us (a unary call on loopback, DESIGN.md "Performance facts") to 5 min streams."""

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
Context = aio.ServicerContext[Any, Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # the class is not generic at run time


def _rpc_type(handler: Handler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _code_name(context: Context, error: BaseException | None) -> str:
    """The status the call ends with: the one set on the context (``abort``/``set_code``),
    else CANCELLED for a call the client cancelled (the handler is cancelled, or its generator
    closed at a ``yield``: GeneratorExit), UNKNOWN for an escaped exception, or OK."""
    code: Any = context.code()
    if code is not None:
        if isinstance(code, grpc.StatusCode):
            return code.name
        return _CODE_NAMES.get(code, "UNKNOWN")
    if isinstance(error, asyncio.CancelledError | GeneratorExit) or context.cancelled():
        return "CANCELLED"
    return "UNKNOWN" if error is not None else "OK"


class _Method:
    """The pre-bound children of one method; ``handled`` children per code on first use."""

    def __init__(self, metrics: RpcMetricsInterceptor, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.started = metrics.started.labels(*labels)
        self.seconds = metrics.handling.labels(*labels)
        self._handled_metric = metrics.handled
        self._handled: dict[str, Counter] = {}

    @contextmanager
    def timed(self, context: Context) -> Iterator[None]:
        """Count the call as started, and as handled with its code and duration when it ends."""
        self.started.inc()
        start, error = time.perf_counter(), None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.seconds.observe(time.perf_counter() - start)
            code = _code_name(context, error)
            child = self._handled.get(code)
            if child is None:
                child = self._handled[code] = self._handled_metric.labels(*self.labels, code)
            child.inc()


def _unary_like(method: _Method, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a handler that returns one response (or writes with ``context.write``)."""

    async def call(request: Any, context: Context) -> Any:
        with method.timed(context):
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result

    return call


def _streaming(
    method: _Method, behaviour: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    """Wrap an async-generator handler (server or bidi streaming)."""

    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        with method.timed(context):
            async for response in behaviour(request, context):
                yield response

    return call


class RpcMetricsInterceptor(aio.ServerInterceptor):
    """Counts and times every call to every service on the server (health and reflection too)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server", _LABELS, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code",
            (*_LABELS, "grpc_code"),
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its completion by the server",
            _LABELS,
            registry=registry,
            buckets=HANDLING_BUCKETS_SECONDS,
        )
        self._methods: dict[tuple[str, str], _Method] = {}

    def _method(self, full_name: str, kind: str) -> _Method:
        method = self._methods.get((full_name, kind))
        if method is None:
            service, _, name = full_name.lstrip("/").rpartition("/")
            method = self._methods[full_name, kind] = _Method(self, (kind, service, name))
        return method

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED itself
            return None
        method = self._method(handler_call_details.method, _rpc_type(handler))
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _unary_like(method, handler.unary_unary), **codecs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _unary_like(method, handler.stream_unary), **codecs
            )
        # the stubs type handlers as sync callables; on grpc.aio they are coroutine functions
        # or async generators
        behaviour: Any = handler.unary_stream or handler.stream_stream
        wrapped = (_streaming if inspect.isasyncgenfunction(behaviour) else _unary_like)(
            method, behaviour
        )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(wrapped, **codecs)
        return grpc.stream_stream_rpc_method_handler(wrapped, **codecs)
