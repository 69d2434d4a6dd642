"""Diagnosing a VMCS dump: its values through the same entry-check table VMLAUNCH runs.

A dump's values become a ``Values`` accessor that raises ``UnknownField`` for anything the dump
does not show, so ``evaluate`` reports those checks as not checked. Failures come most
important first: in the order the processor checks (basic, control, host, guest, MSR loading),
so the first is the outcome VM entry would give.

Capability-dependent checks use the capabilities given (a ``--capabilities`` file, or those a
snapshot carries) or else the defaults; a failure that goes away with permissive capabilities
(every control allowed, no default1 bits, the widest addresses) fails only because of them and
says so (``capability_dependent``).

The JSON document of one diagnosis (``to_doc``; the CLI's ``--json`` and the Diagnose RPC)::

    {"format": "kvm-dump_vmcs", "line": 1, "fields_read": 97, "sdm": "...",
     "verdict": "fails" | "passes" | "incomplete", "first_outcome": "VMfailValid 7" | null,
     "reported_exit_reason": 2147483681 | null, "capabilities": "default" | "given" | "dump",
     "failures": [{"check", "section", "stage", "outcome", "fields", "values", "message",
                   "capability_dependent"}],
     "not_checked": [{"check", "missing"}]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .capabilities import DEFAULT_CAPABILITIES, Capabilities
from .dumps import Dump, DumpError, read_dumps, values_dump
from .entry_checks import SDM_EDITION, Failure, Report, Stage, UnknownField, Values, evaluate
from .fields import BY_NAME, Access

__all__ = [
    "SDM_EDITION",
    "Diagnosis",
    "diagnose",
    "diagnose_input",
    "dump_values",
    "permissive",
]

_STAGE_ORDER = {stage: rank for rank, stage in enumerate(Stage)}
_U32, _U64 = (1 << 32) - 1, (1 << 64) - 1

_PERMISSIVE: dict[str, object] = {
    # every control may be 0 or 1
    **{name: 0 for name in ("pin_default1", "proc_default1", "exit_default1", "entry_default1",
                            "true_pin_default1", "true_proc_default1", "true_exit_default1",
                            "true_entry_default1")},
    **{name: _U32 for name in ("pin_allowed1", "proc_allowed1", "secondary_allowed1",
                               "exit_allowed1", "entry_allowed1", "cr0_fixed1", "cr4_fixed1")},
    **{name: _U64 for name in ("tertiary_allowed1", "exit2_allowed1", "ept_vpid_cap", "vmfunc")},
    # every MSR bit the processor might implement
    **{name: _U64 for name in ("perf_global_ctrl_valid", "debugctl_valid", "rtit_ctl_valid",
                               "lbr_ctl_valid")},
    # the widest addresses, every optional feature
    "maxphyaddr": 52, "linear_address_width": 57, "cr3_target_count": 511,
    "activity_states": 0x7, "msr_list_size": 7,
    **{name: True for name in ("vmcs_shadowing", "vmx_misc_bit29", "zero_length_injection",
                               "hardware_exception_error_code_free", "store_lma", "sgx")},
}  # fmt: skip
"""What ``permissive`` changes. CR0/CR4 fixed-0 bits stay: every VMX processor fixes PE, NE,
PG and VMXE (SDM A.7, A.8), so a dump that clears them fails on any processor."""


def permissive(caps: Capabilities) -> Capabilities:
    """``caps`` with every capability-dependent restriction lifted (see ``_PERMISSIVE``)."""
    names = {f.name for f in fields(Capabilities)}
    return caps.with_changes(**{k: v for k, v in _PERMISSIVE.items() if k in names})


def dump_values(dump: Dump) -> Values:
    """The accessor the checks read: the dump's values and pseudo-values; ``UnknownField``
    for anything else (a ``_HIGH`` name reads the high half of a known 64-bit field)."""
    values, pseudo = dump.values, dump.pseudo

    def value(name: str) -> int:
        found = values.get(name)
        if found is not None:
            return found
        found = pseudo.get(name)
        if found is not None:
            return found
        field = BY_NAME.get(name)
        if field is not None and field.access is Access.HIGH and field.full_name in values:
            return values[field.full_name] >> 32
        raise UnknownField(name)

    return value


@dataclass(frozen=True)
class Diagnosis:
    """One dump's verdict: the evaluated report and what it was evaluated with."""

    dump: Dump
    report: Report
    values: Values
    capabilities: str
    """"default", "given" (a capabilities file) or "dump" (the dump's own, e.g. a snapshot)."""
    capability_dependent: frozenset[str]
    """Ids of the failing checks that pass with permissive capabilities."""

    @property
    def failures(self) -> tuple[Failure, ...]:
        """The failures, most important (the processor's first) first."""
        return tuple(sorted(self.report.failures, key=lambda f: _STAGE_ORDER[f.check.stage]))

    @property
    def verdict(self) -> str:
        """fails (some check fails), passes (every check ran and held) or incomplete."""
        if self.report.failures:
            return "fails"
        return "incomplete" if self.report.not_checked else "passes"

    def to_doc(self) -> dict[str, Any]:
        """The JSON document of this diagnosis (module docstring)."""
        failures = self.failures
        return {
            "format": self.dump.format,
            "line": self.dump.line,
            "fields_read": len(self.dump.values),
            "sdm": SDM_EDITION,
            "verdict": self.verdict,
            "first_outcome": failures[0].outcome if failures else None,
            "reported_exit_reason": self.dump.reported_exit_reason,
            "capabilities": self.capabilities,
            "failures": [self._failure_doc(f) for f in failures],
            "not_checked": [
                {"check": n.check.id, "missing": list(n.missing)} for n in self.report.not_checked
            ],
        }

    def _failure_doc(self, failure: Failure) -> dict[str, Any]:
        names = [name for name in failure.check.fields if name in BY_NAME]
        known: dict[str, int] = {}
        for name in names:
            try:
                known[name] = self.values(name)
            except UnknownField:
                continue
        return {
            "check": failure.check.id,
            "section": failure.check.section,
            "stage": failure.check.stage.value,
            "outcome": failure.outcome,
            "fields": names,
            "values": known,
            "message": failure.message,
            "capability_dependent": failure.check.id in self.capability_dependent,
        }


def diagnose(dump: Dump, capabilities: Capabilities | None = None) -> Diagnosis:
    """Run every entry check on ``dump`` with ``capabilities`` (else the dump's own, else the
    defaults)."""
    if capabilities is not None:
        caps, source = capabilities, "given"
    elif isinstance(dump.capabilities, Capabilities):
        caps, source = dump.capabilities, "dump"
    else:
        caps, source = DEFAULT_CAPABILITIES, "default"
    values = dump_values(dump)
    launch = dump.pseudo.get("@launch_state", 0) == 0  # a clear VMCS is entered by VMLAUNCH
    report = evaluate(values, caps, dump.memory, launch=launch)
    dependent: frozenset[str] = frozenset()
    if report.failures:
        lenient = evaluate(values, permissive(caps), dump.memory, launch=launch)
        still = {f.check.id for f in lenient.failures}
        dependent = frozenset(f.check.id for f in report.failures if f.check.id not in still)
    return Diagnosis(dump, report, values, source, dependent)


def diagnose_input(
    dump: bytes | str | None = None,
    values: Mapping[str, object] | None = None,
    format: str | None = None,
    capabilities: Capabilities | None = None,
) -> list[Diagnosis]:
    """Read a dump (or field values) and diagnose every VMCS in it, in order."""
    if values and dump:
        raise DumpError("give a dump or field values, not both")
    dumps = [values_dump(values)] if values else read_dumps(dump or b"", format)
    return [diagnose(found, capabilities) for found in dumps]
