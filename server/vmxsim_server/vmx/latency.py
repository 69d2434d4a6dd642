"""The latency model: the simulated cost of one VM exit from the VMX instructions it executed.

Modes (DESIGN.md "The core" 8 and "Nested virtualization at two levels"):
- ``native``: the hypervisor runs on hardware. An exit costs the exit+entry round trip, the
  handler's work for its reason, and the native cost of every VMREAD, VMWRITE, VMPTRLD, VMCLEAR,
  VMXON and VMXOFF it executed (other instructions are counted, not priced natively).
- ``nested``: the hypervisor is L1 under an L0 model (``l0.py``): the one given (``--l0``), else
  the profile's ``default_l0``. An L2 exit costs the L0 model's nested base, the handler's work,
  and what the L0 model charges for each L1 instruction that exits to it (``L0Exit.cycles``:
  round trips plus L0's work, which depends on the state earlier instructions left).
- ``nested-shadow``: as nested, with the L0 model's VMCS-shadowing option: VMREAD/VMWRITE of the
  fields it shadows run natively in L1 (priced as native VMREAD/VMWRITE) without an exit.

Parameters come from ``latency.toml`` (or a user file of the same schema); each carries its source
and a status (sourced, derived, assumption), which reports repeat so no assumption is hidden.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .exceptions import InvalidArgument, ProfileError
from .exit_reasons import lookup_reason
from .l0 import L0Exit, L0Model, load_l0
from .parameters import Parameter, parse_parameter
from .profiles import Profile

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
# the fields KVM as L0 shadows for L1 (kept for reports; the L0 models carry their own lists).
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
    "default_handler_us",
)


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


_BUNDLED: list[LatencyParameters] = []


def load_parameters(path: str | Path | None = None) -> LatencyParameters:
    """Load and validate a latency parameter file (default: the bundled ``latency.toml``, read
    once: the object is shared, so models built from it share compiled plans)."""
    if path is None and _BUNDLED:
        return _BUNDLED[0]
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
    params = {
        name: parse_parameter(where, f"params.{name}", raw) for name, raw in raw_params.items()
    }
    missing = [name for name in _REQUIRED if name not in params]
    if missing:
        raise ProfileError(where, "params", f"missing {', '.join(missing)}")
    handler_us = {}
    for name, raw in data.get("handler_us", {}).items():
        reason = lookup_reason(name)
        if reason is None:
            raise ProfileError(where, f"handler_us.{name}", "unknown exit reason")
        handler_us[reason.number] = parse_parameter(where, f"handler_us.{name}", raw)
    loaded = LatencyParameters(params, handler_us, where)
    if path is None:
        _BUNDLED.append(loaded)
    return loaded


class LatencyModel:
    """Prices an exit in seconds for one mode (and, nested, one L0 model)."""

    def __init__(
        self,
        mode: str,
        parameters: LatencyParameters | None = None,
        l0: str | L0Model | None = None,
    ) -> None:
        if mode not in MODES:
            raise InvalidArgument(f"unknown latency mode {mode!r} (one of {', '.join(MODES)})")
        if mode == "native" and l0:
            raise InvalidArgument("an L0 model applies to the nested modes only, not native")
        self.mode = mode
        self.nested = mode != "native"
        self.shadow = mode == "nested-shadow"
        self.parameters = p = parameters if parameters is not None else load_parameters()
        self._l0 = l0
        if isinstance(l0, str):
            self._check(load_l0(l0))
        elif l0 is not None:
            self._check(l0)
        self.clock_hz = p["clock_hz"]
        roundtrip = p["exit_entry_roundtrip_cycles"]
        default = max(0.0, p["default_handler_us"] * 1e-6 * self.clock_hz)
        self._handler_cycles = {
            number: max(0.0, param.value * 1e-6 * self.clock_hz - roundtrip)
            for number, param in p.handler_us.items()
        }
        self._default_handler_cycles = default
        self.roundtrip_cycles = roundtrip
        # native cycles per instruction: (vmread, vmwrite, vmptrld, vmclear, vmxon + vmxoff)
        self.unit_cycles = (
            p["vmread_cycles"],
            p["vmwrite_cycles"],
            p["vmptrld_cycles"],
            p["vmclear_cycles"],
            p["vmxon_vmxoff_cycles"],
        )

    @property
    def l0_name(self) -> str | None:
        """The L0 model asked for (``--l0``), or None: each profile's ``default_l0``."""
        return self._l0 if isinstance(self._l0, str) or self._l0 is None else self._l0.name

    def _check(self, model: L0Model) -> L0Model:
        if self.shadow and not model.shadow_available:
            raise InvalidArgument(f"L0 model {model.name} has no VMCS-shadowing option")
        return model

    def l0_for(self, profile: Profile) -> L0Model | None:
        """The L0 model a profile runs under in this mode; None in native mode."""
        if not self.nested:
            return None
        if isinstance(self._l0, L0Model):
            return self._l0
        return self._check(load_l0(self._l0 or profile.default_l0))

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
        l0: L0Exit | None = None,
    ) -> float:
        """Cycles of one exit. Native: the round trip, the handler and every VMX instruction at its
        native price. Nested (``l0`` given): the L0 model's base, the handler, L0's cycles for the
        instructions that exited to it, and the shadowed VMREADs/VMWRITEs at their native price."""
        r, w, p, c, x = self.unit_cycles
        if l0 is not None:
            return (
                l0.model.base_cycles(l0.shadow)
                + self.handler_cycles(reason)
                + l0.cycles
                + l0.native_reads * r
                + l0.native_writes * w
            )
        return (
            self.roundtrip_cycles
            + self.handler_cycles(reason)
            + vmread * r
            + vmwrite * w
            + vmptrld * p
            + vmclear * c
            + vmxon_vmxoff * x
        )

    def assumptions(self, profile: Profile | None = None) -> dict[str, str]:
        """Parameters whose value is an assumption, with the reason given for it (with a profile
        in a nested mode, its L0 model's too, as ``l0.<name>.<parameter>``)."""
        found = {
            name: param.source
            for name, param in self.parameters.params.items()
            if param.status == "assumption"
        }
        model = self.l0_for(profile) if profile is not None else None
        if model is not None:
            found.update({f"l0.{model.name}.{k}": v for k, v in model.assumptions().items()})
        return found
