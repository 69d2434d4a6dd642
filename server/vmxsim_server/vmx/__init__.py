"""The emulator core: VMCS field table, VMCS regions, VMX instructions, cache, engine, profiles.

Pure Python with no gRPC or Prometheus imports; the service layer translates to and from it.
"""

from .capabilities import DEFAULT_CAPABILITIES, Capabilities
from .exceptions import (
    InvalidArgument,
    LimitExceeded,
    NotFound,
    ProfileError,
    SnapshotError,
    StateError,
    UnknownField,
    UnknownReason,
    VmxsimError,
)
from .exit_reasons import EXIT_REASONS, ExitReason, lookup_reason
from .fields import ALL_FIELDS, FIELDS, Access, Field, Kind, Width, decode_encoding, lookup
from .instruction_errors import INSTRUCTION_ERRORS, error_message
from .memory import PhysicalMemory
from .records import ExitRecord
from .vcpu import INVALID_POINTER, Mode, Outcome, Result, Vcpu
from .vmcs import LaunchState, VmcsRegion

__all__ = [
    "ALL_FIELDS",
    "DEFAULT_CAPABILITIES",
    "EXIT_REASONS",
    "FIELDS",
    "INSTRUCTION_ERRORS",
    "INVALID_POINTER",
    "Access",
    "Capabilities",
    "ExitReason",
    "ExitRecord",
    "Field",
    "InvalidArgument",
    "Kind",
    "LaunchState",
    "LimitExceeded",
    "Mode",
    "NotFound",
    "Outcome",
    "PhysicalMemory",
    "ProfileError",
    "Result",
    "SnapshotError",
    "StateError",
    "UnknownField",
    "UnknownReason",
    "Vcpu",
    "VmcsRegion",
    "VmxsimError",
    "Width",
    "decode_encoding",
    "error_message",
    "lookup",
    "lookup_reason",
]
