"""Refusing an Execute too large to be within ``--max-instructions`` before it is parsed.

gRPC parses a request whole before the handler sees it, and 14 MB of 4-byte VMPTRSTs (within
``--max-message-bytes``) parse into 3.5 million message objects, about 200 MiB. An Execute can
hold at most ``max_instructions`` instructions of at most ``BYTES_PER_INSTRUCTION`` bytes each
(a VMWRITE by a long field name with a 64-bit value and a line number is under 100), so a
larger request is answered INVALID_ARGUMENT naming the limit, unparsed. The instruction count
itself is checked after parsing (execute.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from grpc import aio

from .limits import limit_error
from .status import Continuation
from .vmx.exceptions import InvalidArgument

__all__ = ["BYTES_PER_INSTRUCTION", "RequestSizeInterceptor"]

BYTES_PER_INSTRUCTION = 128
"""The wire size an Execute may take per allowed instruction."""
_EXECUTE = "/vmxsim.v1.VcpuService/Execute"


class _Oversized:
    def __init__(self, size: int) -> None:
        self.size = size


class RequestSizeInterceptor(aio.ServerInterceptor):
    """Put after ``status.ErrorInterceptor``, which maps the ``InvalidArgument`` raised here."""

    def __init__(self, max_instructions: int) -> None:
        self.max_instructions = max_instructions
        self.max_bytes = max_instructions * BYTES_PER_INSTRUCTION

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method != _EXECUTE or not handler.unary_unary:
            return handler
        parse: Callable[[bytes], Any] = handler.request_deserializer or (lambda data: data)
        behaviour: Any = handler.unary_unary
        max_bytes, count = self.max_bytes, self.max_instructions

        def deserialize(data: bytes) -> Any:
            return _Oversized(len(data)) if len(data) > max_bytes else parse(data)

        async def call(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, _Oversized):
                what = f"this Execute has {request.size} bytes, more than {max_bytes} can hold"
                raise InvalidArgument(limit_error("max_instructions", count, what))
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )  # fmt: skip
