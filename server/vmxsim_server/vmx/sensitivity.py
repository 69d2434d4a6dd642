"""Sensitivity of the seed projection to every parameter, latency and L0 prices alike.

Every simulated cost is linear in each single parameter (a sum of counts times prices on a fixed
exit sequence), so two evaluations per parameter, at 0 and at 1, recover c(p) = a + b p exactly
for each profile. From those lines this module reports, per parameter:
- the HAXM/KVM per-exit ratio at the parameter's value, at half and at double that value;
- the value at which that ratio alone would reach the seed's 11.7x (None: no non-negative value);
- the value at which "HAXM (after)" breaks even with "before" (haxm-cache = haxm-legacy per exit).

Parameter names: latency.toml ``params`` by name, handler times as ``handler_us.<REASON>``, and the
L0 model's prices by their dotted names (``base.nested_l2_exit_cycles``,
``instructions.VMXON.cost_cycles``, ...; ``L0Model.params``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .exit_reasons import BY_NUMBER
from .l0 import L0Model, load_l0
from .latency import LatencyParameters, load_parameters
from .mixes import Mix
from .parameters import Parameter
from .profiles import DEFAULT_L0
from .projection import SEED_HAXM_SECONDS, SEED_KVM_SECONDS, exit_costs, seed_roles

__all__ = ["Sensitivity", "sensitivity"]

_Setter = tuple[str, str | int]
"""Which table a parameter lives in (latency, handler, l0) and its key there."""

_NATIVE_ONLY = ("vmptrld_cycles", "vmclear_cycles", "vmxon_vmxoff_cycles", "clock_hz")
"""Latency parameters a nested run never reads (native prices of L0-handled instructions) or that
scale every cost alike (the clock): no effect on a nested ratio."""


@dataclass(frozen=True)
class Sensitivity:
    """One parameter's effect on the nested projection."""

    name: str
    value: float
    status: str
    ratio: float
    ratio_half: float
    ratio_double: float
    for_seed_ratio: float | None
    after_break_even: float | None


def _line(at0: dict[str, float], at1: dict[str, float], name: str) -> tuple[float, float]:
    return at0[name], at1[name] - at0[name]


def _ratio_at(a_num: float, b_num: float, a_den: float, b_den: float) -> Callable[[float], float]:
    return lambda v: (a_num + b_num * v) / (a_den + b_den * v)


def _solve(a_num: float, b_num: float, a_den: float, b_den: float, goal: float) -> float | None:
    """p >= 0 with (a_num + b_num p) / (a_den + b_den p) = goal, or None."""
    denominator = b_num - goal * b_den
    scale = abs(b_num) + abs(goal * b_den) + abs(a_num) + abs(goal * a_den)
    if abs(denominator) <= 1e-9 * scale:
        return None  # the parameter moves both sides alike (or neither): no solution
    value = (goal * a_den - a_num) / denominator
    return value if value >= 0 else None


def _variants(
    parameters: LatencyParameters, model: L0Model
) -> list[tuple[str, Parameter, _Setter]]:
    """(name, current parameter, setter) for every parameter that can move a nested ratio."""
    found: list[tuple[str, Parameter, _Setter]] = []
    for name, param in parameters.params.items():
        if name not in _NATIVE_ONLY:
            found.append((name, param, ("latency", name)))
    for number, param in sorted(parameters.handler_us.items()):
        found.append((f"handler_us.{BY_NUMBER[number].name}", param, ("handler", number)))
    for name, param in model.params.items():
        found.append((name, param, ("l0", name)))
    return found


def _apply(
    parameters: LatencyParameters, model: L0Model, setter: _Setter, value: float
) -> tuple[LatencyParameters, L0Model]:
    kind, key = setter
    if kind == "handler" and isinstance(key, int):
        handlers = dict(parameters.handler_us)
        handlers[key] = Parameter(value, "override", "set by the sensitivity analysis")
        return LatencyParameters(parameters.params, handlers, parameters.path), model
    if kind == "latency":
        return parameters.with_values(**{str(key): value}), model
    return parameters, model.with_values(**{str(key): value})


def sensitivity(
    mix: Mix,
    mode: str = "nested",
    exits: int = 5_000,
    l0: str = DEFAULT_L0,
    roles: Mapping[str, str] | None = None,
) -> list[Sensitivity]:
    """Every parameter's effect on the HAXM/KVM ratio and on HAXM (after), one at a time."""
    goal = SEED_HAXM_SECONDS / SEED_KVM_SECONDS
    parameters, model = load_parameters(), load_l0(l0)
    found = []
    for name, param, setter in _variants(parameters, model):
        costs = []
        for value in (0.0, 1.0):
            p, m = _apply(parameters, model, setter, value)
            costs.append(exit_costs(seed_roles(roles), mode, mix, exits, p, m))
        a_k, b_k = _line(costs[0], costs[1], "kvm")
        a_h, b_h = _line(costs[0], costs[1], "haxm-legacy")
        a_c, b_c = _line(costs[0], costs[1], "haxm-cache")

        v = param.value
        ratio = _ratio_at(a_h, b_h, a_k, b_k)
        found.append(
            Sensitivity(
                name=name,
                value=v,
                status=param.status,
                ratio=ratio(v),
                ratio_half=ratio(v / 2),
                ratio_double=ratio(v * 2),
                for_seed_ratio=_solve(a_h, b_h, a_k, b_k, goal),
                after_break_even=_solve(a_c, b_c, a_h, b_h, 1.0),
            )
        )
    return found
