"""``vmxsim model``: the model's own numbers, computed in-process from the shipped data.

- ``model counts``: VMREADs and VMWRITEs per exit of each profile, per exit reason (the steady
  state: the cache warmed up by earlier exits of the same reason; ``panic`` where the profile has
  no handler) — the table of docs/model.md.
- ``model project``: per-exit simulated cost per profile on a mix (reasons HAXM panics on dropped
  for every profile), the predicted HAXM/KVM ratio next to the seed's 11.7x, the projection of
  "HAXM (after)", the nested model term by term (``projection.TERMS``, from the VMX-only model
  of before to the full L0 model), and with ``--sensitivity`` every parameter's effect;
  ``--mix all`` prints one summary row per shipped mix.
"""

from __future__ import annotations

import argparse
from typing import Any

from vmxsim_server.vmx import Vcpu
from vmxsim_server.vmx.engine import BatchStats, Engine
from vmxsim_server.vmx.l0 import available_l0_models
from vmxsim_server.vmx.latency import MODES, LatencyModel
from vmxsim_server.vmx.mixes import available_mixes, load_mix
from vmxsim_server.vmx.profiles import DEFAULT_L0, available_profiles, load_profile
from vmxsim_server.vmx.projection import (
    HAXM_PROFILES,
    SEED_HAXM_SECONDS,
    SEED_KVM_SECONDS,
    SEED_PROFILES,
    Priced,
    Projection,
    decompose,
    mix_stats,
    priced_mix,
    project,
    seed_roles,
)
from vmxsim_server.vmx.records import ExitBatch
from vmxsim_server.vmx.sensitivity import sensitivity
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
            number = reason if reason >= 0 else 0xFFFF
            if load_profile(name).handler(number).panic:
                row[name] = "panic"  # no handler: the hypervisor stops the VM (dump_vmcs)
                continue
            reads, writes = steady_counts(name, number)
            row[name] = f"{reads}/{writes}"
        rows.append(row)
    render_rows(rows, ["reason", *names], args.format)
    return 0


def _per_exit_row(name: str, stats: BatchStats) -> dict[str, Any]:
    c, n = stats.counters, max(stats.exits, 1)
    return {
        "profile": name,
        "vmread/exit": round(c.vmread / n, 2),
        "vmwrite/exit": round(c.vmwrite / n, 2),
        "vmptrld/exit": round(c.vmptrld / n, 2),
        "vmclear/exit": round(c.vmclear / n, 2),
        "vmxon+vmxoff/exit": round((c.vmxon + c.vmxoff) / n, 2),
        "other/exit": round(sum(stats.other.values()) / n, 2),
        "l0 exits/exit": round(stats.l0_exits / n, 2),
        "rebuilds/exit": round(stats.vmcs02_rebuilds / n, 2),
        "cache hits/exit": round(c.hits / n, 2),
    }


def _projection_row(label: str, key: str, p: Projection) -> dict[str, Any]:
    return {
        key: label,
        "kvm us/exit": f"{p.cost_kvm * 1e6:.2f}",
        "haxm-legacy us/exit": f"{p.cost_legacy * 1e6:.2f}",
        "haxm-cache us/exit": f"{p.cost_cache * 1e6:.2f}",
        "haxm/kvm": f"{p.predicted_ratio:.2f}x",
        "residual": f"{p.residual_factor:.2f}x",
        "after (exits only) s": f"{p.after_exits_only:.1f}" + (" SLOWER" if p.after_slower else ""),
        "after (fitted) s": "n/a (G<0)" if p.after_fitted is None else f"{p.after_fitted:.1f}",
    }


def _dropped_text(priced: Priced) -> str:
    if not priced.dropped:
        return "none"
    return ", ".join(f"{reason_name(r)} {share * 100:.2g}%" for r, share in priced.dropped.items())


def _json_projection(p: Projection) -> dict[str, Any]:
    return p.__dict__ | {"residual_factor": p.residual_factor, "after_slower": p.after_slower}


def _check(args: argparse.Namespace) -> list[str]:
    modes: list[str] = str(args.modes).split(",")
    for mode in modes:
        if mode not in MODES:
            raise CliError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
    if args.l0 is not None and args.l0 not in available_l0_models():
        raise CliError(f"unknown L0 model {args.l0!r} (one of {', '.join(available_l0_models())})")
    if args.exits < 100:
        raise CliError(f"--exits {args.exits} is too small for a mix (at least 100)")
    return modes


def _roles(args: argparse.Namespace) -> dict[str, str]:
    """``--profile ROLE=NAME_OR_PATH`` options as a role map, checked."""
    found: dict[str, str] = {}
    for item in args.profile or []:
        role, sep, name = str(item).partition("=")
        if not sep or role not in SEED_PROFILES or not name:
            raise CliError(f"--profile {item!r}: expected ROLE=PROFILE with ROLE one of "
                           f"{', '.join(SEED_PROFILES)}")  # fmt: skip
        load_profile(name)  # a bad name or file is reported here, in one line
        found[role] = name
    return found


def _cmd_all_mixes(args: argparse.Namespace, roles: dict[str, str]) -> int:
    rows: list[dict[str, Any]] = []
    for name in available_mixes():
        priced = priced_mix(load_mix(name), [seed_roles(roles)[r] for r in HAXM_PROFILES])
        steps = decompose(priced.mix, "nested", args.exits, args.l0 or DEFAULT_L0, None, roles)
        before, full = steps[0][1], steps[-1][1]
        rows.append({
            "mix": name,
            "dropped (HAXM panics)": _dropped_text(priced),
            "vmx-only haxm/kvm": f"{before.predicted_ratio:.2f}x",
            "full haxm/kvm": f"{full.predicted_ratio:.2f}x",
            "residual": f"{full.residual_factor:.2f}x",
            "after vmx-only s": f"{before.after_exits_only:.1f}",
            "after full s": f"{full.after_exits_only:.1f}",
            "after vs before": f"{full.after_exits_only / SEED_HAXM_SECONDS - 1:+.1%}",
        })  # fmt: skip
    if args.json:
        emit_json({"l0": args.l0 or DEFAULT_L0, "mixes": rows}, indent=2)
    else:
        print(f"nested under {args.l0 or DEFAULT_L0}, {args.exits:,} exits per mix; seed: KVM "
              f"{SEED_KVM_SECONDS} s, HAXM {SEED_HAXM_SECONDS} s")  # fmt: skip
        render_rows(rows, list(rows[0]), "table")
    return 0


def _cmd_project(args: argparse.Namespace) -> int:
    modes = _check(args)
    roles = _roles(args)
    if args.mix == "all":
        return _cmd_all_mixes(args, roles)
    priced = priced_mix(load_mix(args.mix), [seed_roles(roles)[r] for r in HAXM_PROFILES])
    results: list[Projection] = []
    counts: list[dict[str, Any]] = []
    for mode in modes:
        l0 = args.l0 if mode != "native" else None
        profiles = seed_roles(roles) | {"kvm-modern": "kvm-modern"}
        stats = mix_stats(profiles, mode, priced.mix, args.exits, None, l0)
        results.append(
            project({n: s.simulated_seconds / max(s.exits, 1) for n, s in stats.items()}, mode)
        )
        if mode == "nested" or not counts:
            counts = [_per_exit_row(name, s) for name, s in stats.items()]
    l0_name = args.l0 or DEFAULT_L0
    terms = decompose(priced.mix, "nested", args.exits, l0_name, None, roles)
    sens = (
        sensitivity(priced.mix, "nested", min(args.exits, 5000), l0_name, roles)
        if args.sensitivity
        else None
    )
    if args.json:
        emit_json({
            "mix": priced.mix.name,
            "l0": l0_name,
            "dropped": {reason_name(r): s for r, s in priced.dropped.items()},
            "seed": {"kvm_seconds": SEED_KVM_SECONDS, "haxm_seconds": SEED_HAXM_SECONDS},
            "projections": [_json_projection(p) for p in results],
            "per_exit": counts,
            "terms": [{"term": s.name, "adds": s.adds} | _json_projection(p) for s, p in terms],
            "sensitivity_nested": None if sens is None else [s.__dict__ for s in sens],
        }, indent=2)  # fmt: skip
        return 0
    print(f"mix {priced.mix.name}: {priced.mix.description}")
    print(f"seed: KVM {SEED_KVM_SECONDS} s, HAXM {SEED_HAXM_SECONDS} s "
          f"({SEED_HAXM_SECONDS / SEED_KVM_SECONDS:.1f}x), HAXM (after): TODO")  # fmt: skip
    print(f"L0 (nested modes): {l0_name}; dropped (HAXM panics): {_dropped_text(priced)}")
    render_rows(counts, list(counts[0]), "table")
    print()
    rows = [_projection_row(p.mode, "mode", p) for p in results]
    render_rows(rows, list(rows[0]), "table")
    print(f"\nnested under {l0_name}, term by term (cumulative):")
    render_rows([_projection_row(s.name, "term", p) for s, p in terms], list(rows[0]) and
                ["term", *list(rows[0])[1:]], "table")  # fmt: skip
    if sens is not None:
        print(
            f"\nnested under {l0_name}: each parameter alone "
            "(ratio at x0.5 / x1 / x2; value for the seed's 11.7x; value where after = before)"
        )
        srows = [{
            "parameter": s.name,
            "value": f"{s.value:,.2f}",
            "status": s.status,
            "ratio x0.5/x1/x2": f"{s.ratio_half:.2f} / {s.ratio:.2f} / {s.ratio_double:.2f}",
            "for 11.7x": "unreachable" if s.for_seed_ratio is None else f"{s.for_seed_ratio:,.0f}",
            "after = before at": "never" if s.after_break_even is None
            else f"{s.after_break_even:,.0f}",
        } for s in sens]  # fmt: skip
        render_rows(srows, list(srows[0]), "table")
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
    j.add_argument(
        "--mix",
        default="linux-boot",
        help=f"one of {', '.join(available_mixes())}, or all (one summary row per mix)",
    )
    j.add_argument(
        "--l0",
        default=None,
        help=f"L0 model of the nested modes (default: the profiles' {DEFAULT_L0})",
    )
    j.add_argument("--modes", default="native,nested,nested-shadow")
    j.add_argument("--exits", type=int, default=20_000, help="length of the synthetic sequence")
    j.add_argument(
        "--profile",
        action="append",
        metavar="ROLE=PROFILE",
        help=f"replace a role's profile ({', '.join(SEED_PROFILES)}) by a name or .toml "
        "path, for what-ifs (repeatable)",
    )
    j.add_argument(
        "--sensitivity",
        action="store_true",
        help="every latency and L0 parameter alone: ratios, value for 11.7x, break-even",
    )
    j.add_argument("--json", action="store_true", help="machine-readable output")
    j.set_defaults(func=_cmd_project)
