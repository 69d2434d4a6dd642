"""Exit records: one VM exit as a trace or a client describes it.

Only ``reason`` (the basic exit reason number, SDM Appendix C) is required. The other members
are what ``kvm_exit`` trace events and HAXM's logs carry; the engine writes them into the VMCS
exit-information fields at the exit (``info1`` is the exit qualification, ``info2`` is
``IDT_VECTORING_INFO_FIELD`` on VMX hosts in Linux's ``vmx_get_exit_info``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ExitRecord"]


@dataclass(frozen=True, slots=True)
class ExitRecord:
    """One VM exit. Integers are unsigned and fit 64 bits; ``timestamp`` is seconds."""

    reason: int
    rip: int = 0
    qualification: int = 0
    info2: int = 0
    intr_info: int = 0
    error_code: int = 0
    guest_physical_address: int = 0
    instruction_len: int = 0
    timestamp: float | None = None
    vcpu: int = 0
