"""Fair under load (issue 15.3): ``run_load`` (``vmxsim load``) with 64 streams against 4 on one
``vmxsim serve``, and 64 concurrent ``vmxsim replay --server`` CLI processes.

    .venv/bin/python benchmarks/bench_fairness.py [--seconds S] [--repeat R] [--exits N]

- load: 4 and 64 streams (clients x 1 vCPU), ``--seconds`` each, alternating, ``--repeat``
  rounds; total exits/s (median), the 64/4 ratio (median of the per-round ratios), batch
  round-trip p50/p99 and failed streams (any error). Targets: ratio >= 0.8, p99 <= 5 x p50, 0
  failed.
- CLI: 64 ``vmxsim replay TRACE --server ADDR --json`` processes started at once on a generated
  5.16+ trace of ``--exits`` exits; failures (exit status not 0 or a wrong count). Target: 0.

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_readers import generate

from vmxsim_client.load.local_servers import local_servers
from vmxsim_client.load.runner import LoadPlan, run_load

VMXSIM = str(Path(sys.executable).with_name("vmxsim"))
MIX_EXITS = 100_000
"""Exits of ``linux-boot`` each stream cycles through (``--mix-exits``: synthesizing them costs
~0.5 s per 100,000 at the start of each load cell)."""
STREAMS = (4, 64)
SERVE = ("--max-streams", "128", "--max-streams-per-client", "128", "--log-level", "warning")


def load_round(
    targets: tuple[str, ...], streams: int, seconds: float, mix_exits: int = MIX_EXITS
) -> dict[str, float]:
    """One ``run_load`` of ``streams`` streams (clients x 1 vCPU, round robin over ``targets``):
    total exits/s, batch round-trip p50/p99 (us) and failed streams."""
    source = f"mix:linux-boot:{mix_exits}:0"
    report = run_load(LoadPlan(targets, streams, 1, source, duration_seconds=seconds))
    latency = report["batch_latency_us"]
    return {"exits_per_s": report["exits_per_second"], "p50": latency["p50"],
            "p99": latency["p99"], "failed": sum(report["errors"].values())}  # fmt: skip


def cli_replays(address: str, trace: Path, exits: int, count: int) -> tuple[int, float]:
    """(failed replays, wall seconds) of ``count`` concurrent CLI replays."""
    command = [VMXSIM, "replay", str(trace), "--server", address, "--json"]
    started = time.perf_counter()
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(count)]  # fmt: skip
    failed = 0
    for child in children:
        out, err = child.communicate()
        ok = child.returncode == 0
        if ok:
            summary = json.loads(out)
            ok = summary["exits"] + sum(summary.get("panics", {}).values()) == exits
        if not ok:
            failed += 1
            print(f"  failed: status {child.returncode}: {err.decode()[-300:]}", file=sys.stderr)
    return failed, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--exits", type=int, default=50_000)
    parser.add_argument("--replays", type=int, default=64)
    parser.add_argument(
        "--mix-exits",
        type=int,
        default=MIX_EXITS,
        help="exits of linux-boot each stream cycles through",
    )
    args = parser.parse_args()
    rounds: list[dict[int, dict[str, float]]] = []
    with local_servers(1, SERVE) as (server,), tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            cells = {n: load_round((server.address,), n, args.seconds, args.mix_exits)
                     for n in STREAMS}  # fmt: skip
            rounds.append(cells)
        trace = Path(tmp) / "t.trace"
        generate(trace, "5.16-ftrace", args.exits)
        cli_failed, cli_seconds = cli_replays(server.address, trace, args.exits, args.replays)
    cells = {
        n: {k: statistics.median(r[n][k] for r in rounds) for k in rounds[0][n]} for n in STREAMS
    }
    ratio = statistics.median(r[64]["exits_per_s"] / r[4]["exits_per_s"] for r in rounds)
    tail = cells[64]["p99"] / cells[64]["p50"]
    tails = [round(r[64]["p99"] / r[64]["p50"], 2) for r in rounds]
    failed = sum(r[n]["failed"] for r in rounds for n in STREAMS)
    print(f"load, one server, {args.seconds:g} s per cell, median of {args.repeat}")
    print(f"{'streams':>8}{'exits/s':>12}{'p50 us':>10}{'p99 us':>10}{'failed':>8}")
    for n in STREAMS:
        c = cells[n]
        print(f"{n:>8}{c['exits_per_s']:>12,.0f}{c['p50']:>10,.0f}{c['p99']:>10,.0f}"
              f"{c['failed']:>8.0f}")  # fmt: skip
    print(f"64 / 4 streams: {ratio:.3f} (target >= 0.8); p99/p50 at 64: {tail:.2f} (<= 5;"
          f" per round {', '.join(map(str, tails))})")  # fmt: skip
    print(f"{args.replays} concurrent CLI replays of {args.exits:,} exits: {cli_failed} failed "
          f"({cli_seconds:.1f} s)")  # fmt: skip
    met = ratio >= 0.8 and tail <= 5 and failed == 0 and cli_failed == 0
    print(json.dumps({"benchmark": "fairness", "cells": cells, "ratio_64_vs_4": round(ratio, 3),
                      "p99_vs_p50_64": round(tail, 2), "p99_vs_p50_64_per_round": tails,
                      "failed_streams": failed,
                      "cli_replays": args.replays, "cli_failed": cli_failed,
                      "cli_seconds": round(cli_seconds, 1), "target_met": met}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
