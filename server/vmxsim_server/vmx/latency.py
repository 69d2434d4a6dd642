"""The latency model: the simulated cost of one VM exit from the VMX instructions it executed.

Modes (DESIGN.md "The core" 8):
- ``native``: the hypervisor runs on hardware. An exit costs the exit+entry round trip, the
  handler's work for its reason, and the native cost of every VMREAD, VMWRITE, VMPTRLD, VMCLEAR,
  VMXON and VMXOFF it executed.
- ``nested``: the hypervisor is L1 under an L0 hypervisor without VMCS shadowing. An L2 exit
  costs the nested base (reflect to L1 and resume, no VMCS traps), the handler's work, one L1->L0
  trap round trip per VMREAD, VMWRITE, VMPTRLD and VMCLEAR, and its own term per VMXON/VMXOFF
  (L0 tears nested state down on VMXOFF and rebuilds it on VMXON).
- ``nested-shadow``: as nested, but VMREAD/VMWRITE of fields in L0's shadow VMCS
  (Linux ``vmcs_shadow_fields.h``) run natively in L1 without a trap. VMPTRLD, VMCLEAR, VMXON and
  VMXOFF always trap.

Parameters come from ``latency.toml`` (or a user file of the same schema); each carries its source
and a status (sourced, derived, assumption), which reports repeat so no assumption is hidden.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .exceptions import InvalidArgument, ProfileError
from .exit_reasons import lookup_reason

__all__ = [
    "MODES",
    "SHADOWED_FIELDS",
    "LatencyModel",
    "LatencyParameters",
    "Parameter",
    "load_parameters",
]

MODES = ("native", "nested", "nested-shadow")

# Linux arch/x86/kvm/vmx/vmcs_shadow_fields.h @ 09878d15216e (shared/vmx/kvm_shadow_fields.csv):
# the fields KVM as L0 shadows for L1. Accesses to any other field trap in nested mode.
SHADOWED_FIELDS = frozenset(
    {
        "GUEST_INTR_STATUS",
        "GUEST_PML_INDEX",
        "HOST_FS_SELECTOR",
        "HOST_GS_SELECTOR",
        "VM_EXIT_REASON",
        "VM_EXIT_INTR_INFO",
        "VM_EXIT_INSTRUCTION_LEN",
        "IDT_VECTORING_INFO_FIELD",
        "IDT_VECTORING_ERROR_CODE",
        "VM_EXIT_INTR_ERROR_CODE",
        "GUEST_CS_AR_BYTES",
        "GUEST_SS_AR_BYTES",
        "CPU_BASED_VM_EXEC_CONTROL",
        "EXCEPTION_BITMAP",
        "VM_ENTRY_EXCEPTION_ERROR_CODE",
        "VM_ENTRY_INTR_INFO_FIELD",
        "VM_ENTRY_INSTRUCTION_LEN",
        "TPR_THRESHOLD",
        "GUEST_INTERRUPTIBILITY_INFO",
        "VMX_PREEMPTION_TIMER_VALUE",
        "EXIT_QUALIFICATION",
        "GUEST_LINEAR_ADDRESS",
        "GUEST_RIP",
        "GUEST_RSP",
        "GUEST_CR0",
        "GUEST_CR3",
        "GUEST_CR4",
        "GUEST_RFLAGS",
        "CR0_GUEST_HOST_MASK",
        "CR0_READ_SHADOW",
        "CR4_READ_SHADOW",
        "HOST_FS_BASE",
        "HOST_GS_BASE",
        "GUEST_PHYSICAL_ADDRESS",
        "GUEST_PHYSICAL_ADDRESS_HIGH",
    }
)

_REQUIRED = (
    "clock_hz",
    "exit_entry_roundtrip_cycles",
    "vmread_cycles",
    "vmwrite_cycles",
    "vmptrld_cycles",
    "vmclear_cycles",
    "vmxon_vmxoff_cycles",
    "l1_trap_roundtrip_cycles",
    "nested_l2_exit_base_cycles",
    "vmxon_vmxoff_nested_cycles",
    "default_handler_us",
)
_STATUSES = ("sourced", "derived", "assumption")


@dataclass(frozen=True)
class Parameter:
    """One model parameter: value, status (sourced, derived, assumption) and source."""

    value: float
    status: str
    source: str


@dataclass(frozen=True)
class LatencyParameters:
    """Every parameter of the model, by name, and the handler work per exit-reason number."""

    params: dict[str, Parameter]
    handler_us: dict[int, Parameter]
    path: str

    def __getitem__(self, name: str) -> float:
        return self.params[name].value

    def with_values(self, **values: float) -> LatencyParameters:
        """A copy with some parameters replaced (status 'override'), for sensitivity analysis."""
        params = dict(self.params)
        for name, value in values.items():
            if name not in params:
                raise InvalidArgument(f"unknown latency parameter {name!r}")
            params[name] = Parameter(float(value), "override", "set by the caller")
        return LatencyParameters(params, self.handler_us, self.path)


def _parameter(path: str, key: str, raw: Any) -> Parameter:
    if not isinstance(raw, dict):
        raise ProfileError(path, key, "must be a table with value, status and source")
    unknown = set(raw) - {"value", "status", "source"}
    if unknown:
        raise ProfileError(path, key, f"unknown keys {sorted(unknown)}")
    value = raw.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ProfileError(path, f"{key}.value", "must be a non-negative number")
    status = raw.get("status")
    if status not in _STATUSES:
        raise ProfileError(path, f"{key}.status", f"must be one of {', '.join(_STATUSES)}")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ProfileError(path, f"{key}.source", "must name the source (or why it is assumed)")
    return Parameter(float(value), status, source)


def load_parameters(path: str | Path | None = None) -> LatencyParameters:
    """Load and validate a latency parameter file (default: the bundled ``latency.toml``)."""
    if path is None:
        text = resources.files(__package__).joinpath("latency.toml").read_text()
        where = "latency.toml"
    else:
        where = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ProfileError(where, "-", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(where, "-", f"not valid TOML: {exc}") from None
    if data.get("schema") != 1:
        raise ProfileError(where, "schema", "must be 1")
    unknown = set(data) - {"schema", "params", "handler_us"}
    if unknown:
        raise ProfileError(where, "-", f"unknown top-level keys {sorted(unknown)}")
    raw_params = data.get("params", {})
    params = {name: _parameter(where, f"params.{name}", raw) for name, raw in raw_params.items()}
    missing = [name for name in _REQUIRED if name not in params]
    if missing:
        raise ProfileError(where, "params", f"missing {', '.join(missing)}")
    handler_us = {}
    for name, raw in data.get("handler_us", {}).items():
        reason = lookup_reason(name)
        if reason is None:
            raise ProfileError(where, f"handler_us.{name}", "unknown exit reason")
        handler_us[reason.number] = _parameter(where, f"handler_us.{name}", raw)
    return LatencyParameters(params, handler_us, where)


class LatencyModel:
    """Prices an exit's instruction counts in seconds for one mode."""

    def __init__(self, mode: str, parameters: LatencyParameters | None = None) -> None:
        if mode not in MODES:
            raise InvalidArgument(f"unknown latency mode {mode!r} (one of {', '.join(MODES)})")
        self.mode = mode
        self.parameters = p = parameters if parameters is not None else load_parameters()
        self.clock_hz = p["clock_hz"]
        roundtrip = p["exit_entry_roundtrip_cycles"]
        default = max(0.0, p["default_handler_us"] * 1e-6 * self.clock_hz)
        self._handler_cycles = {
            number: max(0.0, param.value * 1e-6 * self.clock_hz - roundtrip)
            for number, param in p.handler_us.items()
        }
        self._default_handler_cycles = default
        nested = mode != "native"
        self.base_cycles = p["nested_l2_exit_base_cycles"] if nested else roundtrip
        trap = p["l1_trap_roundtrip_cycles"]
        # cycles per instruction: (vmread, vmwrite, vmptrld, vmclear, vmxon + vmxoff, shadowed)
        if nested:
            self.unit_cycles = (trap, trap, trap, trap, p["vmxon_vmxoff_nested_cycles"])
        else:
            self.unit_cycles = (
                p["vmread_cycles"],
                p["vmwrite_cycles"],
                p["vmptrld_cycles"],
                p["vmclear_cycles"],
                p["vmxon_vmxoff_cycles"],
            )
        # a shadowed VMREAD/VMWRITE runs natively in L1 (nested-shadow only)
        self.shadowed_cycles = (p["vmread_cycles"] + p["vmwrite_cycles"]) / 2
        self.uses_shadow = mode == "nested-shadow"

    def handler_cycles(self, reason: int) -> float:
        """Handler work for a basic exit reason, in cycles."""
        return self._handler_cycles.get(reason, self._default_handler_cycles)

    def exit_cycles(
        self,
        reason: int,
        vmread: int,
        vmwrite: int,
        vmptrld: int,
        vmclear: int,
        vmxon_vmxoff: int,
        shadowed: int = 0,
    ) -> float:
        """Cycles of one exit. ``shadowed`` of the VMREADs+VMWRITEs hit L0's shadow VMCS."""
        r, w, p, c, x = self.unit_cycles
        if not self.uses_shadow:
            shadowed = 0
        trapped_rw = vmread * r + vmwrite * w - shadowed * r
        return (
            self.base_cycles
            + self.handler_cycles(reason)
            + trapped_rw
            + shadowed * self.shadowed_cycles
            + vmptrld * p
            + vmclear * c
            + vmxon_vmxoff * x
        )

    def exit_seconds(self, *args: int) -> float:
        """Seconds of one exit (same arguments as ``exit_cycles``)."""
        return self.exit_cycles(*args) / self.clock_hz

    def assumptions(self) -> dict[str, str]:
        """Parameters whose value is an assumption, with the reason given for it."""
        found = {
            name: param.source
            for name, param in self.parameters.params.items()
            if param.status == "assumption"
        }
        return found
