"""VMCS regions: the values of one VMCS, its launch state, and the address it lives at.

The SDM leaves the region's data format to the implementation except for its first 4 bytes: the
VMCS revision identifier in bits 30:0 and the shadow-VMCS indicator in bit 31 (SDM 25.2). vmxsim
keeps the first 4 bytes in the VM's physical memory (``memory.PhysicalMemory``), so a harness can
write them with a plain memory write, and keeps the field values in a ``VmcsRegion`` registered at
the region's address in the same VM, so a VMCS cleared on one vCPU can be loaded on another.

Values are stored per component (``Field.bit``), truncated to the component's width on write;
the high half of a 64-bit component aliases bits 63:32 of the full one (SDM 25.11.2).
"""

from __future__ import annotations

import enum

from .fields import FIELDS, Access, Field

__all__ = ["LaunchState", "VmcsRegion"]


class LaunchState(enum.Enum):
    """The launch state of a VMCS (SDM 25.1): changed only by VMCLEAR and VMLAUNCH."""

    CLEAR = "clear"
    LAUNCHED = "launched"


class VmcsRegion:
    """The field values and launch state of the VMCS at one physical address."""

    __slots__ = ("address", "launch_epoch", "launch_state", "values")

    def __init__(self, address: int) -> None:
        self.address = address
        self.values: list[int] = [0] * len(FIELDS)
        self.launch_state = LaunchState.CLEAR
        self.launch_epoch = -1

    def read(self, field: Field) -> int:
        """The value a VMREAD of ``field`` returns (zero-extended; bits 63:32 for a high half)."""
        value = self.values[field.bit]
        return value >> 32 if field.access is Access.HIGH else value

    def write(self, field: Field, value: int) -> None:
        """Store ``value`` as a VMWRITE of ``field`` does: truncated to the field's width."""
        if field.access is Access.HIGH:
            low = self.values[field.bit] & 0xFFFF_FFFF
            self.values[field.bit] = low | ((value & 0xFFFF_FFFF) << 32)
        else:
            self.values[field.bit] = value & field.mask

    def copy_from(self, other: VmcsRegion) -> None:
        """Take over another region's values and launch state (used by restore)."""
        self.values = list(other.values)
        self.launch_state = other.launch_state
        self.launch_epoch = other.launch_epoch
