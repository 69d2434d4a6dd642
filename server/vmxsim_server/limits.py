"""Every bound the server puts on what one request, one client or all clients may take: one
table, from which the ``vmxsim serve`` flags (config.py), the checks and the limits table of
docs/reliability.md derive.

A limit that is hit answers RESOURCE_EXHAUSTED (a quota: retry later or ask for a higher
limit) or INVALID_ARGUMENT (the request can never succeed as it is), and the message names the
limit and its flag, e.g. ``an Execute holds at most 10000 instructions (--max-instructions);
this one has 150000``. A "client" is a token's tenant when the server checks tokens, else the
peer's IP address (tenancy.py).

No gRPC here: the core and the registry raise ``LimitExceeded`` / ``InvalidArgument``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .vmx.snapshot import COUNTER_MAX

__all__ = ["BY_NAME", "COUNTER_MAX", "LIMITS", "Limit", "limit_error", "limits_markdown"]


@dataclass(frozen=True)
class Limit:
    """One bound: the ``ServerConfig`` attribute it is, its default, what it bounds (``scope``:
    per server, per client, per request, per VM ...), the status it answers and its test."""

    name: str
    default: int | float
    scope: str
    bounds: str
    answer: str
    test: str

    @property
    def flag(self) -> str:
        """The ``vmxsim serve`` flag, e.g. ``--max-vcpus`` (config.Option derives the same)."""
        return "--" + self.name.replace("_", "-")


_EXHAUSTED = "RESOURCE_EXHAUSTED"
_INVALID = "INVALID_ARGUMENT"
_HOSTILE = "tests/test_hostile.py::"
_STREAMS = "tests/test_service_streams.py::test_limits_on_streams_batches_and_message_size"

LIMITS: tuple[Limit, ...] = (
    # how much the server holds at once
    Limit("max_vcpus", 10_000, "server", "vCPUs, and VMs, held at once (also by Restore)",
          _EXHAUSTED, "tests/test_service_management.py::test_vcpu_limit_is_resource_exhausted"),
    Limit("max_streams", 64, "server", "Drive/Replay streams open at once",
          _EXHAUSTED, _STREAMS),
    Limit("max_vcpus_per_client", 5_000, "client", "vCPUs, and VMs, one client holds at once",
          _EXHAUSTED, _HOSTILE + "test_vcpus_are_capped_per_client"),
    Limit("max_streams_per_client", 32, "client", "Drive/Replay streams one client has open",
          _EXHAUSTED, _HOSTILE + "test_idle_streams_cannot_take_every_slot"),
    Limit("stream_idle_seconds", 120.0, "stream", "seconds a stream may wait for its next message",
          _EXHAUSTED, _HOSTILE + "test_idle_streams_time_out"),
    # how much one request may carry or cost
    Limit("max_message_bytes", 16 * 1024 * 1024, "message", "bytes of one gRPC message, both ways",
          _EXHAUSTED, _STREAMS),
    Limit("max_batch_exits", 100_000, "request", "exits in one ExitBatch",
          _EXHAUSTED, _STREAMS),
    Limit("max_instructions", 10_000, "request", "instructions in one Execute",
          _INVALID, _HOSTILE + "test_execute_is_bounded"),
    Limit("max_snapshot_bytes", 8 * 1024 * 1024, "request",
          "bytes a Restore's snapshot may inflate to", _INVALID, _HOSTILE + "test_zlib_bomb"),
    # how much one VM may hold
    Limit("max_vmcs_regions", 1_024, "VM", "VMCS regions in one VM's memory",
          _EXHAUSTED, _HOSTILE + "test_execute_is_bounded"),
    Limit("max_memory_words", 16_384, "VM",
          "32-bit words written into one VM's memory (and MSRs of one vCPU)",
          _EXHAUSTED, _HOSTILE + "test_execute_is_bounded"),
)  # fmt: skip
BY_NAME = {limit.name: limit for limit in LIMITS}


def limit_error(name: str, value: int | float, what: str) -> str:
    """The message of a hit limit, ``what`` first: ``limit_error("max_instructions", 10000,
    "this Execute has 150000 instructions")`` -> ``this Execute has 150000 instructions; the
    limit is 10000 instructions in one Execute (--max-instructions)``."""
    limit = BY_NAME[name]
    return f"{what}; the limit is {value:g} {limit.bounds} ({limit.flag})"


def limits_markdown() -> str:
    """The limits table of docs/reliability.md (a test keeps the page equal to it)."""
    rows = [
        "| limit (flag) | default | per | answer | test |",
        "|---|---|---|---|---|",
    ]
    for limit in LIMITS:
        rows.append(
            f"| {limit.bounds} (`{limit.flag}`) | {limit.default:,} | {limit.scope}"
            f" | {limit.answer} | `{limit.test}` |"
        )
    return "\n".join(rows) + "\n"
