"""In-process engine throughput per profile and mode, side by side with the naive per-field loop.

    .venv/bin/python benchmarks/bench_engine.py [--quick] [--exits N] [--batch N] [--mix NAME]
        [--mode native,nested] [--l0 default|all] [--runs N] [--columns packed|lists]

The same exits (``--exits`` of ``--mix`` drawn by ``mixes.synthesize``) in batches of ``--batch``
(4,096: the client's default), as the engine gets them in the server: packed uint64 columns
(``array('Q')``, what ``translate.exit_batch`` makes of the wire's ``*_packed`` bytes and the
trace readers build), or ``--columns lists`` (the repeated-field shape, packed by the engine).
Each run makes a new vCPU and engine (before the clock starts: that is CreateVcpu's cost, not the
exits') and times every ``run_batch``; nested modes use the profile's L0 model (``--l0 all``:
each shipped L0 model in turn).

Baselines, timed in the same rounds, alternating with the engine runs of the same profile:
- "naive dict": per exit, the profile's mean number of VMREADs and VMWRITEs done one field at a
  time through a dict of field values (DESIGN.md: ~360,000 exits/s for 30 reads + 20 writes);
- "reference": vmxsim's own field-at-a-time interpreter (vmx/reference.py), the specification
  the engine is tested against (once per profile, nested, on a hundredth of the exits).
Figures are per CPU second of this single-threaded process (exits/s per core: time the other
engineers' processes hold the core is not counted; wall-clock figures are under "wall" in the JSON),
medians over ``--runs`` rounds (at least 3), ratios the median of per-round ratios.
Targets (issue 15.2): every profile and mode >= 5 M exits/s and >= 10x its naive dict loop.
Prints a table and one JSON line; ``--quick`` is a small smoke run (under 10 s, not figures).
"""

from __future__ import annotations

import argparse
import array
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from vmxsim_server.vmx import ExitRecord, Vcpu
from vmxsim_server.vmx.engine import Engine
from vmxsim_server.vmx.fields import FIELDS
from vmxsim_server.vmx.l0 import available_l0_models
from vmxsim_server.vmx.latency import LatencyModel
from vmxsim_server.vmx.mixes import load_mix, synthesize
from vmxsim_server.vmx.profiles import Profile, available_profiles, load_profile
from vmxsim_server.vmx.records import COLUMNS, ExitBatch
from vmxsim_server.vmx.reference import run_reference

RUNS_AT_LEAST = 3
ENGINE_TARGET = 5_000_000
NAIVE_TARGET = 10.0


def _seconds(work: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) that ``work`` takes."""
    gc.collect()  # no collection of the previous run's garbage inside this one's time
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def naive_dict(records: list[ExitRecord], reads: int, writes: int) -> None:
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


def batches(records: list[ExitRecord], size: int, packed: bool) -> list[ExitBatch]:
    """The records as ExitBatches of ``size`` exits, every column filled."""
    whole = ExitBatch.from_records(records)
    out = []
    for start in range(0, len(records), size):
        columns = {name: getattr(whole, name)[start : start + size] for name in COLUMNS}
        if packed:
            columns = {name: array.array("Q", values) for name, values in columns.items()}
        out.append(ExitBatch(**columns))
    return out


def settings(modes: list[str], l0: str) -> list[tuple[str, str | None]]:
    """(mode, L0 model) pairs: native without one, nested ones with the profile's or each."""
    out: list[tuple[str, str | None]] = []
    for mode in modes:
        if mode == "native" or l0 == "default":
            out.append((mode, None))
        else:
            out += [(mode, name) for name in available_l0_models()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=4096, help="exits per run_batch call")
    parser.add_argument("--mix", default="linux-boot")
    parser.add_argument("--mode", default="native,nested", help="comma-separated modes")
    parser.add_argument("--l0", default="default", choices=["default", "all"])
    parser.add_argument("--runs", type=int, default=RUNS_AT_LEAST, help="rounds (at least 3)")
    parser.add_argument("--columns", default="packed", choices=["packed", "lists"])
    parser.add_argument("--quick", action="store_true", help="30,000 exits, no reference run")
    args = parser.parse_args()
    exits = 30_000 if args.quick else args.exits
    runs = max(RUNS_AT_LEAST, args.runs)
    load_before = os.getloadavg()
    records = list(synthesize(load_mix(args.mix), exits, seed=0))
    work = batches(records, args.batch, args.columns == "packed")
    pairs = settings(args.mode.split(","), args.l0)

    def engine_run(profile: Profile, mode: str, l0: str | None) -> tuple[float, float]:
        engine = Engine(Vcpu(), profile, LatencyModel(mode, l0=l0))
        engine.start()  # the vCPU's set-up for driving (VMXON, its VMCS, VMLAUNCH)

        def run() -> None:
            for batch in work:
                engine.run_batch(batch)

        return _seconds(run)

    rows: list[dict[str, Any]] = []
    for name in available_profiles():
        profile = load_profile(name)
        engine_runs: dict[tuple[str, str | None], list[tuple[float, float]]] = {
            pair: [] for pair in pairs
        }
        naive_runs: list[tuple[float, float]] = []
        first = Engine(Vcpu(), profile, LatencyModel(pairs[0][0], l0=pairs[0][1]))
        stats = first.run_batch(ExitBatch.from_records(records))  # also compiles the plans
        reads = round(stats.counters.vmread / stats.exits)
        writes = round(stats.counters.vmwrite / stats.exits)
        for pair in pairs:
            engine_run(profile, *pair)  # warm-up: this setting's plans compiled
        for _ in range(runs):
            for pair in pairs:
                engine_runs[pair].append(engine_run(profile, *pair))
            naive_runs.append(_seconds(partial(naive_dict, records, reads, writes)))
        reference = None
        if not args.quick:
            small = records[: max(1000, exits // 100)]
            seconds = _seconds(partial(run_reference, profile, LatencyModel("nested"), small))
            reference = len(small) / seconds[0]
        naive_cpu = [cpu for cpu, _ in naive_runs]
        for (mode, l0), times in engine_runs.items():
            cpu = [c for c, _ in times]
            ratios = [naive / engine for naive, engine in zip(naive_cpu, cpu, strict=True)]
            wall_ratios = [n / e for (_, n), (_, e) in zip(naive_runs, times, strict=True)]
            rows.append({
                "profile": name,
                "mode": mode,
                "l0": l0 or profile_l0(profile, mode),
                "engine_exits_per_s": exits / statistics.median(cpu),
                "engine_runs_exits_per_s": [exits / c for c in cpu],
                "naive_dict_exits_per_s": exits / statistics.median(naive_cpu),
                "naive_reads_writes": [reads, writes],
                "reference_exits_per_s": reference,
                "speedup_vs_naive": statistics.median(ratios),
                "wall": {
                    "engine_exits_per_s": exits / statistics.median(w for _, w in times),
                    "naive_dict_exits_per_s": exits / statistics.median(w for _, w in naive_runs),
                    "speedup_vs_naive": statistics.median(wall_ratios),
                },
            })  # fmt: skip
    print_table(rows)
    result = {
        "benchmark": "engine",
        "exits": exits,
        "batch": args.batch,
        "columns": args.columns,
        "mix": args.mix,
        "modes": args.mode.split(","),
        "runs": runs,
        "statistic": "median",
        "python": platform.python_version(),
        "loadavg_before_after": [load_before[0], os.getloadavg()[0]],
        "rows": rows,
        "targets": {
            "every_row_at_least_5M": all(r["engine_exits_per_s"] >= ENGINE_TARGET for r in rows),
            "every_row_at_least_10x_naive": all(
                r["speedup_vs_naive"] >= NAIVE_TARGET for r in rows
            ),
        },
    }
    print(json.dumps(result))


def profile_l0(profile: Profile, mode: str) -> str | None:
    """The L0 model a mode runs the profile under by default (None natively)."""
    model = LatencyModel(mode).l0_for(profile)
    return model.name if model is not None else None


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("profile", "mode", "L0", "engine/s", "naive/s", "(r+w)", "reference/s", "x naive")
    print("{:12} {:14} {:14} {:>12} {:>11} {:>7} {:>11} {:>8}".format(*header))
    for r in rows:
        rw = "{}+{}".format(*r["naive_reads_writes"])
        ref = "-" if r["reference_exits_per_s"] is None else f"{r['reference_exits_per_s']:,.0f}"
        print(
            f"{r['profile']:12} {r['mode']:14} {r['l0'] or '-':14}"
            f" {r['engine_exits_per_s']:12,.0f} {r['naive_dict_exits_per_s']:11,.0f} {rw:>7}"
            f" {ref:>11} {r['speedup_vs_naive']:8.1f}"
        )


if __name__ == "__main__":
    main()
