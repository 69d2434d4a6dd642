"""The core's exceptions: one hierarchy, raised for misuse of the emulator, never for an
architectural outcome.

Architectural outcomes (VMfailInvalid, VMfailValid(n), #UD/#GP faults, failed VM entries) are
values (``vmxsim_server.vmx.vcpu.Outcome``), exactly as the SDM defines them. These exceptions
are for input the emulator cannot even interpret, and the service maps each to one gRPC status:

    VmxsimError          base class
    ├── InvalidArgument  malformed input: unknown field name, value wider than 64 bits,
    │   │                unknown exit reason, bad trace record         -> INVALID_ARGUMENT
    │   ├── UnknownField
    │   ├── UnknownReason
    │   └── ProfileError a profile, mix or parameter file that does not validate; names
    │                    the file, the key and the problem              -> INVALID_ARGUMENT
    ├── NotFound         unknown VM, vCPU or profile name               -> NOT_FOUND
    ├── StateError       wrong state for the call, e.g. a cached write
    │   │                after the flush                                -> FAILED_PRECONDITION
    │   └── Busy         in use by another caller for now (e.g. a replay
    │                    still open when its resume arrives); retry     -> ABORTED
    ├── LimitExceeded    a configured limit would be exceeded           -> RESOURCE_EXHAUSTED
    ├── Unavailable      the server could not do it now (its state
    │                    directory could not be written); nothing was
    │                    applied, retry                                  -> UNAVAILABLE
    └── SnapshotError    a snapshot of another version, or corrupted    -> INVALID_ARGUMENT
        └── SnapshotTooLarge  one that inflates beyond the allowed size     -> INVALID_ARGUMENT

Optional keyword attributes say what a program needs to react without parsing the message (the
service sends them as google.rpc error details, status.py): ``reason`` (a stable UPPER_SNAKE
name overriding the class's), InvalidArgument's ``field`` (the request field at fault),
NotFound's ``resource_type``/``resource_name``, LimitExceeded's ``quota``/``limit``.
"""

from __future__ import annotations

__all__ = [
    "Busy",
    "InvalidArgument",
    "LimitExceeded",
    "NotFound",
    "ProfileError",
    "SnapshotError",
    "SnapshotTooLarge",
    "StateError",
    "Unavailable",
    "UnknownField",
    "UnknownReason",
    "VmxsimError",
]


class VmxsimError(Exception):
    """Base class of every error the core raises."""

    def __init__(self, message: str = "", *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class InvalidArgument(VmxsimError):
    """Input that is malformed whatever the state; ``field`` names the request field at fault."""

    def __init__(self, message: str = "", *, field: str = "", reason: str = "") -> None:
        super().__init__(message, reason=reason)
        self.field = field


class UnknownField(InvalidArgument):
    """A VMCS field name or encoding that is not in the field table."""


class UnknownReason(InvalidArgument):
    """An exit reason that is not in the exit-reason table."""


class ProfileError(InvalidArgument):
    """A hypervisor profile, mix or latency file that does not validate."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


class NotFound(VmxsimError):
    """An object addressed by id or name that does not exist (e.g. ``resource_type="vcpu"``)."""

    def __init__(
        self, message: str = "", *, resource_type: str = "", resource_name: str = "",
        reason: str = "",
    ) -> None:  # fmt: skip
        super().__init__(message, reason=reason)
        self.resource_type = resource_type
        self.resource_name = resource_name


class StateError(VmxsimError):
    """The call is not valid in the object's current state."""


class Busy(StateError):
    """The object is in use by another caller for now; retrying later may work."""


class LimitExceeded(VmxsimError):
    """A configured limit would be exceeded; ``quota`` names it (e.g. ``"max_vcpus"``)."""

    def __init__(
        self, message: str = "", *, quota: str = "", limit: float | None = None, reason: str = ""
    ) -> None:
        super().__init__(message, reason=reason)
        self.quota = quota
        self.limit = limit


class SnapshotError(VmxsimError):
    """A snapshot that cannot be restored: wrong version, wrong format or corrupted."""


class SnapshotTooLarge(SnapshotError):
    """A snapshot whose payload inflates to more than the allowed number of bytes."""


class Unavailable(VmxsimError):
    """The server could not do it now (e.g. a full disk); nothing was applied, retry."""
