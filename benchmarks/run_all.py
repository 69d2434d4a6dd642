"""Run every benchmark (``benchmarks/bench_*.py``) and collect their results in one file.

    .venv/bin/python benchmarks/run_all.py [--quick] [--out results/benchmarks.json]
        [--only NAME[,NAME...]] [--jobs N]

Each benchmark is a script in this directory that prints a table and, as its last JSON line,
its result; they run one after another (they would disturb each other's timings), each in its
own interpreter, with their tables passed through as each one ends. ``--quick`` runs every one
with small sizes, two at a time (``--jobs``): a smoke run under a minute on 2 cores, not
figures to quote (much of a small run is start-up and fixed-length load cells, which overlap).
The output file holds, per benchmark, the exact command, its wall time, its exit status and the
parsed JSON line; the exit status is 1 when any benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK: dict[str, list[str]] = {
    # the --quick arguments of each benchmark (full size: none); run in this order
    "bench_engine": ["--exits", "30000", "--runs", "1"],
    "bench_metrics": ["--exits", "50000", "--runs", "1"],
    "bench_readers": [
        "--exits",
        "50000",
        "--repeat",
        "1",
        "--era",
        "trace-cmd",
        "--era",
        "5.16-ftrace",
    ],
    "bench_remote": ["--exits", "50000"],
    "bench_e2e": ["--exits", "10000", "--repeat", "1", "--era", "5.16-ftrace"],
    "bench_tokenizers": ["--exits", "20000", "--repeat", "1", "--era", "5.16-ftrace"],
    "bench_startup": ["--runs", "1"],
    "bench_fairness": [
        "--seconds",
        "0.5",
        "--repeat",
        "1",
        "--exits",
        "5000",
        "--replays",
        "4",
        "--mix-exits",
        "20000",
    ],
    "bench_replay_rss": ["--sizes", "20000"],
    "bench_grpc_ceiling": ["--exits", "100000"],
    "bench_scaling": ["--seconds", "0.3", "--clients", "4", "--mix-exits", "20000"],
    "bench_vcpu_memory": ["--vcpus", "1000"],
    "bench_vmread_latency": ["--calls", "500"],
    "bench_growth": ["--quick", "--json"],
    "bench_reader_contention": ["--exits", "100000", "--repeat", "1", "--era", "5.16-ftrace"],
}
BENCHMARKS = [*QUICK, *sorted({p.stem for p in HERE.glob("bench_*.py")} - set(QUICK))]
"""Every ``bench_*.py`` here: those of QUICK first, any other after (run as they are)."""


def last_json_line(output: str) -> dict[str, object] | None:
    """The last line of ``output`` that is a JSON object."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return None


_PRINTING = threading.Lock()


def run(name: str, arguments: list[str]) -> dict[str, object]:
    """One benchmark in a child interpreter; its table is printed when it ends."""
    command = [sys.executable, str(HERE / f"{name}.py"), *arguments]
    started = time.perf_counter()
    child = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    with _PRINTING:
        print(f"\n== {name}: {' '.join(command[1:])}\n{child.stdout}", end="", flush=True)
    return {
        "name": name,
        "command": " ".join([".venv/bin/python", f"benchmarks/{name}.py", *arguments]),
        "seconds": round(time.perf_counter() - started, 1),
        "status": child.returncode,
        "result": last_json_line(child.stdout),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks.json"))
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--jobs", type=int, help="benchmarks run at once (default 1; quick 2)")
    args = parser.parse_args()
    jobs = args.jobs or (2 if args.quick else 1)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(lambda name: run(name, QUICK.get(name, []) if args.quick else []),
                                names))  # fmt: skip
    document = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "jobs": jobs,
        "python": platform.python_version(),
        "machine": {"cpus": _cpus(), "platform": platform.platform()},
        "benchmarks": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    failed = [str(r["name"]) for r in results if r["status"] != 0 or r["result"] is None]
    print(f"\nwrote {args.out}; {len(results) - len(failed)}/{len(results)} benchmarks ok"
          + (f"; failed: {', '.join(failed)}" if failed else ""))  # fmt: skip
    return 1 if failed else 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
