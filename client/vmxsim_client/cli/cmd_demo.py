"""``vmxsim demo``: the bundled sample trace through HAXM (before and with its VMCS cache) and KVM,
native and nested, and what the comparison shows.

The sample (``data/sample-linux-boot.jsonl``, written by ``scripts/make_sample_trace``) is the
shipped ``linux-boot`` exit mix synthesised as 5,000 exits with seed 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from ..reports.comparison import DEFAULT_MODES, DEFAULT_PROFILES, compare, ratios
from ..reports.progress import Progress
from .cmd_compare import print_comparison
from .common import add_server_options, client_from_args, rpc_command
from .output import emit_json

__all__ = ["SAMPLE_TRACE", "register", "takeaways"]

SAMPLE_TRACE = "sample-linux-boot.jsonl"
# The seed's measurement: Windows XP installer boot, nested, KVM 45.4 s vs HAXM 532.5 s.
SEED_KVM_SECONDS, SEED_HAXM_SECONDS = 45.4, 532.5


def takeaways(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Two to four sentences on what the comparison shows (per-exit counts, slowdown)."""
    by_key = {(r["profile"], r["mode"]): r for r in runs}
    lines = []
    counts = []
    for profile in dict.fromkeys(r["profile"] for r in runs):
        run = next(r for r in runs if r["profile"] == profile)
        per = run["per_exit"]
        counts.append(f"{profile} {per['vmread']['mean']:.1f}/{per['vmwrite']['mean']:.1f}")
    lines.append(
        "VMREADs/VMWRITEs per exit: " + ", ".join(counts) + " (the seed measured HAXM 32-33/21-23"
        " and KVM 6-10/2-6)."
    )
    vs = ratios(runs)
    nested = {p: r for (p, m), r in by_key.items() if m == "nested" and r["exits"]}
    kvm = nested.get("kvm")
    if kvm is not None:
        seed = SEED_HAXM_SECONDS / SEED_KVM_SECONDS
        kvm_cost = kvm["simulated_seconds"] / kvm["exits"]
        parts = []
        for profile, run in nested.items():
            if profile == "kvm":
                continue
            ratio = run["simulated_seconds"] / run["exits"] / kvm_cost
            parts.append(f"{profile} {ratio:.1f}x")
        l0 = [f"{p} {r['l0']['exits'] / r['exits']:.1f}" for p, r in nested.items() if r.get("l0")]
        if parts:
            lines.append(
                "Nested (L0 " + str(kvm["l0"]["model"] if kvm.get("l0") else "?") + "), per exit "
                "against KVM: " + ", ".join(parts) + f" (the seed's XP boot: 532.5 s / 45.4 s = "
                f"{seed:.1f}x). L1 instructions L0 intercepts per exit: " + ", ".join(l0) + "."
            )
            legacy, cache = nested.get("haxm-legacy"), nested.get("haxm-cache")
            if legacy is not None and cache is not None:
                change = (
                    cache["simulated_seconds"]
                    / cache["exits"]
                    / (legacy["simulated_seconds"] / legacy["exits"])
                    - 1
                )
                verdict = "slower" if change > 0 else "faster"
                lines.append(
                    f"With the seed's VMCS cache, nested HAXM is {abs(change):.1%} {verdict} per "
                    "exit: its lazy reads reload the VMCS, and L0 intercepts every reload."
                )
    panics = {r["profile"]: sum(r.get("panics", {}).values()) for r in nested.values()}
    stopped = [f"{p} {n:,}" for p, n in panics.items() if n]
    if stopped:
        lines.append(
            "Exits the profile has no handler for stop the VM (HAXM panics with dump_vmcs); "
            'they are counted under "panics", not priced: ' + ", ".join(stopped) + "."
        )
    native = vs["vs_native"]
    if native:
        parts = [f"{p} {m['nested']:.1f}x" for p, m in native.items() if m.get("nested")]
        if parts:
            lines.append("Nested vs native, per profile: " + ", ".join(parts) + ".")
    lines.append(
        "The gap to the seed's 11.7x, and what would close it: `vmxsim model project "
        "--sensitivity` and docs/model.md; the best cache set: `vmxsim tune mix:linux-boot`."
    )
    return lines


@rpc_command
def _demo(args: argparse.Namespace) -> int:
    sample = resources.files("vmxsim_client").joinpath("data", SAMPLE_TRACE)
    with resources.as_file(sample) as path, client_from_args(args) as client:
        if not args.json:
            where = args.server or "an in-process server"
            print(
                f"Replaying the bundled sample trace ({path.name}: a Linux guest boot, linux-boot"
                f" mix) through {', '.join(DEFAULT_PROFILES)}, {' and '.join(DEFAULT_MODES)}, "
                f"on {where}.\n"
            )
        runs = compare(client, str(path), progress=Progress(enabled=not args.json))
    if args.json:
        emit_json({"trace": SAMPLE_TRACE, "runs": runs, "ratios": ratios(runs)})
        return 0
    print_comparison(runs)
    print()
    for line in takeaways(runs):
        print(line)
    return 0


def register(sub: Any) -> None:
    """Add ``demo`` to the CLI."""
    p = sub.add_parser(
        "demo",
        help="replay a bundled sample trace through HAXM and KVM, native and nested",
        description=__doc__.split("\n\n")[0],
    )
    add_server_options(p)
    p.set_defaults(func=_demo)
