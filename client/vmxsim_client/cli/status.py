"""The exit status of every ``vmxsim`` command: one table, from which the RPC-error mapping,
the ``vmxsim --help`` epilog and the table in docs/client.md are derived.

A CI harness can tell a bad script (2) from an unknown vCPU (3), a busy one (4), a quota (5), a
server that is down (6) and missing credentials (7) without parsing the message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # no grpc at start-up: `vmxsim fields` never imports it (entry.py)
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
    """One exit status: its number, what it means and the names of the gRPC codes
    (``grpc.StatusCode`` members) that end in it."""

    code: int
    meaning: str
    rpc_codes: tuple[str, ...] = ()


STATUSES = (
    ExitStatus(0, "success"),
    ExitStatus(1, "the command ran and found a failure (exec --fail-on-failure: VMfailInvalid, "
               "VMfailValid or a fault; load: errors or counts that disagree; serve: vCPUs not "
               "saved)"),
    ExitStatus(2, "bad command line or input, or INVALID_ARGUMENT from the server",
               ("INVALID_ARGUMENT", "OUT_OF_RANGE")),
    ExitStatus(3, "NOT_FOUND: an unknown VM or vCPU id", ("NOT_FOUND",)),
    ExitStatus(4, "FAILED_PRECONDITION or ABORTED: not in this state (a busy vCPU, ...)",
               ("FAILED_PRECONDITION", "ABORTED", "ALREADY_EXISTS")),
    ExitStatus(5, "RESOURCE_EXHAUSTED: a quota or size limit", ("RESOURCE_EXHAUSTED",)),
    ExitStatus(6, "UNAVAILABLE or DEADLINE_EXCEEDED: no server, or too slow (retry later)",
               ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")),
    ExitStatus(7, "UNAUTHENTICATED or PERMISSION_DENIED",
               ("UNAUTHENTICATED", "PERMISSION_DENIED")),
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
    return _BY_CODE.get(code.name, _OTHER_RPC)


def epilog() -> str:
    """The exit-status table for ``vmxsim --help``."""
    rows = [f"  {s.code:>3}  {s.meaning}" for s in STATUSES]
    return "exit status:\n" + "\n".join(rows)
