"""docs/entry-checks.md, derived from the check table (``scripts/gen_entry_checks_doc`` writes it,
tests/test_entry_checks_doc.py keeps it equal to ``markdown()``), and the SDM checks that are not
rows, with the reason for each."""

from __future__ import annotations

from .table import PSEUDO_VALUES, Check

__all__ = ["LEFT_OUT", "SDM_EDITION", "markdown"]

SDM_EDITION = (
    "Intel 64 and IA-32 Architectures Software Developer's Manual, Vol. 3C, chapter 27 "
    '"VM Entries", order number 325462-086US (December 2024); chapter 26 in editions before '
    "the 2023 renumbering"
)
"""The edition whose section numbers the rows cite."""

LEFT_OUT: tuple[tuple[str, str], ...] = (
    ("27.1", "#UD in real-address, virtual-8086 or compatibility mode and #GP(0) at CPL > 0: "
             "vmxsim's VMX instructions always run in 64-bit mode at CPL 0."),
    ("27.2.1.3, 27.3.1.5", "Checks that depend on SMM (entry to SMM, SMI blocking with entry to "
                           "SMM, the executive-VMCS pointer, wait-for-SIPI with entry to SMM): "
                           "vmxsim never runs in SMM, so 'entry to SMM' and 'deactivate "
                           "dual-monitor treatment' must be 0 (control.entry.smm) and blocking by "
                           "SMI must be 0 (guest.interruptibility.smi)."),
    ("27.2.3, 27.2.4", "Rules for 'host address-space size' = 0 (SS selector not 0000H, IA-32e "
                       "mode guest 0, CR4.PCIDE 0, RIP below 4 GiB): the modelled VMM runs in "
                       "IA-32e mode, where that control must be 1 (host.address_space_size), so "
                       "these can never fail alone."),
    ("27.2.1.1", "The supervisor shadow-stack bit of the EPTP (bit 7) is reserved, as in KVM's "
                 "nested_vmx_check_eptp; the PASID-translation and instruction-timeout controls "
                 "have no entry check of their own in vmxsim."),
    ("27.2.2, 27.3.1.1", "Linear-address masking (LAM) bits of CR3, CR4.FRED and the FRED rules "
                         "for event injection (injected-event data, nested exceptions): not rows "
                         "yet; the FRED MSR fields are (host.fred, guest.fred)."),
    ("27.3.1.6", "PDPTEs in memory are checked on every entry to a PAE guest without EPT (the "
                 "SDM allows skipping them when CR3 is unchanged; vmxsim always checks)."),
    ("27.4", "An MSR-load entry whose value WRMSR would refuse (#GP) or that a processor refuses "
             "'for model-specific reasons': vmxsim models no MSR's reserved bits."),
)  # fmt: skip
"""(section, what and why) for the SDM's entry checks that are not rows of ``CHECKS``."""

_STAGE_TEXT = {
    "basic": "VMfailInvalid or VMfailValid(n) before any field is checked (27.1)",
    "control": "VMfailValid(7), invalid control field (27.2.1)",
    "host": "VMfailValid(8), invalid host-state field (27.2.2-27.2.4)",
    "guest": "VM exit with basic reason 33 and bit 31 set (27.3, 27.8)",
    "msr-load": "VM exit with basic reason 34 and bit 31 set, the entry's number in the exit "
    "qualification (27.4, 27.8)",
}


def _fields(check: Check) -> str:
    return ", ".join(f"`{name}`" for name in check.fields) or "(vCPU state)"


def markdown(checks: tuple[Check, ...]) -> str:
    """The docs page listing every check: id, section, stage, outcome and the fields it reads."""
    lines = [
        "# VM-entry checks",
        "",
        "Generated from `vmxsim_server.vmx.entry_checks.CHECKS` by `scripts/gen_entry_checks_doc`;",
        "do not edit by hand (tests/test_entry_checks_doc.py compares this page with the table).",
        "",
        f"Source: {SDM_EDITION}.",
        "",
        "VMLAUNCH/VMRESUME run these checks in this order and stop at the first that fails;",
        "`vmxsim diagnose` runs all of them. A check that reads a value a dump does not show is",
        "reported as not checked, never passed or failed on a made-up value.",
        "",
        "| stage | outcome of a failure |",
        "|---|---|",
        *(f"| {stage} | {text} |" for stage, text in _STAGE_TEXT.items()),
        "",
        "The basic checks read vCPU state through pseudo-values:",
        "",
        "| pseudo-value | meaning |",
        "|---|---|",
        *(f"| `{name}` | {text.replace('``', '`')} |" for name, text in PSEUDO_VALUES.items()),
        "",
        f"{len(checks)} checks:",
        "",
        "| id | section | stage | outcome | fields read |",
        "|---|---|---|---|---|",
        *(
            f"| `{c.id}` | {c.section} | {c.stage.value} | {c.outcome} | {_fields(c)}"
            f"{' and guest memory' if c.needs_memory else ''} |"
            for c in checks
        ),
        "",
        "## SDM checks that are not rows",
        "",
        "| section | what, and why |",
        "|---|---|",
        *(f"| {section} | {why} |" for section, why in LEFT_OUT),
        "",
    ]
    return "\n".join(lines)
