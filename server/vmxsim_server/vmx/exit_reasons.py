"""The basic exit reasons of Intel SDM Vol. 3D Appendix C, with the names trace tools print.

Names are Linux's (``arch/x86/include/uapi/asm/vmx.h``, ``EXIT_REASON_*`` without the prefix), the
spelling ``kvm_exit`` trace events print since Linux 2.6.3x's upper-case ``VMX_EXIT_REASONS``.
Synonyms cover other producers:
- old Linux (2.6.3x ``vmx_exit_reasons_str``): lower-case ``exception``, ``ext_irq``, ``halt``,
  ``hypercall``, ``rdmsr``, ``wrmsr``, ``interrupt_window``, ``tpr_below_thres``, ...;
- Linux before 5.x: ``PENDING_INTERRUPT`` (now ``INTERRUPT_WINDOW``), ``VMOFF``/``VMON``;
- VirtualBox (``VMX_EXIT_*``), bcc kvmexit (``EXIT_REASON_*``), and plain numbers.
Lookup ignores case and the ``EXIT_REASON_``/``VMX_EXIT_`` prefixes (a bare ``EXIT_`` is AMD SVM's
spelling, e.g. ``EXIT_NPF``, ``EXIT_CPUID``, and stays unknown). Reasons 35, 38, 42 and 71
are not defined by the SDM and are absent. Bit 31 of the exit-reason field (VM-entry failure) is
not part of the basic reason.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BY_NUMBER", "ENTRY_FAILURE", "EXIT_REASONS", "ExitReason", "lookup_reason"]

ENTRY_FAILURE = 1 << 31
"""Bit 31 of VM_EXIT_REASON: the exit is a failed VM entry (SDM 25.9.1)."""


@dataclass(frozen=True, slots=True)
class ExitReason:
    """One basic exit reason: its number, Linux name, SDM description and other spellings."""

    number: int
    name: str
    description: str
    synonyms: tuple[str, ...] = ()


EXIT_REASONS: tuple[ExitReason, ...] = (
    ExitReason(0, "EXCEPTION_NMI", "Exception or non-maskable interrupt",
               ("EXCEPTION", "XCPT_OR_NMI", "EXCEPTION_OR_NMI")),
    ExitReason(1, "EXTERNAL_INTERRUPT", "External interrupt", ("EXT_IRQ", "EXT_INT", "IRQ")),
    ExitReason(2, "TRIPLE_FAULT", "Triple fault"),
    ExitReason(3, "INIT_SIGNAL", "INIT signal", ("INIT",)),
    ExitReason(4, "SIPI_SIGNAL", "Start-up IPI", ("SIPI",)),
    ExitReason(5, "IO_SMI", "I/O system-management interrupt"),
    ExitReason(6, "OTHER_SMI", "Other SMI", ("SMI",)),
    ExitReason(7, "INTERRUPT_WINDOW", "Interrupt window",
               ("PENDING_INTERRUPT", "INT_WINDOW", "IRQ_WINDOW")),
    ExitReason(8, "NMI_WINDOW", "NMI window"),
    ExitReason(9, "TASK_SWITCH", "Task switch", ("TASKSW",)),
    ExitReason(10, "CPUID", "CPUID"),
    ExitReason(11, "GETSEC", "GETSEC"),
    ExitReason(12, "HLT", "HLT", ("HALT",)),
    ExitReason(13, "INVD", "INVD"),
    ExitReason(14, "INVLPG", "INVLPG"),
    ExitReason(15, "RDPMC", "RDPMC"),
    ExitReason(16, "RDTSC", "RDTSC"),
    ExitReason(17, "RSM", "RSM in SMM"),
    ExitReason(18, "VMCALL", "VMCALL", ("HYPERCALL",)),
    ExitReason(19, "VMCLEAR", "VMCLEAR"),
    ExitReason(20, "VMLAUNCH", "VMLAUNCH"),
    ExitReason(21, "VMPTRLD", "VMPTRLD"),
    ExitReason(22, "VMPTRST", "VMPTRST"),
    ExitReason(23, "VMREAD", "VMREAD"),
    ExitReason(24, "VMRESUME", "VMRESUME"),
    ExitReason(25, "VMWRITE", "VMWRITE"),
    ExitReason(26, "VMOFF", "VMXOFF", ("VMXOFF",)),
    ExitReason(27, "VMON", "VMXON", ("VMXON",)),
    ExitReason(28, "CR_ACCESS", "Control-register access", ("MOV_CRX", "CR")),
    ExitReason(29, "DR_ACCESS", "MOV DR", ("MOV_DRX", "DR")),
    ExitReason(30, "IO_INSTRUCTION", "I/O instruction", ("PORT_IO", "IO")),
    ExitReason(31, "MSR_READ", "RDMSR", ("RDMSR",)),
    ExitReason(32, "MSR_WRITE", "WRMSR", ("WRMSR",)),
    ExitReason(33, "INVALID_STATE", "VM-entry failure due to invalid guest state",
               ("ERR_INVALID_GUEST_STATE", "INVALID_GUEST_STATE")),
    ExitReason(34, "MSR_LOAD_FAIL", "VM-entry failure due to MSR loading", ("ERR_MSR_LOAD",)),
    ExitReason(36, "MWAIT_INSTRUCTION", "MWAIT", ("MWAIT",)),
    ExitReason(37, "MONITOR_TRAP_FLAG", "Monitor trap flag", ("MTF",)),
    ExitReason(39, "MONITOR_INSTRUCTION", "MONITOR", ("MONITOR",)),
    ExitReason(40, "PAUSE_INSTRUCTION", "PAUSE", ("PAUSE",)),
    ExitReason(41, "MCE_DURING_VMENTRY", "VM-entry failure due to machine-check event",
               ("ERR_MACHINE_CHECK",)),
    ExitReason(43, "TPR_BELOW_THRESHOLD", "TPR below threshold",
               ("TPR_BELOW_THRES", "TPR_BELOW_THRESHOLD")),
    ExitReason(44, "APIC_ACCESS", "APIC access"),
    ExitReason(45, "EOI_INDUCED", "Virtualized EOI", ("VIRTUALIZED_EOI",)),
    ExitReason(46, "GDTR_IDTR", "Access to GDTR or IDTR", ("XDTR_ACCESS",)),
    ExitReason(47, "LDTR_TR", "Access to LDTR or TR", ("TR_ACCESS",)),
    ExitReason(48, "EPT_VIOLATION", "EPT violation"),
    ExitReason(49, "EPT_MISCONFIG", "EPT misconfiguration"),
    ExitReason(50, "INVEPT", "INVEPT"),
    ExitReason(51, "RDTSCP", "RDTSCP"),
    ExitReason(52, "PREEMPTION_TIMER", "VMX-preemption timer expired", ("PREEMPT_TIMER",)),
    ExitReason(53, "INVVPID", "INVVPID"),
    ExitReason(54, "WBINVD", "WBINVD or WBNOINVD"),
    ExitReason(55, "XSETBV", "XSETBV"),
    ExitReason(56, "APIC_WRITE", "APIC write"),
    ExitReason(57, "RDRAND", "RDRAND"),
    ExitReason(58, "INVPCID", "INVPCID"),
    ExitReason(59, "VMFUNC", "VMFUNC"),
    ExitReason(60, "ENCLS", "ENCLS"),
    ExitReason(61, "RDSEED", "RDSEED"),
    ExitReason(62, "PML_FULL", "Page-modification log full"),
    ExitReason(63, "XSAVES", "XSAVES"),
    ExitReason(64, "XRSTORS", "XRSTORS"),
    ExitReason(65, "PCONFIG", "PCONFIG"),
    ExitReason(66, "SPP", "SPP-related event", ("SPP_EVENT",)),
    ExitReason(67, "UMWAIT", "UMWAIT"),
    ExitReason(68, "TPAUSE", "TPAUSE"),
    ExitReason(69, "LOADIWKEY", "LOADIWKEY"),
    ExitReason(70, "ENCLV", "ENCLV"),
    ExitReason(72, "ENQCMD_PASID", "ENQCMD PASID translation failure"),
    ExitReason(73, "ENQCMDS_PASID", "ENQCMDS PASID translation failure"),
    ExitReason(74, "BUS_LOCK", "Bus lock"),
    ExitReason(75, "NOTIFY", "Instruction timeout"),
    ExitReason(76, "SEAMCALL", "SEAMCALL"),
    ExitReason(77, "TDCALL", "TDCALL"),
)  # fmt: skip

BY_NUMBER: dict[int, ExitReason] = {r.number: r for r in EXIT_REASONS}
_BY_SPELLING: dict[str, ExitReason] = {
    spelling: reason for reason in EXIT_REASONS for spelling in (reason.name, *reason.synonyms)
}
_PREFIXES = ("EXIT_REASON_", "VMX_EXIT_")  # not a bare EXIT_: that is SVM (EXIT_CPUID, EXIT_NPF)


def lookup_reason(key: str | int) -> ExitReason | None:
    """Find a basic exit reason by number, name or synonym in any case; None when unknown.

    A number may carry the entry-failure bit 31; it is ignored (the basic reason is bits 15:0).
    """
    if isinstance(key, int):
        return BY_NUMBER.get(key & 0xFFFF)
    text = key.strip().upper()
    if not text:
        return None
    if text[0].isdigit():
        try:
            return BY_NUMBER.get(int(text, 0) & 0xFFFF)
        except ValueError:
            return None
    found = _BY_SPELLING.get(text)
    if found is None:
        for prefix in _PREFIXES:
            if text.startswith(prefix):
                found = _BY_SPELLING.get(text[len(prefix) :])
                if found is not None:
                    break
    return found
