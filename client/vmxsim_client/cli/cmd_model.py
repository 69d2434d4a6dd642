"""``vmxsim model``: the model's own numbers, computed in-process from the shipped data.

- ``model counts``: VMREADs and VMWRITEs per exit of each profile, per exit reason (the steady
  state: the cache warmed up by earlier exits of the same reason) — the table of docs/model.md.
- ``model project``: per-exit simulated cost per profile on a mix, the predicted HAXM/KVM ratio
  next to the seed's 11.7x, the projection of "HAXM (after)", and with ``--sensitivity`` the
  value each latency parameter alone would need to close the residual.
"""

from __future__ import annotations

import argparse
from typing import Any

from vmxsim_server.vmx import Vcpu
from vmxsim_server.vmx.engine import BatchStats, Engine
from vmxsim_server.vmx.latency import MODES, LatencyModel
from vmxsim_server.vmx.mixes import available_mixes, load_mix
from vmxsim_server.vmx.profiles import available_profiles, load_profile
from vmxsim_server.vmx.projection import (
    SEED_HAXM_SECONDS,
    SEED_KVM_SECONDS,
    mix_stats,
    project,
    sensitivity,
)
from vmxsim_server.vmx.records import ExitBatch
from vmxsim_server.vmx.summary import reason_name

from ..errors import CliError
from .output import FORMATS, emit_json, render_rows

__all__ = ["register"]

_STEADY_EXITS = 8


def _profiles(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in available_profiles() and not n.endswith(".toml")]
    if unknown or not names:
        raise CliError(f"unknown profile(s) {', '.join(unknown) or text!r} "
                       f"(known: {', '.join(available_profiles())})")  # fmt: skip
    return names


def steady_counts(profile_name: str, reason: int) -> tuple[int, int]:
    """VMREADs and VMWRITEs of one exit after a few exits of the same reason."""
    engine = Engine(Vcpu(), load_profile(profile_name), LatencyModel("native"))
    stats = engine.run_batch(ExitBatch([reason] * _STEADY_EXITS), per_exit=True)
    return stats.per_exit_vmread[-1], stats.per_exit_vmwrite[-1]


def _cmd_counts(args: argparse.Namespace) -> int:
    names = _profiles(args.profiles)
    reasons = sorted({r for n in names for r in load_profile(n).handlers})
    rows: list[dict[str, Any]] = []
    for reason in [*reasons, -1]:
        row: dict[str, Any] = {"reason": "other (default)" if reason < 0 else reason_name(reason)}
        for name in names:
            reads, writes = steady_counts(name, reason if reason >= 0 else 0xFFFF)
            row[name] = f"{reads}/{writes}"
        rows.append(row)
    render_rows(rows, ["reason", *names], args.format)
    return 0


def _per_exit_row(name: str, stats: BatchStats) -> dict[str, Any]:
    c, n = stats.counters, stats.exits
    return {
        "profile": name,
        "vmread/exit": round(c.vmread / n, 2),
        "vmwrite/exit": round(c.vmwrite / n, 2),
        "vmptrld/exit": round(c.vmptrld / n, 2),
        "vmclear/exit": round(c.vmclear / n, 2),
        "vmxon+vmxoff/exit": round((c.vmxon + c.vmxoff) / n, 2),
        "cache hits/exit": round(c.hits / n, 2),
    }


def _cmd_project(args: argparse.Namespace) -> int:
    mix = load_mix(args.mix)
    profiles = ["kvm", "haxm-legacy", "haxm-cache", "kvm-modern"]
    results = []
    counts: list[dict[str, Any]] = []
    for mode in args.modes.split(","):
        if mode not in MODES:
            raise CliError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
        stats = mix_stats(profiles, mode, mix, args.exits)
        results.append(project({n: s.simulated_seconds / s.exits for n, s in stats.items()}, mode))
        if not counts:
            counts = [_per_exit_row(name, s) for name, s in stats.items()]
    sens = sensitivity(mix, "nested", min(args.exits, 5000)) if args.sensitivity else None
    if args.json:
        emit_json({
            "mix": mix.name,
            "seed": {"kvm_seconds": SEED_KVM_SECONDS, "haxm_seconds": SEED_HAXM_SECONDS},
            "projections": [p.__dict__ | {"residual_factor": p.residual_factor} for p in results],
            "per_exit": counts,
            "sensitivity_nested": sens,
        }, indent=2)  # fmt: skip
        return 0
    print(f"mix {mix.name}: {mix.description}")
    print(f"seed: KVM {SEED_KVM_SECONDS} s, HAXM {SEED_HAXM_SECONDS} s "
          f"({SEED_HAXM_SECONDS / SEED_KVM_SECONDS:.1f}x), HAXM (after): TODO")  # fmt: skip
    render_rows(counts, list(counts[0]), "table")
    print()
    rows = [
        {
            "mode": p.mode,
            "kvm us/exit": f"{p.cost_kvm * 1e6:.2f}",
            "haxm-legacy us/exit": f"{p.cost_legacy * 1e6:.2f}",
            "haxm-cache us/exit": f"{p.cost_cache * 1e6:.2f}",
            "haxm/kvm": f"{p.predicted_ratio:.2f}x",
            "residual": f"{p.residual_factor:.2f}x",
            "after (exits only) s": f"{p.after_exits_only:.1f}",
            "after (fitted) s": "n/a (G<0)" if p.after_fitted is None else f"{p.after_fitted:.1f}",
        }
        for p in results
    ]
    render_rows(rows, list(rows[0]), "table")
    if sens is not None:
        print("\nnested: the value each parameter alone would need for the seed's 11.7x")
        for name, value in sens.items():
            print(f"  {name:32} {'unreachable' if value is None else f'{value:,.0f}'}")
    return 0


def register(sub: Any) -> None:
    """Add ``model counts`` and ``model project`` to the CLI."""
    p = sub.add_parser("model", help="the model's per-reason counts and the seed projection")
    model = p.add_subparsers(dest="model_command", metavar="ACTION", parser_class=type(p))
    model.required = True
    c = model.add_parser("counts", help="VMREADs/VMWRITEs per exit, per reason and profile")
    c.add_argument("--profiles", default=",".join(available_profiles()),
                   help="comma-separated profiles (default: all shipped)")  # fmt: skip
    c.add_argument("--format", choices=FORMATS, default="table")
    c.set_defaults(func=_cmd_counts)
    j = model.add_parser("project", help="project the seed's 'HAXM (after)' from a mix")
    j.add_argument("--mix", default="linux-boot", help=f"one of {', '.join(available_mixes())}")
    j.add_argument("--modes", default="native,nested,nested-shadow")
    j.add_argument("--exits", type=int, default=20_000, help="length of the synthetic sequence")
    j.add_argument("--sensitivity", action="store_true", help="solve each parameter alone")
    j.add_argument("--json", action="store_true", help="machine-readable output")
    j.set_defaults(func=_cmd_project)
