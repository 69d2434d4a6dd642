"""One example per VM-entry check: the overrides that break exactly that check, starting from
``valid_state(caps)``, with the capabilities, guest memory and vCPU state the example needs.

Used by tests/test_entry_checks.py (and importable by other tests). Every ``Check`` in
``CHECKS`` must have a row here; tests/test_entry_checks.py fails for a check without one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vmxsim_server.vmx.capabilities import DEFAULT_CAPABILITIES, EVERY_FEATURE, Capabilities

State = dict[str, int]

D = DEFAULT_CAPABILITIES
EVERY = EVERY_FEATURE
SHADOWING = Capabilities(vmcs_shadowing=True)
VMCS_REGION = 0x2000  # as tests/conftest.py's make_root_vcpu


@dataclass(frozen=True)
class Example:
    """``change(state)`` gives the overrides; ``memory`` 32-bit words; ``vcpu`` pseudo-values."""

    change: Callable[[State], State]
    caps: Capabilities = D
    memory: dict[int, int] = field(default_factory=dict)
    vcpu: dict[str, int] = field(default_factory=dict)
    resume: bool = False


def ex(change: Callable[[State], State] | State = {}, **kwargs: object) -> Example:  # noqa: B006
    fn = change if callable(change) else (lambda s, fixed=dict(change): dict(fixed))
    return Example(fn, **kwargs)  # type: ignore[arg-type]


def proc(s: State, bits: int) -> State:
    return {"CPU_BASED_VM_EXEC_CONTROL": s["CPU_BASED_VM_EXEC_CONTROL"] | bits}


def sec(s: State, bits: int, keep: bool = True) -> State:
    base = s["SECONDARY_VM_EXEC_CONTROL"] if keep else 0
    return {"SECONDARY_VM_EXEC_CONTROL": base | bits}


def pin(s: State, bits: int) -> State:
    return {"PIN_BASED_VM_EXEC_CONTROL": s["PIN_BASED_VM_EXEC_CONTROL"] | bits}


def exits(s: State, bits: int, clear: int = 0) -> State:
    return {"VM_EXIT_CONTROLS": (s["VM_EXIT_CONTROLS"] | bits) & ~clear}


def entry(s: State, bits: int, clear: int = 0) -> State:
    return {"VM_ENTRY_CONTROLS": (s["VM_ENTRY_CONTROLS"] | bits) & ~clear}


def tertiary(s: State, bits: int) -> State:
    return {**proc(s, 1 << 17), "TERTIARY_VM_EXEC_CONTROL": bits}


def legacy(s: State) -> State:
    """A 32-bit protected-mode guest (not IA-32e mode) with PAE paging."""
    return {**entry(s, 0, 1 << 9), "GUEST_IA32_EFER": 0}


def v86(s: State) -> State:
    """Virtual-8086 segments (base = selector * 16, limit FFFFH, access rights F3H)."""
    out: State = {"GUEST_RFLAGS": 0x2_0002}
    for i, seg in enumerate(("CS", "SS", "DS", "ES", "FS", "GS")):
        selector = 0x100 + i * 0x10
        out |= {f"GUEST_{seg}_SELECTOR": selector, f"GUEST_{seg}_BASE": selector << 4,
                f"GUEST_{seg}_LIMIT": 0xFFFF, f"GUEST_{seg}_AR_BYTES": 0xF3}  # fmt: skip
    return out


def ldtr(access_rights: int, **extra: int) -> State:
    return {"GUEST_LDTR_SELECTOR": 0x50, "GUEST_LDTR_BASE": 0, "GUEST_LDTR_LIMIT": 0xFFFF,
            "GUEST_LDTR_AR_BYTES": access_rights, **extra}  # fmt: skip


TPR = 1 << 21
VAPIC = {"VIRTUAL_APIC_PAGE_ADDR": 0x5000}
POSTED = {"POSTED_INTR_NV": 0xF2, "POSTED_INTR_DESC_ADDR": 0x6000}
TERTIARY_ONLY_HLAT = Capabilities(proc_allowed1=D.proc_allowed1 | 1 << 17, tertiary_allowed1=2)
EXIT2 = Capabilities(exit_allowed1=D.exit_allowed1 | 1 << 31, exit2_allowed1=0x2)
NO_EPT_AD = Capabilities(ept_vpid_cap=D.ept_vpid_cap & ~(1 << 21))
NO_ACTIVITY_STATES = Capabilities(activity_states=0)
BAD_PAT = 0x0007_0406_0007_0402  # byte 0 = 2, a reserved memory type
NMI, EXTERNAL_32, GP_NO_CODE = 0x8000_0202, 0x8000_0020, 0x8000_030D
LINK_HEADER_ADDRESS = 0x3000
MSR_AREA = 0x4000

EXAMPLES: dict[str, Example] = {
    # --- basic (27.1): vCPU state
    "basic.current_vmcs": ex(vcpu={"@current_vmcs": 0}),
    "basic.shadow_vmcs": ex(caps=SHADOWING, vcpu={"@shadow_indicator": 1}),
    "basic.mov_ss_blocking": ex(vcpu={"@mov_ss_blocking": 1}),
    "basic.launch_state.clear": ex(vcpu={"@launch_state": 1}),
    "basic.launch_state.launched": ex(resume=True, vcpu={"@launch_state": 0}),
    "basic.vmxoff_since_launch": ex(resume=True, vcpu={"@vmxon_epoch_ok": 0}),
    # --- VM-execution controls (27.2.1.1)
    "control.pin.allowed": ex(lambda s: {"PIN_BASED_VM_EXEC_CONTROL": 0x14}),
    "control.proc.allowed": ex(lambda s: proc(s, 1)),
    "control.secondary.allowed": ex(lambda s: sec(s, 1 << 31)),
    "control.tertiary.allowed": ex(lambda s: tertiary(s, 1), caps=TERTIARY_ONLY_HLAT),
    "control.cr3_target_count": ex({"CR3_TARGET_COUNT": 5}),
    "control.io_bitmaps": ex(lambda s: proc(s, 1 << 25) | {"IO_BITMAP_A": 0x1001}),
    "control.msr_bitmap": ex(lambda s: proc(s, 1 << 28) | {"MSR_BITMAP": 0x1008}),
    "control.tpr_shadow.virtual_apic_page":
        ex(lambda s: proc(s, TPR) | {"VIRTUAL_APIC_PAGE_ADDR": 0x10}),
    "control.tpr_shadow.threshold": ex(lambda s: proc(s, TPR) | VAPIC | {"TPR_THRESHOLD": 0x10}),
    "control.tpr_shadow.vtpr": ex(lambda s: proc(s, TPR) | VAPIC | {"TPR_THRESHOLD": 5},
                                  memory={0x5080: 0x40}),
    "control.tpr_shadow.required": ex(lambda s: sec(s, 1 << 4)),
    "control.virtual_nmis": ex(lambda s: pin(s, 1 << 5)),
    "control.nmi_window": ex(lambda s: proc(s, 1 << 22)),
    "control.apic_access_page": ex(lambda s: sec(s, 1) | {"APIC_ACCESS_ADDR": 0x123}),
    "control.x2apic_mode": ex(lambda s: proc(s, TPR) | VAPIC | sec(s, 1 << 4 | 1)
                              | {"APIC_ACCESS_ADDR": 0x6000}),
    "control.virtual_interrupt_delivery": ex(lambda s: proc(s, TPR) | VAPIC | sec(s, 1 << 9)),
    "control.posted_interrupts.controls": ex(lambda s: pin(s, 1 << 7)),
    "control.posted_interrupts.vector": ex(
        lambda s: pin(s, 1 | 1 << 7) | proc(s, TPR) | VAPIC | sec(s, 1 << 9) | exits(s, 1 << 15)
        | POSTED | {"POSTED_INTR_NV": 0x100}),
    "control.posted_interrupts.descriptor": ex(
        lambda s: pin(s, 1 | 1 << 7) | proc(s, TPR) | VAPIC | sec(s, 1 << 9) | exits(s, 1 << 15)
        | POSTED | {"POSTED_INTR_DESC_ADDR": 0x6008}),
    "control.vpid": ex(lambda s: sec(s, 1 << 5) | {"VIRTUAL_PROCESSOR_ID": 0}),
    "control.eptp.memory_type": ex({"EPT_POINTER": 0x1000 | 3 << 3 | 1}),
    "control.eptp.walk_length": ex({"EPT_POINTER": 0x1000 | 1 << 3 | 6}),
    "control.eptp.accessed_dirty": ex({"EPT_POINTER": 0x1000 | 1 << 6 | 3 << 3 | 6},
                                      caps=NO_EPT_AD),
    "control.eptp.reserved": ex({"EPT_POINTER": 0x1000 | 1 << 8 | 3 << 3 | 6}),
    "control.pml.ept": ex(lambda s: sec(s, 1 << 17, keep=False)),
    "control.pml.address": ex(lambda s: sec(s, 1 << 17) | {"PML_ADDRESS": 0x10}),
    "control.unrestricted_guest.ept": ex(lambda s: sec(s, 1 << 7, keep=False)),
    "control.mode_based_ept.ept": ex(lambda s: sec(s, 1 << 22, keep=False)),
    "control.spp.ept": ex(lambda s: sec(s, 1 << 23, keep=False)),
    "control.spp.pointer": ex(lambda s: sec(s, 1 << 23) | {"SPPTP": 0x10}),
    "control.pt_guest_physical": ex(lambda s: sec(s, 1 << 24)),
    "control.vmfunc.allowed": ex(lambda s: sec(s, 1 << 13) | {"VM_FUNCTION_CONTROL": 2}),
    "control.vmfunc.eptp_switching":
        ex(lambda s: sec(s, 1 << 13) | {"VM_FUNCTION_CONTROL": 1, "EPTP_LIST_ADDRESS": 0x10}),
    "control.vmcs_shadowing.bitmaps": ex(
        lambda s: sec(s, 1 << 14) | {"VMREAD_BITMAP": 0x10, "VMWRITE_BITMAP": 0x3000},
        caps=SHADOWING),
    "control.ept_violation_ve": ex(lambda s: sec(s, 1 << 18) | {"VE_INFORMATION_ADDRESS": 0x10}),
    "control.hlat.ept": ex(lambda s: tertiary(s, 2) | sec(s, 0, keep=False), caps=EVERY),
    "control.hlat.pointer": ex(lambda s: tertiary(s, 2) | {"HLATP": 0x1001}, caps=EVERY),
    "control.ept_paging_write.ept": ex(lambda s: tertiary(s, 1 << 2) | sec(s, 0, keep=False),
                                       caps=EVERY),
    "control.ipi_virtualization":
        ex(lambda s: tertiary(s, 1 << 4) | {"PID_POINTER_TABLE": 0x1004}, caps=EVERY),
    # --- VM-exit controls (27.2.1.2)
    "control.exit.allowed": ex(lambda s: exits(s, 0, clear=1)),
    "control.exit2.allowed": ex(lambda s: exits(s, 1 << 31) | {"SECONDARY_VM_EXIT_CONTROLS": 1},
                                caps=EXIT2),
    "control.exit.preemption_timer": ex(lambda s: exits(s, 1 << 22), caps=EVERY),
    "control.exit.msr_store":
        ex({"VM_EXIT_MSR_STORE_COUNT": 1, "VM_EXIT_MSR_STORE_ADDR": 0x1008}),
    "control.exit.msr_load": ex({"VM_EXIT_MSR_LOAD_COUNT": 1, "VM_EXIT_MSR_LOAD_ADDR": 0x1004}),
    # --- VM-entry controls (27.2.1.3)
    "control.entry.allowed": ex(lambda s: entry(s, 0, clear=1)),
    "control.entry.event.type": ex({"VM_ENTRY_INTR_INFO_FIELD": 0x8000_0100}),
    "control.entry.event.vector": ex({"VM_ENTRY_INTR_INFO_FIELD": 0x8000_0320}),
    "control.entry.event.deliver_error_code": ex({"VM_ENTRY_INTR_INFO_FIELD": GP_NO_CODE}),
    "control.entry.event.reserved": ex({"VM_ENTRY_INTR_INFO_FIELD": 0x8000_1303}),
    "control.entry.event.error_code":
        ex({"VM_ENTRY_INTR_INFO_FIELD": 0x8000_0B0D, "VM_ENTRY_EXCEPTION_ERROR_CODE": 0x1_0000}),
    "control.entry.event.instruction_length":
        ex({"VM_ENTRY_INTR_INFO_FIELD": 0x8000_0603, "VM_ENTRY_INSTRUCTION_LEN": 16}),
    "control.entry.msr_load":
        ex({"VM_ENTRY_MSR_LOAD_COUNT": 1, "VM_ENTRY_MSR_LOAD_ADDR": 0x4008}),
    "control.entry.smm": ex(lambda s: entry(s, 1 << 10)),
    # --- host state (27.2.2-27.2.4)
    "host.cr0.fixed": ex(lambda s: {"HOST_CR0": s["HOST_CR0"] & ~1}),
    "host.cr4.fixed": ex(lambda s: {"HOST_CR4": s["HOST_CR4"] | 1 << 12}),
    "host.cr3.width": ex({"HOST_CR3": 1 << 46}),
    "host.cr4.cet_wp":
        ex(lambda s: {"HOST_CR4": s["HOST_CR4"] | 1 << 23, "HOST_CR0": s["HOST_CR0"] & ~(1 << 16)}),
    "host.cet.s_cet": ex(lambda s: exits(s, 1 << 28) | {"HOST_S_CET": 0x40}, caps=EVERY),
    "host.cet.ssp": ex(lambda s: exits(s, 1 << 28) | {"HOST_SSP": 0x1001}, caps=EVERY),
    "host.cet.interrupt_ssp_table":
        ex(lambda s: exits(s, 1 << 28) | {"HOST_INTR_SSP_TABLE": 1 << 47}, caps=EVERY),
    "host.sysenter.canonical": ex({"HOST_IA32_SYSENTER_EIP": 1 << 47}),
    "host.perf_global_ctrl":
        ex(lambda s: exits(s, 1 << 12) | {"HOST_IA32_PERF_GLOBAL_CTRL": 1 << 63}),
    "host.pat": ex(lambda s: exits(s, 1 << 19) | {"HOST_IA32_PAT": BAD_PAT}),
    "host.efer.reserved": ex(lambda s: {"HOST_IA32_EFER": s["HOST_IA32_EFER"] | 2}),
    "host.efer.lma_lme": ex(lambda s: {"HOST_IA32_EFER": s["HOST_IA32_EFER"] & ~(1 << 10)}),
    "host.pkrs": ex(lambda s: exits(s, 1 << 29) | {"HOST_IA32_PKRS": 1 << 32}, caps=EVERY),
    "host.fred": ex(lambda s: exits(s, 1 << 31) | {"SECONDARY_VM_EXIT_CONTROLS": 2,
                                                   "HOST_IA32_FRED_RSP2": 0x1008}, caps=EVERY),
    "host.selectors.rpl_ti": ex({"HOST_DS_SELECTOR": 3}),
    "host.selectors.cs_tr": ex({"HOST_TR_SELECTOR": 0}),
    "host.bases.canonical": ex({"HOST_GS_BASE": 1 << 47}),
    "host.address_space_size": ex(lambda s: exits(s, 0, clear=1 << 9) | {"HOST_IA32_EFER": 1}),
    "host.cr4.pae": ex(lambda s: {"HOST_CR4": s["HOST_CR4"] & ~(1 << 5)}),
    "host.rip.canonical": ex({"HOST_RIP": 1 << 47}),
    # --- guest control registers, debug registers and MSRs (27.3.1.1)
    "guest.cr0.fixed": ex(lambda s: {"GUEST_CR0": s["GUEST_CR0"] & ~(1 << 5)}),
    "guest.cr0.pg_pe": ex(lambda s: sec(s, 1 << 7) | {"GUEST_CR0": s["GUEST_CR0"] & ~1}),
    "guest.cr4.fixed": ex(lambda s: {"GUEST_CR4": s["GUEST_CR4"] & ~(1 << 13)}),
    "guest.cr4.cet_wp": ex(lambda s: {"GUEST_CR4": s["GUEST_CR4"] | 1 << 23,
                                      "GUEST_CR0": s["GUEST_CR0"] & ~(1 << 16)}),
    "guest.debugctl": ex(lambda s: entry(s, 1 << 2) | {"GUEST_IA32_DEBUGCTL": 1 << 2}),
    "guest.ia32e.paging": ex(lambda s: {"GUEST_CR4": s["GUEST_CR4"] & ~(1 << 5)}),
    "guest.cr4.pcide": ex(lambda s: legacy(s) | {"GUEST_CR4": s["GUEST_CR4"] | 1 << 17}),
    "guest.cr3.width": ex({"GUEST_CR3": 1 << 46}),
    "guest.dr7": ex(lambda s: entry(s, 1 << 2) | {"GUEST_DR7": 1 << 32 | 0x400}),
    "guest.sysenter.canonical": ex({"GUEST_SYSENTER_ESP": 1 << 47}),
    "guest.cet.s_cet": ex(lambda s: entry(s, 1 << 20) | {"GUEST_S_CET": 0x40}, caps=EVERY),
    "guest.cet.interrupt_ssp_table":
        ex(lambda s: entry(s, 1 << 20) | {"GUEST_INTR_SSP_TABLE": 1 << 47}, caps=EVERY),
    "guest.perf_global_ctrl":
        ex(lambda s: entry(s, 1 << 13) | {"GUEST_IA32_PERF_GLOBAL_CTRL": 1 << 63}),
    "guest.pat": ex(lambda s: entry(s, 1 << 14) | {"GUEST_IA32_PAT": BAD_PAT}),
    "guest.efer.reserved": ex(lambda s: {"GUEST_IA32_EFER": s["GUEST_IA32_EFER"] | 2}),
    "guest.efer.lma": ex({"GUEST_IA32_EFER": 0}),
    "guest.efer.lme": ex({"GUEST_IA32_EFER": 1 << 10}),
    "guest.bndcfgs": ex(lambda s: entry(s, 1 << 16) | {"GUEST_BNDCFGS": 4}, caps=EVERY),
    "guest.rtit_ctl":
        ex(lambda s: entry(s, 1 << 18) | {"GUEST_IA32_RTIT_CTL": 1 << 63}, caps=EVERY),
    "guest.fred": ex(lambda s: entry(s, 1 << 23) | {"GUEST_IA32_FRED_CONFIG": 1 << 2},
                     caps=EVERY),
    "guest.uinv": ex(lambda s: entry(s, 1 << 19) | {"GUEST_UINV": 0x100}, caps=EVERY),
    "guest.pkrs": ex(lambda s: entry(s, 1 << 22) | {"GUEST_IA32_PKRS": 1 << 32}, caps=EVERY),
    "guest.lbr_ctl":
        ex(lambda s: entry(s, 1 << 21) | {"GUEST_IA32_LBR_CTL": 1 << 63}, caps=EVERY),
    # --- guest segment registers (27.3.1.2)
    "guest.tr.ti": ex({"GUEST_TR_SELECTOR": 0x44}),
    "guest.ldtr.ti": ex(ldtr(0x82, GUEST_LDTR_SELECTOR=0x54)),
    "guest.ss.rpl": ex({"GUEST_CS_SELECTOR": 0x13}),
    "guest.v86.bases": ex(lambda s: legacy(s) | v86(s) | {"GUEST_DS_BASE": 0x1201}),
    "guest.bases.canonical": ex({"GUEST_FS_BASE": 1 << 47}),
    "guest.ldtr.base": ex(ldtr(0x82, GUEST_LDTR_BASE=1 << 47)),
    "guest.cs.base": ex({"GUEST_CS_BASE": 1 << 32}),
    "guest.bases.high": ex({"GUEST_DS_BASE": 1 << 32}),
    "guest.v86.limits": ex(lambda s: legacy(s) | v86(s) | {"GUEST_DS_LIMIT": 0xF_FFFF}),
    "guest.v86.access_rights": ex(lambda s: legacy(s) | v86(s) | {"GUEST_DS_AR_BYTES": 0xF1}),
    "guest.cs.type": ex({"GUEST_CS_AR_BYTES": 0xA093}),
    "guest.ss.type": ex({"GUEST_SS_AR_BYTES": 0xC09B}),
    "guest.data.type": ex({"GUEST_DS_AR_BYTES": 0xC092}),
    "guest.segments.s": ex({"GUEST_DS_AR_BYTES": 0xC083}),
    "guest.cs.dpl": ex({"GUEST_CS_AR_BYTES": 0xA0BB}),
    "guest.ss.dpl": ex({"GUEST_SS_SELECTOR": 0x19, "GUEST_CS_SELECTOR": 0x11}),
    "guest.data.dpl": ex({"GUEST_DS_SELECTOR": 0x1B}),
    "guest.segments.present": ex({"GUEST_DS_AR_BYTES": 0xC013}),
    "guest.segments.reserved": ex({"GUEST_DS_AR_BYTES": 0xC193}),
    "guest.cs.l_db": ex({"GUEST_CS_AR_BYTES": 0xE09B}),
    "guest.segments.granularity": ex({"GUEST_DS_LIMIT": 0x0FFF_F000}),
    "guest.tr.type": ex({"GUEST_TR_AR_BYTES": 0x83}),
    "guest.tr.s": ex({"GUEST_TR_AR_BYTES": 0x9B}),
    "guest.tr.present": ex({"GUEST_TR_AR_BYTES": 0x0B}),
    "guest.tr.reserved": ex({"GUEST_TR_AR_BYTES": 0x18B}),
    "guest.tr.granularity": ex({"GUEST_TR_AR_BYTES": 0x808B}),
    "guest.tr.unusable": ex({"GUEST_TR_AR_BYTES": 0x1_008B}),
    "guest.ldtr.type": ex(ldtr(0x83)),
    "guest.ldtr.s": ex(ldtr(0x92)),
    "guest.ldtr.present": ex(ldtr(0x02)),
    "guest.ldtr.reserved": ex(ldtr(0x182)),
    "guest.ldtr.granularity": ex(ldtr(0x82, GUEST_LDTR_LIMIT=0x10_0000)),
    # --- GDTR and IDTR (27.3.1.3)
    "guest.gdtr_idtr.canonical": ex({"GUEST_GDTR_BASE": 1 << 47}),
    "guest.gdtr_idtr.limit": ex({"GUEST_IDTR_LIMIT": 0x1_0000}),
    # --- RIP, RFLAGS, SSP (27.3.1.4)
    "guest.rip.high": ex({"GUEST_CS_AR_BYTES": 0xC09B, "GUEST_RIP": 1 << 32}),
    "guest.rip.canonical": ex({"GUEST_RIP": 1 << 47}),
    "guest.rflags.reserved": ex({"GUEST_RFLAGS": 0xA}),
    "guest.rflags.vm": ex(v86),
    "guest.rflags.if_injection": ex({"VM_ENTRY_INTR_INFO_FIELD": EXTERNAL_32}),
    "guest.ssp": ex(lambda s: entry(s, 1 << 20) | {"GUEST_SSP": 0x1001}, caps=EVERY),
    # --- activity and interruptibility state, pending debug exceptions (27.3.1.5)
    "guest.activity.range": ex({"GUEST_ACTIVITY_STATE": 4}),
    "guest.activity.supported": ex({"GUEST_ACTIVITY_STATE": 1}, caps=NO_ACTIVITY_STATES),
    "guest.activity.hlt_dpl": ex({"GUEST_ACTIVITY_STATE": 1, "GUEST_SS_SELECTOR": 0x1B,
                                  "GUEST_SS_AR_BYTES": 0xC0F3, "GUEST_CS_SELECTOR": 0x13,
                                  "GUEST_CS_AR_BYTES": 0xA0FB}),
    "guest.activity.blocking": ex({"GUEST_ACTIVITY_STATE": 1, "GUEST_INTERRUPTIBILITY_INFO": 2}),
    "guest.activity.injection": ex({"GUEST_ACTIVITY_STATE": 3, "VM_ENTRY_INTR_INFO_FIELD": NMI}),
    "guest.interruptibility.reserved": ex({"GUEST_INTERRUPTIBILITY_INFO": 1 << 5}),
    "guest.interruptibility.sti_mov_ss":
        ex({"GUEST_INTERRUPTIBILITY_INFO": 3, "GUEST_RFLAGS": 0x202}),
    "guest.interruptibility.sti_if": ex({"GUEST_INTERRUPTIBILITY_INFO": 1}),
    "guest.interruptibility.external_interrupt": ex(
        {"GUEST_INTERRUPTIBILITY_INFO": 2, "GUEST_RFLAGS": 0x202,
         "VM_ENTRY_INTR_INFO_FIELD": EXTERNAL_32}),
    "guest.interruptibility.nmi_mov_ss":
        ex({"GUEST_INTERRUPTIBILITY_INFO": 2, "VM_ENTRY_INTR_INFO_FIELD": NMI}),
    "guest.interruptibility.nmi_sti": ex({"GUEST_INTERRUPTIBILITY_INFO": 1, "GUEST_RFLAGS": 0x202,
                                          "VM_ENTRY_INTR_INFO_FIELD": NMI}),
    "guest.interruptibility.smi": ex({"GUEST_INTERRUPTIBILITY_INFO": 4}),
    "guest.interruptibility.virtual_nmi": ex(
        lambda s: pin(s, 1 << 3 | 1 << 5)
        | {"GUEST_INTERRUPTIBILITY_INFO": 8, "VM_ENTRY_INTR_INFO_FIELD": NMI}),
    "guest.interruptibility.enclave": ex({"GUEST_INTERRUPTIBILITY_INFO": 1 << 4}),
    "guest.pending_debug.reserved": ex({"GUEST_PENDING_DBG_EXCEPTIONS": 1 << 4}),
    "guest.pending_debug.bs": ex({"GUEST_INTERRUPTIBILITY_INFO": 2, "GUEST_RFLAGS": 0x102}),
    "guest.pending_debug.rtm": ex({"GUEST_PENDING_DBG_EXCEPTIONS": 1 << 16}),
    # --- VMCS link pointer (27.3.1.5)
    "guest.link_pointer.address": ex({"VMCS_LINK_POINTER": 0x1001}),
    "guest.link_pointer.header": ex({"VMCS_LINK_POINTER": LINK_HEADER_ADDRESS},
                                    memory={LINK_HEADER_ADDRESS: 0x1234}),
    "guest.link_pointer.current": ex({"VMCS_LINK_POINTER": VMCS_REGION}),
    # --- PDPTEs (27.3.1.6)
    "guest.pdpte.memory": ex(lambda s: legacy(s) | sec(s, 0, keep=False),
                             memory={0x20_0000: 0x3}),
    "guest.pdpte.fields": ex(lambda s: legacy(s) | {"GUEST_PDPTR2": 0x3}),
    # --- MSR loading (27.4)
    "msr_load.entry": ex({"VM_ENTRY_MSR_LOAD_COUNT": 2, "VM_ENTRY_MSR_LOAD_ADDR": MSR_AREA},
                         memory={MSR_AREA: 0x10, MSR_AREA + 16: 0xC000_0100}),
}  # fmt: skip
