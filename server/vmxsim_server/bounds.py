"""The service's bounds on time and counts that are not a vCPU's: how long a stream may sit
idle, how long a unary call may work (its deadline), and client-given counts that the server
adds up (a replay's skipped lines and unknown reasons), which must stay within uint64.

Each answers with a readable status: an idle stream RESOURCE_EXHAUSTED naming
``--stream-idle-seconds``, a passed deadline DEADLINE_EXCEEDED, a count past ``COUNTER_MAX``
INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

from grpc import aio

from .limits import COUNTER_MAX, limit_error
from .vmx.exceptions import InvalidArgument, LimitExceeded

__all__ = ["add_counts", "deadline_of", "idle_bounded"]

T = TypeVar("T")


async def idle_bounded(requests: AsyncIterator[T], seconds: float) -> AsyncIterator[T]:
    """``requests``, raising ``LimitExceeded`` when the next one takes more than ``seconds``
    (a stream that holds a slot and a vCPU while sending nothing)."""
    iterator = aiter(requests)
    while True:
        try:
            request = await asyncio.wait_for(anext(iterator), seconds)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise LimitExceeded(
                limit_error("stream_idle_seconds", seconds, "this stream sent nothing for longer"),
                quota="stream_idle_seconds", limit=seconds,
            ) from None  # fmt: skip
        yield request


def deadline_of(context: aio.ServicerContext[Any, Any]) -> float | None:
    """The call's deadline on the ``time.monotonic()`` clock (None = the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def add_counts(total: int, more: int, what: str) -> int:
    """``total + more``; ``InvalidArgument`` past ``COUNTER_MAX`` (a summary's uint64)."""
    result = total + more
    if result > COUNTER_MAX:
        raise InvalidArgument(f"{what} would add up to {result}, past {COUNTER_MAX} (2**62-1)")
    return result


def add_count_maps(totals: dict[str, int], more: Mapping[str, int], what: str) -> None:
    """``add_counts`` for each key of ``more`` (e.g. unknown reasons by name)."""
    for key, count in more.items():
        totals[key] = add_counts(totals.get(key, 0), count, f"{what} {key[:40]!r}")
