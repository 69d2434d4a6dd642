"""The VMX instructions and pseudo-ops of a vCPU handle, written once for the sync
``RemoteVcpu`` (each returns an ``InstructionResult``) and the asyncio ``AsyncRemoteVcpu``
(each returns an awaitable of one): a subclass supplies ``_one``, one Execute call."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["VcpuInstructions"]

R = TypeVar("R")
Operand = int | str


class VcpuInstructions(Generic[R]):
    """One method per instruction; ``R`` is what ``_one`` returns."""

    def _one(self, op: str, *operands: Operand) -> R:
        raise NotImplementedError

    def vmxon(self, address: int) -> R:
        """VMXON with the VMXON region at ``address``."""
        return self._one("VMXON", address)

    def vmxoff(self) -> R:
        """VMXOFF."""
        return self._one("VMXOFF")

    def vmclear(self, address: int) -> R:
        """VMCLEAR of the VMCS at ``address``."""
        return self._one("VMCLEAR", address)

    def vmptrld(self, address: int) -> R:
        """VMPTRLD of the VMCS at ``address``."""
        return self._one("VMPTRLD", address)

    def vmptrst(self) -> R:
        """VMPTRST: the current-VMCS pointer in ``.value``."""
        return self._one("VMPTRST")

    def vmread(self, field: Operand) -> R:
        """VMREAD of a field (name or encoding): the value in ``.value``."""
        return self._one("VMREAD", field)

    def vmwrite(self, field: Operand, value: int) -> R:
        """VMWRITE of a field (name or encoding)."""
        return self._one("VMWRITE", field, value)

    def vmlaunch(self) -> R:
        """VMLAUNCH."""
        return self._one("VMLAUNCH")

    def vmresume(self) -> R:
        """VMRESUME."""
        return self._one("VMRESUME")

    def mem32(self, address: int, value: int) -> R:
        """Pseudo-op: write 32 bits of the VM's memory."""
        return self._one("MEM32", address, value)

    def revid(self, address: int) -> R:
        """Pseudo-op: write the vCPU's VMCS revision identifier at ``address``."""
        return self._one("REVID", address)

    def cr0(self, value: int) -> R:
        """Pseudo-op: set CR0."""
        return self._one("CR0", value)

    def cr4(self, value: int) -> R:
        """Pseudo-op: set CR4."""
        return self._one("CR4", value)

    def wrmsr(self, index: int, value: int) -> R:
        """Pseudo-op: write an MSR."""
        return self._one("WRMSR", index, value)

    def exit(
        self,
        reason: Operand,
        qualification: int = 0,
        *,
        rip: int = 0,
        info2: int = 0,
        intr_info: int = 0,
        error_code: int = 0,
        guest_physical_address: int = 0,
        instruction_len: int = 0,
    ) -> R:
        """Pseudo-op: deliver a VM exit (reason by name or number) to the vCPU in non-root."""
        return self._one(
            "EXIT", reason, qualification, rip, info2, intr_info, error_code,
            guest_physical_address, instruction_len,
        )  # fmt: skip
