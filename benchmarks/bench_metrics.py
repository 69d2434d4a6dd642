"""Replay throughput with Prometheus metrics on and off, in one run (the cost of observing).

    .venv/bin/python benchmarks/bench_metrics.py [--exits N] [--batch N] [--profile P] [--runs N]

Both sides replay the same exits through an in-process Engine in batches (default 500,000
exits of mix linux-boot, batches of 4,096, profile kvm, mode nested); "on" also hands every
batch's stats to ``MetricsObserver.on_batch`` (the server's per-batch hook), "off" does not.
The runs alternate and the best of N is kept for each side, so machine noise hits both alike.
Target: throughput with metrics >= 0.9 x without. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from prometheus_client import CollectorRegistry, generate_latest

from vmxsim_server.metrics import MetricsObserver
from vmxsim_server.vmx import Vcpu
from vmxsim_server.vmx.engine import Engine
from vmxsim_server.vmx.latency import LatencyModel
from vmxsim_server.vmx.mixes import load_mix, synthesize
from vmxsim_server.vmx.profiles import load_profile
from vmxsim_server.vmx.records import ExitBatch

TARGET_RATIO = 0.9


def replay(
    batches: list[ExitBatch], profile: str, mode: str, observer: MetricsObserver | None
) -> tuple[float, float]:
    """Run every batch on a fresh vCPU; returns (seconds, seconds spent in on_batch)."""
    engine = Engine(Vcpu(), load_profile(profile), LatencyModel(mode))
    observing = 0.0
    start = time.perf_counter()
    for batch in batches:
        stats = engine.run_batch(batch)
        if observer is not None:
            before = time.perf_counter()
            observer.on_batch(profile, mode, stats)
            observing += time.perf_counter() - before
    return time.perf_counter() - start, observing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=4096, help="exits per batch")
    parser.add_argument("--mix", default="linux-boot")
    parser.add_argument("--profile", default="kvm")
    parser.add_argument("--mode", default="nested")
    parser.add_argument("--runs", type=int, default=5, help="best of N runs per side")
    args = parser.parse_args()
    records = list(synthesize(load_mix(args.mix), args.exits, seed=0))
    batches = [
        ExitBatch.from_records(records[i : i + args.batch], sequence=n)
        for n, i in enumerate(range(0, len(records), args.batch))
    ]
    observer = MetricsObserver(CollectorRegistry())
    replay(batches[:4], args.profile, args.mode, observer)  # compile plans, bind children
    best = {"off": float("inf"), "on": float("inf")}
    observing = float("inf")
    for _ in range(args.runs):
        best["off"] = min(best["off"], replay(batches, args.profile, args.mode, None)[0])
        seconds, in_observer = replay(batches, args.profile, args.mode, observer)
        if seconds < best["on"]:
            best["on"], observing = seconds, in_observer
    rate = {side: args.exits / seconds for side, seconds in best.items()}
    ratio = rate["on"] / rate["off"]
    per_batch_us = observing / len(batches) * 1e6
    exposition = len(generate_latest(observer.registry))
    print(f"{'metrics':8} {'exits/s':>12} {'seconds':>9}")
    for side in ("off", "on"):
        print(f"{side:8} {rate[side]:12,.0f} {best[side]:9.3f}")
    print(
        f"ratio on/off {ratio:.3f} (target >= {TARGET_RATIO}); on_batch {per_batch_us:.1f} us"
        f" per batch of {args.batch}; /metrics {exposition:,} bytes"
    )
    print(
        json.dumps(
            {
                "benchmark": "metrics",
                "exits": args.exits,
                "batch": args.batch,
                "batches": len(batches),
                "mix": args.mix,
                "profile": args.profile,
                "mode": args.mode,
                "python": platform.python_version(),
                "exits_per_s_off": round(rate["off"]),
                "exits_per_s_on": round(rate["on"]),
                "ratio": round(ratio, 4),
                "on_batch_us": round(per_batch_us, 2),
                "metrics_bytes": exposition,
                "target_met": ratio >= TARGET_RATIO,
            }
        )
    )


if __name__ == "__main__":
    main()
