"""The run summary: ``BatchStats`` as the ``--json`` contract (DESIGN.md "Machine-readable output").

```
{"profile": "kvm", "mode": "nested", "exits": 1234, "skipped": 0,
 "unknown_reasons": {"NAME": count},
 "instructions": {"vmread": n, "vmwrite": n, "vmptrld": n, "vmclear": n, "vmxon": n, "vmxoff": n,
                  "other": {"WRMSR": n, "MOV_TO_CR": n, ...}},
 "per_exit": {"vmread": {"mean": x, "p50": x, "p99": x}, "vmwrite": {...}},
 "cache": {"hits": n, "misses": n},
 "simulated_seconds": x,
 "by_reason": {"CPUID": {"exits": n, "vmread": n, "vmwrite": n, "l0_exits": n}, ...},
 "panics": {"APIC_ACCESS": n},
 "l0": {"model": "kvm-4.17", "exits": n, "per_exit": {"mean": x, "p50": x, "p99": x},
        "by_cause": {"VMREAD": n, "WRMSR": n, "MOV_CR": n, "VMRESUME": n, ...},
        "vmcs02_rebuilds": n, "seconds": x}}
```
Percentiles are nearest-rank over the exact per-exit counts. ``instructions`` counts VMX
instructions by their lower-case names (their meaning is unchanged) and the other L1 instructions
a profile lists under ``other`` by op (``l1_instructions.OPS``). ``l0`` is null in native mode; in
the nested modes ``exits`` counts the L1 instructions L0 intercepted (VMLAUNCH/VMRESUME of L2
included, the reflected L2 exit itself not), ``seconds`` is the simulated time L0 spent on them
(round trips, its work and vmcs02 rebuilds; the nested base is in ``simulated_seconds`` only).
``panics``: exits whose handler stops the VM (``panic = true`` in the profile), by reason; they
are not in ``exits``, ``by_reason`` or any time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .exit_reasons import BY_NUMBER

if TYPE_CHECKING:  # the client's wire module imports this without the engine
    from .engine import BatchStats

__all__ = ["distribution", "l0_summary", "percentile", "reason_name", "summary"]

INSTRUCTIONS = ("vmread", "vmwrite", "vmptrld", "vmclear", "vmxon", "vmxoff")


def percentile(hist: Mapping[Any, int], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of a histogram of values; 0 when empty."""
    total = sum(hist.values())
    if not total:
        return 0.0
    rank = max(1, -(-q * total // 100))  # ceil(q/100 * total), at least 1
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))


def distribution(hist: Mapping[int, int]) -> dict[str, float]:
    """Mean, p50 and p99 of a histogram of per-exit counts."""
    total = sum(hist.values())
    mean = sum(v * n for v, n in hist.items()) / total if total else 0.0
    return {"mean": mean, "p50": percentile(hist, 50), "p99": percentile(hist, 99)}


def reason_name(number: int) -> str:
    """The exit-reason table's name, or ``REASON_<n>`` for an undefined number."""
    reason = BY_NUMBER.get(number)
    return reason.name if reason else f"REASON_{number}"


def summary(
    stats: BatchStats,
    profile: str,
    mode: str,
    skipped: int = 0,
    unknown_reasons: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The run summary object of the ``--json`` contract."""
    c = stats.counters
    return {
        "profile": profile,
        "mode": mode,
        "exits": stats.exits,
        "skipped": skipped,
        "unknown_reasons": dict(sorted((unknown_reasons or {}).items())),
        "instructions": {
            **{name: getattr(c, name) for name in INSTRUCTIONS},
            "other": dict(sorted(stats.other.items())),
        },
        "per_exit": {
            "vmread": distribution(stats.vmread_hist),
            "vmwrite": distribution(stats.vmwrite_hist),
        },
        "cache": {"hits": c.hits, "misses": c.misses},
        "simulated_seconds": stats.simulated_seconds,
        "by_reason": {
            reason_name(number): {
                "exits": t.exits,
                "vmread": t.vmread,
                "vmwrite": t.vmwrite,
                "simulated_seconds": t.simulated_seconds,
                "l0_exits": t.l0_exits,
            }
            for number, t in sorted(stats.by_reason.items(), key=lambda kv: -kv[1].exits)
        },
        "panics": {reason_name(n): count for n, count in sorted(stats.panics.items())},
        "l0": l0_summary(stats),
    }


def l0_summary(stats: BatchStats) -> dict[str, Any] | None:
    """The ``"l0"`` object of a run summary; None in native mode."""
    if stats.l0_model is None:
        return None
    return {
        "model": stats.l0_model,
        "exits": stats.l0_exits,
        "per_exit": distribution(stats.l0_hist),
        "by_cause": dict(sorted(stats.l0_by_cause.items(), key=lambda kv: (-kv[1], kv[0]))),
        "vmcs02_rebuilds": stats.vmcs02_rebuilds,
        "seconds": stats.l0_seconds,
    }
