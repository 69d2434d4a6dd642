"""Linux KVM's ``dump_vmcs`` (arch/x86/kvm/vmx/vmx.c; arch/x86/kvm/vmx.c before 4.20), as
dmesg prints it after a failed VM entry (with ``kvm_intel.dump_invalid_vmcs=1`` since 5.3).

The mapping table below covers the layouts of every kernel since the function was added
(4.3, 2015) to 6.x, read from the printk calls of ``dump_vmcs``, ``vmx_dump_sel`` and
``vmx_dump_dtsel`` in torvalds/linux:
- 4.x: ``PinBased=... CPUBased=... SecondaryExec=...`` and ``EntryControls=... ExitControls=...``
  on two lines; ``EFER =     0x...  PAT = 0x...`` on one line (printed when load/save EFER or
  PAT is set); ``CR3 target0=... target1=...`` lines;
- 5.x/6.x: a ``VMCS %p, last attempted VM-entry on CPU %d`` line first; ``EFER= 0x...`` alone,
  or ``EFER= 0x... (autoload)`` / ``(effective)`` when the value is KVM's, not the VMCS field's
  (then it is not read); ``PAT = 0x...`` alone; ``PerfGlobCtl``/``BndCfgS`` lines;
  ``InterruptStatus``; ``TSC Multiplier``, ``TPR Threshold``, ``virt-APIC addr``,
  ``PostedIntrVec``, ``PLE Gap``; 6.x adds ``TertiaryExec=0x...`` and moves PinBased next to
  EntryControls. Each value is searched for by itself, so both line layouts match.
Values KVM never prints (VMCS link pointer, I/O and MSR bitmap addresses, CR3-target count,
MSR-load counts ...) stay unknown.
"""

from __future__ import annotations

from .lines import CONTROL, GUEST, HOST, START, LineFormat, Row, segment_rows

__all__ = ["COMMON_ROWS", "KVM", "parse"]

NAME = "kvm-dump_vmcs"

COMMON_ROWS: tuple[Row, ...] = (
    # guest state: control registers, as KVM and Xen print them alike
    Row(GUEST, "^CR0: actual=X, shadow=X, gh_mask=X",
        ("GUEST_CR0", "CR0_READ_SHADOW", "CR0_GUEST_HOST_MASK")),
    Row(GUEST, "^CR4: actual=X, shadow=X, gh_mask=X",
        ("GUEST_CR4", "CR4_READ_SHADOW", "CR4_GUEST_HOST_MASK")),
    Row(GUEST, "^CR3 = X", ("GUEST_CR3",)),
    Row(GUEST, "^Sysenter RSP=X CS:RIP=X:X",
        ("GUEST_SYSENTER_ESP", "GUEST_SYSENTER_CS", "GUEST_SYSENTER_EIP")),
    Row(GUEST, "^DebugCtl = X DebugExceptions = X",
        ("GUEST_IA32_DEBUGCTL", "GUEST_PENDING_DBG_EXCEPTIONS")),
    Row(GUEST, "PerfGlobCtl = X", ("GUEST_IA32_PERF_GLOBAL_CTRL",)),
    Row(GUEST, "BndCfgS = X", ("GUEST_BNDCFGS",)),
    Row(GUEST, "^Interruptibility = X ActivityState = X",
        ("GUEST_INTERRUPTIBILITY_INFO", "GUEST_ACTIVITY_STATE")),
    Row(GUEST, "^InterruptStatus = X", ("GUEST_INTR_STATUS",)),
    # host state
    Row(HOST, "^CS=X SS=X DS=X ES=X FS=X GS=X TR=X",
        ("HOST_CS_SELECTOR", "HOST_SS_SELECTOR", "HOST_DS_SELECTOR", "HOST_ES_SELECTOR",
         "HOST_FS_SELECTOR", "HOST_GS_SELECTOR", "HOST_TR_SELECTOR")),
    Row(HOST, "^FSBase=X GSBase=X TRBase=X", ("HOST_FS_BASE", "HOST_GS_BASE", "HOST_TR_BASE")),
    Row(HOST, "^GDTBase=X IDTBase=X", ("HOST_GDTR_BASE", "HOST_IDTR_BASE")),
    Row(HOST, "^CR0=X CR3=X CR4=X", ("HOST_CR0", "HOST_CR3", "HOST_CR4")),
    Row(HOST, "^Sysenter RSP=X CS:RIP=X:X",
        ("HOST_IA32_SYSENTER_ESP", "HOST_IA32_SYSENTER_CS", "HOST_IA32_SYSENTER_EIP")),
    Row(HOST, "^EFER = X", ("HOST_IA32_EFER",)),
    Row(HOST, "PAT = X", ("HOST_IA32_PAT",)),
    Row(HOST, "PerfGlobCtl = X", ("HOST_IA32_PERF_GLOBAL_CTRL",)),
    # control state: each value by itself (the kernels put them on different lines)
    Row(CONTROL, "PinBased=X", ("PIN_BASED_VM_EXEC_CONTROL",)),
    Row(CONTROL, "CPUBased=X", ("CPU_BASED_VM_EXEC_CONTROL",)),
    Row(CONTROL, "SecondaryExec=X", ("SECONDARY_VM_EXEC_CONTROL",)),
    Row(CONTROL, "TertiaryExec=X", ("TERTIARY_VM_EXEC_CONTROL",)),
    Row(CONTROL, "EntryControls=X", ("VM_ENTRY_CONTROLS",)),
    Row(CONTROL, "ExitControls=X", ("VM_EXIT_CONTROLS",)),
    Row(CONTROL, "ExceptionBitmap=X", ("EXCEPTION_BITMAP",)),
    Row(CONTROL, "PFECmask=X", ("PAGE_FAULT_ERROR_CODE_MASK",)),
    Row(CONTROL, "PFECmatch=X", ("PAGE_FAULT_ERROR_CODE_MATCH",)),
    Row(CONTROL, "^VMEntry: intr_info=X errcode=X ilen=X",
        ("VM_ENTRY_INTR_INFO_FIELD", "VM_ENTRY_EXCEPTION_ERROR_CODE", "VM_ENTRY_INSTRUCTION_LEN")),
    Row(CONTROL, "^VMExit: intr_info=X errcode=X ilen=X",
        ("VM_EXIT_INTR_INFO", "VM_EXIT_INTR_ERROR_CODE", "VM_EXIT_INSTRUCTION_LEN")),
    Row(CONTROL, "^reason=X qualification=X", ("VM_EXIT_REASON", "EXIT_QUALIFICATION")),
    Row(CONTROL, "^IDTVectoring: info=X errcode=X",
        ("IDT_VECTORING_INFO_FIELD", "IDT_VECTORING_ERROR_CODE")),
    Row(CONTROL, "TSC Offset = X", ("TSC_OFFSET",)),
    Row(CONTROL, "TSC Multiplier = X", ("TSC_MULTIPLIER",)),
    Row(CONTROL, "TPR Threshold = X", ("TPR_THRESHOLD",)),
    Row(CONTROL, "PostedIntrVec = X", ("POSTED_INTR_NV",)),
    Row(CONTROL, "EPT pointer = X", ("EPT_POINTER",)),
    Row(CONTROL, "PLE Gap=X Window=X", ("PLE_GAP", "PLE_WINDOW")),
    Row(CONTROL, "Virtual processor ID = X", ("VIRTUAL_PROCESSOR_ID",)),
    *(Row(CONTROL, f"target{i}=X", (f"CR3_TARGET_VALUE{i}",)) for i in range(4)),
)  # fmt: skip

KVM = LineFormat(
    NAME,
    headers={"*** Guest State ***": GUEST, "*** Host State ***": HOST,
             "*** Control State ***": CONTROL},
    rows=(
        Row(START, "^VMCS X, last attempted VM-entry on CPU X", (None, None)),
        *COMMON_ROWS,
        *(Row(GUEST, f"PDPTR{i} = X", (f"GUEST_PDPTR{i}",)) for i in range(4)),
        Row(GUEST, "^RSP = X RIP = X", ("GUEST_RSP", "GUEST_RIP")),
        Row(GUEST, "^RFLAGS=X DR7 = X", ("GUEST_RFLAGS", "GUEST_DR7")),
        *segment_rows("^{seg}: sel=X, attr=X, limit=X, base=X"),
        Row(GUEST, "^GDTR: limit=X, base=X", ("GUEST_GDTR_LIMIT", "GUEST_GDTR_BASE")),
        Row(GUEST, "^IDTR: limit=X, base=X", ("GUEST_IDTR_LIMIT", "GUEST_IDTR_BASE")),
        # 4.x "EFER = X  PAT = X" and 5.x+ "EFER= X"; "(effective)"/"(autoload)" is KVM's value
        Row(GUEST, "^EFER = X", ("GUEST_IA32_EFER",), unless=("(effective)", "(autoload)")),
        Row(GUEST, "PAT = X", ("GUEST_IA32_PAT",)),
        Row(HOST, "^RIP = X RSP = X", ("HOST_RIP", "HOST_RSP")),
        Row(CONTROL, "APIC-access addr = X", ("APIC_ACCESS_ADDR",)),
        Row(CONTROL, "virt-APIC addr = X", ("VIRTUAL_APIC_PAGE_ADDR",)),
    ),
)  # fmt: skip


parse = KVM.parse
