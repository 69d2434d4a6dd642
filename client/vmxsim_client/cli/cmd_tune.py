"""``vmxsim tune TRACE --base PROFILE``: the cache policy that minimises simulated time on a trace.

In-process (the search runs the engine hundreds of times; nothing of it belongs on the wire).
Prints the tuned policy's gain over the base profile's own policy and over the seed's policy
(the ``haxm-cache`` profile, intel/haxm PR #130), and the X-macro rows that implement it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vmxsim_server.vmx.latency import MODES
from vmxsim_server.vmx.profiles import load_profile
from vmxsim_server.vmx.tune import simulate, simulate_stats, tune

from ..errors import CliError
from ..traces import FORMATS, TraceParseError, add_limit_options, open_trace
from .output import emit_json

__all__ = ["register"]

SEED_PROFILE = "haxm-cache"


def _read_reasons(path: str, fmt: str | None, strict: bool, limit: int) -> tuple[list[int], Any]:
    try:
        reader = open_trace(path, format=fmt, strict=strict)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    with reader:
        reasons = [row[0] for row, _ in zip(reader.rows(), range(limit), strict=False)]
    return reasons, reader


def _cmd_tune(args: argparse.Namespace) -> int:
    if args.mode not in MODES:
        raise CliError(f"unknown mode {args.mode!r} (one of {', '.join(MODES)})")
    if args.max_exits < 1:
        raise CliError("--max-exits must be at least 1")
    base = load_profile(args.base)
    try:
        reasons, reader = _read_reasons(args.trace, args.format, args.strict, args.max_exits)
    except TraceParseError as exc:
        raise CliError(str(exc)) from None
    if not reasons:
        raise CliError(f"{args.trace}: no exits to tune on")
    show = sys.stderr.isatty() and not args.json

    def progress(done: int, total: int) -> None:
        if show:
            print(f"\rtuning: {done}/{total} fields", end="", file=sys.stderr, flush=True)

    l0 = args.l0 if args.mode != "native" else None
    result = tune(base, args.mode, reasons, progress, l0)
    if show:
        print(file=sys.stderr)
    seed_seconds = simulate(load_profile(SEED_PROFILE), args.mode, reasons, l0=l0)
    before = simulate_stats(base, args.mode, reasons, l0=l0)
    after = simulate_stats(base, args.mode, reasons, result.policy, l0)
    rows = result.policy.xmacro_rows()
    report = {
        "trace": args.trace,
        "exits": len(reasons),
        "skipped": reader.skipped,
        "unknown_reasons": dict(reader.unknown_reasons),
        "base": base.name,
        "mode": args.mode,
        "simulated_seconds": {
            "base": result.base_seconds,
            "seed_policy": seed_seconds,
            "tuned": result.best_seconds,
        },
        "gain_over_base": result.gain,
        "gain_over_seed_policy": 1 - result.best_seconds / seed_seconds if seed_seconds else 0.0,
        "policy": {
            "read": sorted(result.policy.read),
            "write": sorted(result.policy.write),
            "write_if_changed": sorted(result.policy.write_if_changed),
        },
        "xmacro_rows": rows,
        "evaluations": result.evaluations,
        "l0": {
            "model": before.l0_model,
            "exits": {"base": before.l0_exits, "tuned": after.l0_exits},
            "vmcs02_rebuilds": {"base": before.vmcs02_rebuilds, "tuned": after.vmcs02_rebuilds},
        }
        if before.l0_model
        else None,
        "assumptions": result.assumptions,
    }
    if args.json:
        emit_json(report, indent=2)
        return 0
    print(f"{len(reasons):,} exits from {args.trace}, base {base.name}, mode {args.mode}")
    print(f"  base policy      {result.base_seconds:.6f} s simulated")
    print(f"  seed policy      {seed_seconds:.6f} s ({SEED_PROFILE} profile)")
    print(f"  tuned policy     {result.best_seconds:.6f} s: {report['gain_over_base']:.1%} less "
          f"than the base, {report['gain_over_seed_policy']:.1%} less than the seed's")  # fmt: skip
    print(f"  {len(result.policy.read)} read-cached, {len(result.policy.write)} write-back, "
          f"{len(result.policy.write_if_changed)} write-if-changed fields")  # fmt: skip
    if report["l0"]:
        rebuilds = f"{before.vmcs02_rebuilds:,} -> {after.vmcs02_rebuilds:,}"
        print(f"  L0 {before.l0_model}: exits {before.l0_exits:,} -> {after.l0_exits:,}, "
              f"vmcs02 rebuilds {rebuilds}")  # fmt: skip
    for assumption in result.assumptions:
        print(f"  assumption: {assumption}")
    print("\n/* X-macro rows: COMP(cache_r, cache_w, width, NAME) */")
    for row in rows:
        print(row)
    return 0


def register(sub: Any) -> None:
    """Add ``tune`` to the CLI."""
    p = sub.add_parser(
        "tune",
        help="find the cache policy that minimises simulated time on a trace",
        description="Choose per field: read-cached, write-back or write-if-changed, from a trace. "
        "TRACE is a file in any readable format, '-', or mix:NAME[:EXITS[:SEED]].",
    )
    p.add_argument("trace", metavar="TRACE")
    p.add_argument("--base", default="haxm-legacy", help="profile to tune (name or .toml path)")
    p.add_argument("--mode", default="nested", help=f"one of {', '.join(MODES)} (default nested)")
    p.add_argument(
        "--l0", metavar="MODEL", help="L0 model of a nested mode (default: the profile's)"
    )
    p.add_argument("--format", choices=FORMATS, help="force the trace format")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed line")
    add_limit_options(p)
    p.add_argument(
        "--max-exits", type=int, default=200_000, help="tune on the first N exits (200000)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_tune)
