"""Xen's VMCS dump (``vmcs_dump_vcpu`` in xen/arch/x86/hvm/vmx/vmcs.c), as ``xl dmesg`` prints it
after ``vmentry failure (reason 0x80000021)`` or on the ``v`` debug key, every line prefixed with
``(XEN)`` (and a ``[timestamp]`` with console_timestamps).

It shares most lines with KVM's dump (``kvm.COMMON_ROWS``); what differs, read from the printk
calls of ``vmcs_dump_vcpu``, ``vmx_dump_sel`` and ``vmx_dump_sel2``:
- guest RSP, RIP and RFLAGS with the hypervisor's copy in parentheses, ``PDPTE0 = ...``;
- segments as a table under ``sel  attr  limit   base``: ``  CS: 0008 0a09b ffffffff 000...``,
  descriptor tables as ``GDTR:            0000007f ffff88001f40c000`` (limit, base);
- ``EFER(VMCS) = ...  PAT = ...`` (``EFER(MSR LL)`` when the value is not the VMCS field's;
  older releases print ``EFER = ...``), ``PreemptionTimer = ...  SM Base = ...``;
- host ``RIP = 0x... (symbol)  RSP = 0x...``; ``EPT pointer = ...  EPTP index = ...``;
  ``Virtual processor ID = ... VMfunc controls = ...``.
"""

from __future__ import annotations

from .kvm import COMMON_ROWS
from .lines import (
    CONTROL,
    GUEST,
    HOST,
    REPORTED_EXIT_REASON,
    START,
    LineFormat,
    Row,
    segment_rows,
)  # fmt: skip

__all__ = ["XEN", "parse"]

NAME = "xen-vmcs_dump"

XEN = LineFormat(
    NAME,
    headers={"*** Guest State ***": GUEST, "*** Host State ***": HOST,
             "*** Control State ***": CONTROL},
    rows=(
        Row(START, "vmentry failure (reason X)", (REPORTED_EXIT_REASON,)),
        Row(START, "VMCS Area", ()),
        *COMMON_ROWS,
        *(Row(GUEST, f"PDPTE{i} = X", (f"GUEST_PDPTR{i}",)) for i in range(4)),
        Row(GUEST, "^RSP = X (X) RIP = X (X)", ("GUEST_RSP", None, "GUEST_RIP", None)),
        Row(GUEST, "^RFLAGS=X (X) DR7 = X", ("GUEST_RFLAGS", None, "GUEST_DR7")),
        *segment_rows("^{seg}: X X X X"),
        Row(GUEST, "^GDTR: X X", ("GUEST_GDTR_LIMIT", "GUEST_GDTR_BASE")),
        Row(GUEST, "^IDTR: X X", ("GUEST_IDTR_LIMIT", "GUEST_IDTR_BASE")),
        Row(GUEST, "^EFER(VMCS) = X", ("GUEST_IA32_EFER",)),
        Row(GUEST, "^EFER = X", ("GUEST_IA32_EFER",)),
        Row(GUEST, "PAT = X", ("GUEST_IA32_PAT",)),
        Row(GUEST, "^PreemptionTimer = X SM Base = X",
            ("VMX_PREEMPTION_TIMER_VALUE", "GUEST_SMBASE")),
        Row(HOST, "^RIP = X", ("HOST_RIP",)),
        Row(HOST, "RSP = X", ("HOST_RSP",), unless=("Sysenter",)),
        Row(CONTROL, "EPTP index = X", ("EPTP_INDEX",)),
        Row(CONTROL, "VMfunc controls = X", ("VM_FUNCTION_CONTROL",)),
    ),
)  # fmt: skip


parse = XEN.parse
