"""Trace-reader throughput against a bare read-and-split loop over the same lines.

Generates ``--lines`` trace-cmd ``kvm_exit`` lines (the libtraceevent rendering, as in
``trace-cmd report``) with the exit mix and rip diversity of a real steady-state trace
(HIP24's 110k-exit report: APIC_WRITE ~51 %, HLT ~27 %, EPT_MISCONFIG ~10 %, ~1200 distinct
rips), writes them to a temporary directory, then times in one run:

- ``bare``: ``for line in file: line.split()`` (the floor any Python parser pays),
- ``rows``: ``FtraceReader.rows()`` (plain tuples),
- ``batches``: ``FtraceReader.batches(1000)`` (packed columns for the replay stream),
- ``records``: iterating the reader (``ExitRecord`` objects).

Prints a table and one JSON line. Usage: ``.venv/bin/python benchmarks/bench_readers.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vmxsim_client.traces import FtraceReader

MIX = (  # reason, weight (percent), info1 values seen with it
    ("APIC_WRITE", 51, ("380",)),
    ("HLT", 27, ("0",)),
    ("EPT_MISCONFIG", 10, ("0",)),
    ("MSR_WRITE", 7, ("0",)),
    ("EPT_VIOLATION", 4, ("d82", "181", "582", "784")),
    ("PREEMPTION_TIMER", 1, ("0",)),
)
DISTINCT_RIPS = 1200


def generate(path: Path, lines: int, seed: int = 0) -> None:
    """Write ``lines`` trace-cmd kvm_exit lines to ``path``."""
    rng = random.Random(seed)
    rips = [0xFFFFFFFF81000000 + rng.randrange(1 << 24) for _ in range(DISTINCT_RIPS)]
    names = [name for name, weight, _ in MIX for _ in range(weight)]
    infos = {name: info for name, _, info in MIX}
    stamp = 24006.249294
    with path.open("w") as out:
        for _ in range(lines):
            name = rng.choice(names)
            stamp += rng.randrange(1, 400) * 1e-6
            out.write(
                f" qemu-system-x86-483882 [005] {stamp:.6f}: kvm_exit:             "
                f"reason {name} rip 0x{rng.choice(rips):x} info {rng.choice(infos[name])} 0\n"
            )


def _bare(path: Path) -> int:
    count = 0
    with path.open() as f:
        for line in f:
            line.split()
            count += 1
    return count


def _reader(path: Path, view: str) -> int:
    with path.open() as f:
        reader = FtraceReader(f, source=str(path))
        if view == "rows":
            for _ in reader.rows():
                pass
        elif view == "batches":
            for _ in reader.batches(1000):
                pass
        else:
            for _ in reader:
                pass
        assert reader.skipped == 0 and reader.exits == reader.lines
        return reader.lines


def _best_rate(run: Callable[[], int], repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        lines = run()
        best = max(best, lines / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per variant")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kvm_exit.txt"
        generate(path, args.lines)
        rates = {"bare": _best_rate(lambda: _bare(path), args.repeat)}
        for view in ("rows", "batches", "records"):
            rates[view] = _best_rate(lambda v=view: _reader(path, v), args.repeat)  # type: ignore[misc]
    print(f"{'variant':<10} {'lines/s':>12} {'ratio':>7}")
    for name, rate in rates.items():
        print(f"{name:<10} {rate:>12,.0f} {rate / rates['bare']:>7.2f}")
    result = {
        "lines": args.lines,
        "python": sys.version.split()[0],
        **{f"{name}_lines_per_s": round(rate) for name, rate in rates.items()},
        **{
            f"{name}_ratio": round(rates[name] / rates["bare"], 3)
            for name in rates
            if name != "bare"
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
