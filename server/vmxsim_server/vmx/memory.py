"""A VM's guest-physical memory as its VMX root-mode software sees it: sparse 4 KiB pages.

Only what VMX instructions look at is modelled: 32-bit words (the revision identifier at the start
of VMXON and VMCS regions) and the VMCS regions registered at their addresses. Pages spring into
existence zero-filled on first touch, so memory costs nothing until a harness uses it.
"""

from __future__ import annotations

from .exceptions import InvalidArgument
from .vmcs import VmcsRegion

__all__ = ["PAGE_SIZE", "PhysicalMemory"]

PAGE_SIZE = 4096


class PhysicalMemory:
    """Sparse physical memory of one VM, shared by its vCPUs."""

    __slots__ = ("_regions", "_words", "limit")

    def __init__(self, maxphyaddr: int = 46) -> None:
        self.limit = 1 << maxphyaddr
        self._words: dict[int, int] = {}
        self._regions: dict[int, VmcsRegion] = {}

    def _check(self, address: int) -> None:
        if address < 0 or address + 4 > self.limit:
            raise InvalidArgument(f"physical address {address:#x} is outside 0..{self.limit:#x}")
        if address % 4:
            raise InvalidArgument(f"physical address {address:#x} is not 4-byte aligned")

    def read32(self, address: int) -> int:
        """The 32-bit word at ``address`` (4-byte aligned), 0 where nothing was written."""
        self._check(address)
        return self._words.get(address, 0)

    def write32(self, address: int, value: int) -> None:
        """Store a 32-bit word at ``address`` (4-byte aligned)."""
        self._check(address)
        if not 0 <= value <= 0xFFFF_FFFF:
            raise InvalidArgument(f"value {value:#x} does not fit 32 bits")
        self._words[address] = value

    def region(self, address: int) -> VmcsRegion:
        """The VMCS region at ``address``, created empty on first use."""
        found = self._regions.get(address)
        if found is None:
            found = self._regions[address] = VmcsRegion(address)
        return found

    def regions(self) -> dict[int, VmcsRegion]:
        """Every VMCS region touched so far, by address."""
        return dict(self._regions)

    def words(self) -> dict[int, int]:
        """Every 32-bit word written so far, by address."""
        return dict(self._words)
