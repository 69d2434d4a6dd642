"""VM-instruction error numbers (Intel SDM Vol. 3C section 31.4, "VM Instruction Error Numbers";
section 30.4 in editions before 2023).

A VMfailValid writes one of these numbers into the current VMCS's VM_INSTRUCTION_ERROR field.
Numbers 14, 21 and 27 are reserved by the SDM and are absent here.
"""

from __future__ import annotations

__all__ = ["INSTRUCTION_ERRORS", "error_message"]

INSTRUCTION_ERRORS: dict[int, str] = {
    1: "VMCALL executed in VMX root operation",
    2: "VMCLEAR with invalid physical address",
    3: "VMCLEAR with VMXON pointer",
    4: "VMLAUNCH with non-clear VMCS",
    5: "VMRESUME with non-launched VMCS",
    6: "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME)",
    7: "VM entry with invalid control field(s)",
    8: "VM entry with invalid host-state field(s)",
    9: "VMPTRLD with invalid physical address",
    10: "VMPTRLD with VMXON pointer",
    11: "VMPTRLD with incorrect VMCS revision identifier",
    12: "VMREAD/VMWRITE from/to unsupported VMCS component",
    13: "VMWRITE to read-only VMCS component",
    15: "VMXON executed in VMX root operation",
    16: "VM entry with invalid executive-VMCS pointer",
    17: "VM entry with non-launched executive VMCS",
    18: "VM entry with executive-VMCS pointer not VMXON pointer",
    19: "VMCALL with non-clear VMCS",
    20: "VMCALL with invalid VM-exit control fields",
    22: "VMCALL with incorrect MSEG revision identifier",
    23: "VMXOFF under dual-monitor treatment of SMIs and SMM",
    24: "VMCALL with invalid SMM-monitor features",
    25: "VM entry with invalid VM-execution control fields in executive VMCS",
    26: "VM entry with events blocked by MOV SS",
    28: "Invalid operand to INVEPT/INVVPID",
}


def error_message(number: int) -> str:
    """The SDM's message for an error number, or a note that the number is not defined."""
    return INSTRUCTION_ERRORS.get(number, f"undefined VM-instruction error {number}")
