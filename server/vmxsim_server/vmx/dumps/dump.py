"""What a parser makes of one VMCS dump, and the errors and limits of reading dumps.

A ``Dump`` holds only what the dump states: field-table names with their values, and the
pseudo-values of the entry checks (``@launch_state`` ...) where the format states them. A field
the dump does not show is absent, never zero: the checks that need it are "not checked".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..exceptions import InvalidArgument, LimitExceeded
from ..fields import BY_NAME, Access

__all__ = [
    "CURRENT_VMCS",
    "MAX_DUMP_BYTES",
    "Dump",
    "DumpError",
    "DumpTooLarge",
    "check_size",
    "field_value",
]

MAX_DUMP_BYTES = 1 << 20
"""The largest dump read (1 MiB): a dmesg with a few VMCS dumps is a few tens of KiB."""


CURRENT_VMCS = "@current_vmcs"
"""The pseudo-value a dump read with VMREAD states (1: a VMCS was current)."""


class DumpError(InvalidArgument):
    """Input that is no VMCS dump in any known format, or a malformed value in one."""


class DumpTooLarge(LimitExceeded):
    """A dump larger than ``MAX_DUMP_BYTES``."""


def check_size(size: int) -> None:
    """``DumpTooLarge`` for input over ``MAX_DUMP_BYTES``."""
    if size > MAX_DUMP_BYTES:
        raise DumpTooLarge(
            f"the dump is {size:,} bytes; at most {MAX_DUMP_BYTES:,} bytes (1 MiB) are read"
        )


def field_value(name: str, value: int, where: str) -> tuple[str, int]:
    """A (field-table name, value) pair, checked: the name exists and the value fits its width."""
    found = BY_NAME.get(name.upper())
    if found is None or found.access is not Access.FULL:
        raise DumpError(f"{where}: {name!r} is not a VMCS field of the field table")
    if not 0 <= value <= found.mask:
        raise DumpError(
            f"{where}: {value:#x} does not fit {found.name} ({found.width.label}-bit field)"
        )
    return found.name, value


@dataclass
class Dump:
    """One VMCS dump: its format, where it starts, and the values it states."""

    format: str
    line: int
    values: dict[str, int] = field(default_factory=dict)
    """Field-table name -> value, for every field the dump shows."""
    pseudo: dict[str, int] = field(default_factory=dict)
    """Entry-check pseudo-values (``@launch_state`` ...) the dump states."""
    reported_exit_reason: int | None = None
    """The exit reason the log reports for the failed entry (e.g. 0x80000021), when it does."""
    capabilities: Any = None
    """The vCPU capabilities the dump carries (vmxsim snapshots), else None."""
    memory: Any = None
    """The guest-physical memory the dump carries (vmxsim snapshots), else None."""

    def set(self, name: str, value: int, where: str) -> None:
        """Record one field's value (checked against the field table)."""
        key, checked = field_value(name, value, where)
        self.values[key] = checked
