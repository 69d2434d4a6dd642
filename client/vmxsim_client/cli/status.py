"""The exit status of every ``vmxsim`` command: one table, from which the RPC-error mapping,
the ``vmxsim --help`` epilog and the table in docs/client.md are derived.

A CI harness can tell a bad script (2) from an unknown vCPU (3), a busy one (4), a quota (5), a
server that is down (6) and missing credentials (7) without parsing the message.
"""

from __future__ import annotations

from typing import NamedTuple

import grpc

__all__ = [
    "FAILED",
    "INTERRUPTED",
    "OK",
    "STATUSES",
    "USAGE",
    "ExitStatus",
    "epilog",
    "for_rpc_code",
]


class ExitStatus(NamedTuple):
    """One exit status: its number, what it means and the gRPC codes that end in it."""

    code: int
    meaning: str
    rpc_codes: tuple[grpc.StatusCode, ...] = ()


_C = grpc.StatusCode
STATUSES = (
    ExitStatus(0, "success"),
    ExitStatus(1, "the command ran and found a failure (exec --fail-on-failure: VMfailInvalid, "
               "VMfailValid or a fault; load: errors or counts that disagree; serve: vCPUs not "
               "saved)"),
    ExitStatus(2, "bad command line or input, or INVALID_ARGUMENT from the server",
               (_C.INVALID_ARGUMENT, _C.OUT_OF_RANGE)),
    ExitStatus(3, "NOT_FOUND: an unknown VM or vCPU id", (_C.NOT_FOUND,)),
    ExitStatus(4, "FAILED_PRECONDITION or ABORTED: not in this state (a busy vCPU, ...)",
               (_C.FAILED_PRECONDITION, _C.ABORTED, _C.ALREADY_EXISTS)),
    ExitStatus(5, "RESOURCE_EXHAUSTED: a quota or size limit", (_C.RESOURCE_EXHAUSTED,)),
    ExitStatus(6, "UNAVAILABLE or DEADLINE_EXCEEDED: no server, or too slow (retry later)",
               (_C.UNAVAILABLE, _C.DEADLINE_EXCEEDED, _C.CANCELLED)),
    ExitStatus(7, "UNAUTHENTICATED or PERMISSION_DENIED",
               (_C.UNAUTHENTICATED, _C.PERMISSION_DENIED)),
    ExitStatus(8, "any other failed RPC (UNIMPLEMENTED, INTERNAL, ...)"),
    ExitStatus(130, "interrupted (Ctrl-C)"),
)  # fmt: skip
"""Every exit status, in order."""

OK, FAILED, USAGE = 0, 1, 2
_OTHER_RPC = 8
INTERRUPTED = 130
_BY_CODE = {code: status.code for status in STATUSES for code in status.rpc_codes}


def for_rpc_code(code: grpc.StatusCode) -> int:
    """The exit status of a command whose RPC failed with ``code``."""
    return _BY_CODE.get(code, _OTHER_RPC)


def epilog() -> str:
    """The exit-status table for ``vmxsim --help``."""
    rows = [f"  {s.code:>3}  {s.meaning}" for s in STATUSES]
    return "exit status:\n" + "\n".join(rows)
