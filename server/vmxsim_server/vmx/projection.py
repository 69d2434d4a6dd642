"""From per-exit model costs to the seed's wall-clock question, term by term.

The seed measured a Windows XP installer boot, nested under KVM (Linux 4.17): KVM 45.4 s, HAXM
532.5 s (11.7x), and left "HAXM (after): TODO". vmxsim prices one exit of a mix per profile
(``exit_costs``) and projects:

- ``exits only``: all of the seed's time is exit handling, so HAXM (after) = 532.5 s x
  cost(haxm-cache) / cost(haxm-legacy), and the predicted HAXM/KVM ratio is the cost ratio itself;
- ``fitted``: time = guest work G + N exits x cost, with N and G fitted so that KVM and HAXM
  reproduce 45.4 s and 532.5 s exactly; HAXM (after) = G + N x cost(haxm-cache). When the fit
  needs G < 0 the per-exit model cannot explain the seed with one exit count: the residual.

Every profile prices the same exits: reasons whose handler panics in a HAXM profile (HAXM has no
handler: ``dump_vmcs`` and the VM stops) are dropped from the mix for all profiles and reported
(``Priced.dropped``), since an average over different exit sets compares nothing.

``TERMS`` splits the nested model into the terms issue 13 added, applied cumulatively to the L0
model: the VMX-only model of before (one round trip per L1 VMX instruction, the Hyper-V/eVMCS base,
in-kernel handler times), then the KVM-L0 base, user-space handler times, L1 instructions other
than VMX ones, L0's work per VMX instruction, vmcs02 rebuilds. ``decompose`` projects each step,
so a reader sees what each term adds to the ratio and to "HAXM (after)".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from .engine import BatchStats, Engine
from .exceptions import InvalidArgument
from .l0 import L0Model, load_l0
from .l1_instructions import VMX_OPS
from .latency import LatencyModel, LatencyParameters, load_parameters
from .mixes import Mix, synthesize
from .parameters import Parameter
from .profiles import DEFAULT_L0, load_profile
from .records import ExitBatch
from .vcpu import Vcpu

__all__ = [
    "HAXM_PROFILES",
    "SEED_HAXM_SECONDS",
    "SEED_KVM_SECONDS",
    "SEED_PROFILES",
    "TERMS",
    "Priced",
    "Projection",
    "Step",
    "decompose",
    "exit_costs",
    "mix_stats",
    "priced_mix",
    "project",
    "seed_roles",
]

SEED_KVM_SECONDS = 45.4
SEED_HAXM_SECONDS = 532.5
"""intel/haxm PR #130, "Benchmarks": Windows XP SP2 installer to the welcome screen, Ubuntu 18.04
host with Linux 4.17, HAXM or KVM as L1 (shared/seed/haxm-pr130-vmcs-cache.txt)."""

SEED_PROFILES = ("kvm", "haxm-legacy", "haxm-cache")
HAXM_PROFILES = ("haxm-legacy", "haxm-cache")

# The VMX-only model of before issue 13 (latency.toml until then), kept to show what each new term
# adds: nested base 8,304 cycles = KVM L1 on Hyper-V with eVMCS (Kuznetsov 2018, LATENCY.md
# section 3), and the in-kernel perf-kvm-stat handler times of exits the profiles send to QEMU:
# IO_INSTRUCTION 3.02 us (host-all-vms-100s.txt), EPT_MISCONFIG 2.05 us (Arcangeli 2019).
VMX_ONLY_BASE_CYCLES = 8304.0
VMX_ONLY_HANDLER_US = {30: 3.02, 49: 2.05}


@dataclass(frozen=True)
class Priced:
    """A mix restricted to the reasons every profile can price, and what was dropped."""

    mix: Mix
    dropped: dict[int, float]
    """Share (0..1) of the original mix per dropped reason."""


def priced_mix(mix: Mix, profiles: Sequence[str] = HAXM_PROFILES) -> Priced:
    """The mix without reasons whose handler panics in any of ``profiles``."""
    total = sum(mix.weights.values())
    panics = {
        reason
        for reason in mix.weights
        if any(load_profile(name).handler(reason).panic for name in profiles)
    }
    kept = {r: w for r, w in mix.weights.items() if r not in panics}
    return Priced(replace(mix, weights=kept), {r: mix.weights[r] / total for r in sorted(panics)})


Profiles = Sequence[str] | Mapping[str, str]
"""Profile names (or paths); a mapping gives each result key (a role, ``kvm``...) its profile."""


def _named(profiles: Profiles) -> dict[str, str]:
    return dict(profiles) if isinstance(profiles, Mapping) else {n: n for n in profiles}


def mix_stats(
    profiles: Profiles,
    mode: str,
    mix: Mix,
    exits: int = 20_000,
    parameters: LatencyParameters | None = None,
    l0: str | L0Model | None = None,
) -> dict[str, BatchStats]:
    """Each profile's stats on the same seeded sequence of the mix (seed 0), by name or role."""
    batch = ExitBatch.from_records(synthesize(mix, exits, seed=0))
    model = LatencyModel(mode, parameters, l0 if mode != "native" else None)
    return {
        key: Engine(Vcpu(), load_profile(name), model).run_batch(batch)
        for key, name in _named(profiles).items()
    }


def exit_costs(
    profiles: Profiles,
    mode: str,
    mix: Mix,
    exits: int = 20_000,
    parameters: LatencyParameters | None = None,
    l0: str | L0Model | None = None,
) -> dict[str, float]:
    """Mean simulated seconds per priced (non-panic) exit of each profile on the mix."""
    stats = mix_stats(profiles, mode, mix, exits, parameters, l0)
    return {name: s.simulated_seconds / max(s.exits, 1) for name, s in stats.items()}


@dataclass(frozen=True)
class Projection:
    """The seed's numbers next to the model's, and the projection of HAXM (after)."""

    mode: str
    cost_kvm: float
    cost_legacy: float
    cost_cache: float
    predicted_ratio: float
    seed_ratio: float
    after_exits_only: float
    fitted_exits: float
    fitted_guest_seconds: float
    after_fitted: float | None

    @property
    def residual_factor(self) -> float:
        """How far the per-exit model falls short of the seed's ratio (seed / predicted)."""
        return self.seed_ratio / self.predicted_ratio

    @property
    def after_slower(self) -> bool:
        """True when the seed's cache makes HAXM slower, not faster."""
        return self.cost_cache > self.cost_legacy


def project(costs: dict[str, float], mode: str) -> Projection:
    """Project HAXM (after) from per-exit costs of kvm, haxm-legacy and haxm-cache."""
    kvm, legacy, cache = costs["kvm"], costs["haxm-legacy"], costs["haxm-cache"]
    exits = (SEED_HAXM_SECONDS - SEED_KVM_SECONDS) / (legacy - kvm)
    guest = SEED_KVM_SECONDS - exits * kvm
    return Projection(
        mode=mode,
        cost_kvm=kvm,
        cost_legacy=legacy,
        cost_cache=cache,
        predicted_ratio=legacy / kvm,
        seed_ratio=SEED_HAXM_SECONDS / SEED_KVM_SECONDS,
        after_exits_only=SEED_HAXM_SECONDS * cache / legacy,
        fitted_exits=exits,
        fitted_guest_seconds=guest,
        after_fitted=guest + exits * cache if guest >= 0 else None,
    )


def seed_roles(roles: Mapping[str, str] | None = None) -> dict[str, str]:
    """The profile of each role of the projection: the shipped ones, unless ``roles`` says."""
    found = {role: role for role in SEED_PROFILES}
    for role, name in (roles or {}).items():
        if role not in found:
            raise InvalidArgument(f"unknown role {role!r} (one of {', '.join(SEED_PROFILES)})")
        found[role] = name
    return found


# --- the terms of the nested model -------------------------------------------------------------

_REBUILD_PRICES = ("rebuild_cycles", "first_entry_cycles")


def _zero_prices(model: L0Model, keep: Callable[[str, str], bool]) -> L0Model:
    """Zero every instruction price of ``model`` except those ``keep(op, price)`` names."""
    values = {}
    for name in model.params:
        section, _, rest = name.partition(".")
        if section != "instructions":
            continue
        op, _, price = rest.partition(".")
        if not keep(op, price):
            values[name] = 0.0
    return model.with_values(**values)


def _no_other_exits(model: L0Model) -> L0Model:
    """The model with every non-VMX instruction never exiting (the VMX-only view)."""
    rules = {
        op: rule if op in VMX_OPS else replace(rule, exits="never", operands={})
        for op, rule in model.rules.items()
    }
    return replace(model, rules=rules)


def _old_base(model: L0Model) -> L0Model:
    values = {"base.nested_l2_exit_cycles": VMX_ONLY_BASE_CYCLES}
    if model.shadow_base is not None:
        values["shadow.nested_l2_exit_cycles"] = VMX_ONLY_BASE_CYCLES
    return model.with_values(**values)


def _old_handlers(parameters: LatencyParameters) -> LatencyParameters:
    handlers = dict(parameters.handler_us)
    for reason, value in VMX_ONLY_HANDLER_US.items():
        handlers[reason] = Parameter(value, "override", "the in-kernel figure used before")
    return LatencyParameters(parameters.params, handlers, parameters.path)


@dataclass(frozen=True)
class Step:
    """One cumulative step of the nested model: its name, what it adds, and how it is built."""

    name: str
    adds: str
    build: Callable[[L0Model, LatencyParameters], tuple[L0Model, LatencyParameters]]


def _vmx_only(m: L0Model, p: LatencyParameters) -> tuple[L0Model, LatencyParameters]:
    return _old_base(_no_other_exits(_zero_prices(m, lambda op, price: False))), _old_handlers(p)


def _with_base(m: L0Model, p: LatencyParameters) -> tuple[L0Model, LatencyParameters]:
    return _no_other_exits(_zero_prices(m, lambda op, price: False)), _old_handlers(p)


def _with_handlers(m: L0Model, p: LatencyParameters) -> tuple[L0Model, LatencyParameters]:
    return _no_other_exits(_zero_prices(m, lambda op, price: False)), p


def _with_other(m: L0Model, p: LatencyParameters) -> tuple[L0Model, LatencyParameters]:
    return _zero_prices(m, lambda op, price: op not in VMX_OPS), p


def _with_vmx_work(m: L0Model, p: LatencyParameters) -> tuple[L0Model, LatencyParameters]:
    return _zero_prices(m, lambda op, price: price not in _REBUILD_PRICES), p


def _full(m: L0Model, p: LatencyParameters) -> tuple[L0Model, LatencyParameters]:
    return m, p


TERMS = (
    Step("vmx-only", "the model before issue 13: each L1 VMX instruction one round trip, "
         "base 8,304 (Hyper-V/eVMCS), in-kernel IO/MMIO handler times", _vmx_only),
    Step("+ kvm-l0-base", "the L0's own nested base instead of Hyper-V's", _with_base),
    Step("+ user-space handlers", "IO/MMIO handler times of exits sent to QEMU", _with_handlers),
    Step("+ l1-other-traps", "RDMSR/WRMSR, MOV CR/DR, CPUID, INVEPT... exiting to L0",
         _with_other),
    Step("+ l0-vmx-work", "L0's work per VMX instruction: VMXON allocation, VMXOFF free_nested, "
         "VMPTRLD copy, VMCLEAR write-back", _with_vmx_work),
    Step("+ vmcs02-rebuilds", "full vmcs02 preparation after a dirty vmcs12 or a new vmcs02",
         _full),
)  # fmt: skip


def decompose(
    mix: Mix,
    mode: str = "nested",
    exits: int = 20_000,
    l0: str = DEFAULT_L0,
    parameters: LatencyParameters | None = None,
    roles: Mapping[str, str] | None = None,
) -> list[tuple[Step, Projection]]:
    """Project the seed at each cumulative step of ``TERMS`` (mix already restricted); ``roles``
    replaces the profile of a role (``kvm``, ``haxm-legacy``, ``haxm-cache``) by another."""
    base_model = load_l0(l0)
    base_params = parameters if parameters is not None else load_parameters()
    found = []
    for step in TERMS:
        model, params = step.build(base_model, base_params)
        costs = exit_costs(seed_roles(roles), mode, mix, exits, params, model)
        found.append((step, project(costs, mode)))
    return found
