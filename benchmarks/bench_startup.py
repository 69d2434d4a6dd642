"""Start-up: wall time of ``vmxsim fields`` and ``vmxsim exit-reasons`` (fresh processes), side
by side with ``python -c pass`` and ``python -c "import vmxsim_server.vmx"`` (the interpreter and
the core tables they print, the floor of these commands).

    .venv/bin/python benchmarks/bench_startup.py [--runs N]

Median of ``--runs`` alternating rounds. Target: ``vmxsim fields`` under 0.15 s. Prints a table
and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

VMXSIM = str(Path(sys.executable).with_name("vmxsim"))
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import vmxsim_server.vmx": [sys.executable, "-c", "import vmxsim_server.vmx"],
    "vmxsim fields": [VMXSIM, "fields"],
    "vmxsim exit-reasons": [VMXSIM, "exit-reasons"],
    "vmxsim replay --help": [VMXSIM, "replay", "--help"],
}
TARGET_SECONDS = 0.15


def wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    rounds = [{name: wall(cmd) for name, cmd in COMMANDS.items()} for _ in range(args.runs)]
    medians = {name: statistics.median(r[name] for r in rounds) for name in COMMANDS}
    print(f"median wall seconds of {args.runs} alternating runs")
    for name, seconds in medians.items():
        print(f"  {name:<28}{seconds:>8.3f}")
    fields = medians["vmxsim fields"]
    print(f"vmxsim fields: {fields:.3f} s (target < {TARGET_SECONDS} s)")
    print(json.dumps({"benchmark": "startup", "runs": args.runs,
                      "seconds": {k: round(v, 3) for k, v in medians.items()},
                      "target_met": fields < TARGET_SECONDS}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
