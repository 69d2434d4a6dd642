"""The emulator core: VMCS field table, VMCS regions, VMX instructions, cache, engine, profiles.

Pure Python with no gRPC or Prometheus imports; the service layer translates to and from it.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .capabilities import DEFAULT_CAPABILITIES, Capabilities
    from .exit_reasons import EXIT_REASONS, ExitReason, lookup_reason
    from .fields import ALL_FIELDS, FIELDS, Access, Field, Kind, Width, decode_encoding, lookup
    from .instruction_errors import INSTRUCTION_ERRORS, error_message
    from .memory import PhysicalMemory
    from .records import ExitRecord
    from .vcpu import INVALID_POINTER, Mode, Outcome, Result, Vcpu
    from .vmcs import LaunchState, VmcsRegion

# Imported on first use, so that a command that needs one table (``vmxsim fields``) does not load
# the whole core (PEP 562 module __getattr__).
_LAZY = {
    "capabilities": ("DEFAULT_CAPABILITIES", "Capabilities"),
    "exit_reasons": ("EXIT_REASONS", "ExitReason", "lookup_reason"),
    "fields": ("ALL_FIELDS", "FIELDS", "Access", "Field", "Kind", "Width", "decode_encoding",
               "lookup"),
    "instruction_errors": ("INSTRUCTION_ERRORS", "error_message"),
    "memory": ("PhysicalMemory",),
    "records": ("ExitRecord",),
    "vcpu": ("INVALID_POINTER", "Mode", "Outcome", "Result", "Vcpu"),
    "vmcs": ("LaunchState", "VmcsRegion"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


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
