"""The VM-entry check table: every check VMLAUNCH and VMRESUME run, as rows of data.

Source: Intel 64 and IA-32 Architectures Software Developer's Manual, Vol. 3C, chapter 27
"VM Entries", order number 325462-086US (December 2024; chapter 26 before the 2023
renumbering), named once in ``listing.SDM_EDITION``. Each row cites its section; the SDM checks
that are not rows are listed with the reason in ``listing.LEFT_OUT``. Where KVM's nested VMX
(arch/x86/kvm/vmx/nested.c, ``nested_vmx_check_*``) or Bochs (cpu/vmx.cc, ``VMenterLoadCheck*``)
differ from the SDM, the row follows the SDM and a comment says so.

Stages run in the processor's order (SDM 27.1-27.4): ``BASIC`` (VMfailInvalid, VMfailValid 4, 5,
6, 26), ``CONTROL`` (VMfailValid 7), ``HOST`` (VMfailValid 8), ``GUEST`` (a VM exit with basic
reason 33 and bit 31 set) and ``MSR_LOAD`` (basic reason 34 and bit 31, the failing entry's
number in the exit qualification). VMLAUNCH/VMRESUME (``vcpu``), ``vmxsim diagnose`` and
docs/entry-checks.md all derive from ``CHECKS``.
"""

from .basic import BASIC_CHECKS
from .controls import CONTROL_CHECKS
from .guest_registers import GUEST_REGISTER_CHECKS
from .guest_segments import GUEST_SEGMENT_CHECKS
from .guest_state import GUEST_STATE_CHECKS
from .host import HOST_CHECKS
from .listing import LEFT_OUT, SDM_EDITION, markdown
from .msr_load import MSR_LOAD_CHECKS
from .table import (
    OUTCOMES,
    PSEUDO_VALUES,
    Check,
    Failure,
    Memory,
    NotChecked,
    Report,
    Stage,
    UnknownField,
    Values,
    evaluate,
)
from .valid import valid_state

__all__ = [
    "BY_ID",
    "CHECKS",
    "LEFT_OUT",
    "OUTCOMES",
    "PSEUDO_VALUES",
    "SDM_EDITION",
    "Check",
    "Failure",
    "Memory",
    "NotChecked",
    "Report",
    "Stage",
    "UnknownField",
    "Values",
    "evaluate",
    "markdown",
    "valid_state",
]

CHECKS: tuple[Check, ...] = (
    *BASIC_CHECKS,
    *CONTROL_CHECKS,
    *HOST_CHECKS,
    *GUEST_REGISTER_CHECKS,
    *GUEST_SEGMENT_CHECKS,
    *GUEST_STATE_CHECKS,
    *MSR_LOAD_CHECKS,
)
"""Every check, in SDM order."""

BY_ID: dict[str, Check] = {check.id: check for check in CHECKS}
if len(BY_ID) != len(CHECKS):  # pragma: no cover - a duplicated id is a table bug
    raise RuntimeError("duplicate VM-entry check id")
