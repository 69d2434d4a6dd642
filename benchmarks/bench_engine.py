"""In-process engine throughput per profile, side by side with two naive baselines, in one run.

    .venv/bin/python benchmarks/bench_engine.py [--exits N] [--mix NAME] [--json-only]

Baselines (same exits, same machine, same run):
- "naive dict": per exit, the profile's mean number of VMREADs and VMWRITEs done one field at a
  time through a dict of field values (DESIGN.md: ~360,000 exits/s for 30 reads + 20 writes);
- "reference": vmxsim's own field-at-a-time interpreter (vmx/reference.py), the specification
  the compiled engine is tested against.
Targets (issue 4): kvm >= 300,000 exits/s on one core; every profile faster than its naive dict.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from vmxsim_server.vmx import Vcpu
from vmxsim_server.vmx.engine import Engine
from vmxsim_server.vmx.fields import FIELDS
from vmxsim_server.vmx.latency import LatencyModel
from vmxsim_server.vmx.mixes import load_mix, synthesize
from vmxsim_server.vmx.profiles import available_profiles, load_profile
from vmxsim_server.vmx.records import ExitBatch
from vmxsim_server.vmx.reference import run_reference


def _best_of(runs: int, work) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def naive_dict(records, reads: int, writes: int) -> None:
    """Per exit: store the exit information, then ``reads`` + ``writes`` dict accesses."""
    names = [f.name for f in FIELDS]
    read_names = [names[i % len(names)] for i in range(reads)]
    write_names = [names[(i * 7) % len(names)] for i in range(writes)]
    values = dict.fromkeys(names, 0)
    counts = {"vmread": 0, "vmwrite": 0}
    for record in records:
        values["VM_EXIT_REASON"] = record.reason
        values["GUEST_RIP"] = record.rip
        values["EXIT_QUALIFICATION"] = record.qualification
        for name in read_names:
            _ = values[name]
            counts["vmread"] += 1
        for name in write_names:
            values[name] = record.rip
            counts["vmwrite"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=300_000)
    parser.add_argument("--mix", default="linux-boot")
    parser.add_argument("--mode", default="nested")
    parser.add_argument("--runs", type=int, default=3, help="best of N runs per measurement")
    args = parser.parse_args()
    records = list(synthesize(load_mix(args.mix), args.exits, seed=0))
    batch = ExitBatch.from_records(records)
    small = records[: max(1, args.exits // 10)]
    rows = []
    for name in available_profiles():
        profile = load_profile(name)

        def engine_run(profile=profile) -> None:
            Engine(Vcpu(), profile, LatencyModel(args.mode)).run_batch(batch)

        seconds = _best_of(args.runs, engine_run)
        stats = Engine(Vcpu(), profile, LatencyModel(args.mode)).run_batch(batch)
        reads = round(stats.counters.vmread / stats.exits)
        writes = round(stats.counters.vmwrite / stats.exits)
        naive = _best_of(args.runs, lambda r=reads, w=writes: naive_dict(records, r, w))
        ref = _best_of(1, lambda p=profile: run_reference(p, LatencyModel(args.mode), small))
        rows.append({
            "profile": name,
            "engine_exits_per_s": args.exits / seconds,
            "naive_dict_exits_per_s": args.exits / naive,
            "naive_reads_writes": [reads, writes],
            "reference_exits_per_s": len(small) / ref,
            "speedup_vs_naive": naive / seconds,
        })  # fmt: skip
    header = ("profile", "engine", "naive dict", "(r+w)", "reference", "x naive")
    print("{:12} {:>12} {:>12} {:>8} {:>12} {:>8}".format(*header))
    for r in rows:
        rw = "{}+{}".format(*r["naive_reads_writes"])
        print(
            f"{r['profile']:12} {r['engine_exits_per_s']:12,.0f}"
            f" {r['naive_dict_exits_per_s']:12,.0f} {rw:>8}"
            f" {r['reference_exits_per_s']:12,.0f} {r['speedup_vs_naive']:8.1f}"
        )
    kvm = next(r for r in rows if r["profile"] == "kvm")
    result = {
        "benchmark": "engine",
        "exits": args.exits,
        "mix": args.mix,
        "mode": args.mode,
        "python": platform.python_version(),
        "rows": rows,
        "targets": {
            "kvm_at_least_300k": kvm["engine_exits_per_s"] >= 300_000,
            "every_profile_faster_than_naive": all(r["speedup_vs_naive"] > 1 for r in rows),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
