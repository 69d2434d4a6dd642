"""From per-exit model costs to the seed's wall-clock question, and what the model cannot explain.

The seed measured a Windows XP installer boot, nested: KVM 45.4 s, HAXM 532.5 s (11.7x), and left
"HAXM (after): TODO". vmxsim prices one exit of a mix per profile (``exit_costs``) and projects:

- ``exits only``: all of the seed's time is exit handling, so HAXM (after) = 532.5 s x
  cost(haxm-cache) / cost(haxm-legacy), and the predicted HAXM/KVM ratio is cost ratio itself;
- ``fitted``: time = guest work G + N exits x cost, with N and G fitted so that KVM and HAXM
  reproduce 45.4 s and 532.5 s exactly; HAXM (after) = G + N x cost(haxm-cache). When the fit
  needs G < 0 the per-exit model cannot explain the seed with one exit count: the residual.

``sensitivity`` solves, for each latency parameter alone, the value at which the predicted
per-exit HAXM/KVM ratio equals the seed's 11.7x (the ratio of two linear functions of one
parameter, so the solution is closed-form), or reports that no non-negative value reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .engine import BatchStats, Engine
from .latency import LatencyModel, LatencyParameters, load_parameters
from .mixes import Mix, synthesize
from .profiles import load_profile
from .records import ExitBatch
from .vcpu import Vcpu

__all__ = [
    "SEED_HAXM_SECONDS",
    "SEED_KVM_SECONDS",
    "Projection",
    "exit_costs",
    "mix_stats",
    "project",
    "sensitivity",
]

SEED_KVM_SECONDS = 45.4
SEED_HAXM_SECONDS = 532.5
"""intel/haxm PR #130, "Benchmarks": Windows XP SP2 installer to the welcome screen, Ubuntu 18.04
host with Linux 4.17, HAXM or KVM as L1 (shared/seed/haxm-pr130-vmcs-cache.txt)."""


def mix_stats(
    profiles: list[str],
    mode: str,
    mix: Mix,
    exits: int = 20_000,
    parameters: LatencyParameters | None = None,
) -> dict[str, BatchStats]:
    """Each profile's stats on the same seeded sequence of the mix (seed 0)."""
    batch = ExitBatch.from_records(synthesize(mix, exits, seed=0))
    return {
        name: Engine(Vcpu(), load_profile(name), LatencyModel(mode, parameters)).run_batch(batch)
        for name in profiles
    }


def exit_costs(
    profiles: list[str],
    mode: str,
    mix: Mix,
    exits: int = 20_000,
    parameters: LatencyParameters | None = None,
) -> dict[str, float]:
    """Mean simulated seconds per exit of each profile on a seeded sequence of the mix."""
    stats = mix_stats(profiles, mode, mix, exits, parameters)
    return {name: s.simulated_seconds / s.exits for name, s in stats.items()}


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


def sensitivity(
    mix: Mix, mode: str, exits: int = 5_000, target: float | None = None
) -> dict[str, float | None]:
    """Per parameter: the value (alone) at which haxm-legacy/kvm per exit equals the seed's ratio.

    None when no non-negative value does. Uses two evaluations per parameter: the cost is linear
    in each parameter, so c(p) = a + b p is recovered exactly from p = 0 and p = 1.
    """
    goal = target if target is not None else SEED_HAXM_SECONDS / SEED_KVM_SECONDS
    base = load_parameters()
    found: dict[str, float | None] = {}
    for name in base.params:
        if name == "clock_hz":
            continue  # scales every cost alike: no effect on a ratio
        at0 = exit_costs(["kvm", "haxm-legacy"], mode, mix, exits, base.with_values(**{name: 0}))
        at1 = exit_costs(["kvm", "haxm-legacy"], mode, mix, exits, base.with_values(**{name: 1}))
        a_k, b_k = at0["kvm"], at1["kvm"] - at0["kvm"]
        a_h, b_h = at0["haxm-legacy"], at1["haxm-legacy"] - at0["haxm-legacy"]
        denominator = b_h - goal * b_k
        value = (goal * a_k - a_h) / denominator if denominator else None
        found[name] = value if value is not None and value >= 0 else None
    return found
