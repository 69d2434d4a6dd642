"""Trace-reader throughput against a bare ``str.partition()`` + ``Counter`` loop over the same file.

Generates, per kernel/tool era, a trace of ``--exits`` exits each followed by its ``kvm_entry``
line, with the exit mix and rip diversity of a real steady-state trace (HIP24's 110k-exit report:
APIC_WRITE ~51 %, HLT ~27 %, EPT_MISCONFIG ~10 %, ~1200 distinct rips) on two vCPU threads,
plain and gzip (level 1), then times side by side in one run, alternating, ``--repeat`` times:

- ``partition``: ``for line in open(path)`` (``gzip.open(path, "rt")``), ``line.partition(" reason
  ")`` and a ``Counter`` of the reason word (the floor of any Python reader of text lines),
- ``reader``: ``open_trace(path)`` and ``batches(4096)``: the packed columns a replay sends,
  every column parsed (reason, rip, infos, timestamp, vCPU, VM),
- ``reader+Counter``: the same plus ``Counter`` updates from each batch's reason column,
- ``floor``: the reader's own line source (1 MiB blocks split into ``bytes`` lines) and one
  ``bytes.partition`` per line, nothing else: what any reader that looks at each line pays.

Prints a table (median exits/s and the median of the per-round ratios) and one JSON line.
Usage: ``.venv/bin/python benchmarks/bench_readers.py [--exits N] [--repeat R] [--era NAME]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from vmxsim_client.traces import open_trace
from vmxsim_client.traces.compression import open_input
from vmxsim_client.traces.lines import LineSource

MIX = (  # reason, weight (percent), info1 values seen with it
    ("APIC_WRITE", 51, (0x380,)),
    ("HLT", 27, (0,)),
    ("EPT_MISCONFIG", 10, (0,)),
    ("MSR_WRITE", 7, (0,)),
    ("EPT_VIOLATION", 4, (0xD82, 0x181, 0x582, 0x784)),
    ("PREEMPTION_TIMER", 1, (0,)),
)
DISTINCT_RIPS = 1200
THREADS = (("CPU 0/KVM", 453724), ("CPU 1/KVM", 453725))


def _exit_2_6(name: str, rip: int, info: int) -> str:
    return f"reason {name.lower()} rip 0x{rip:x}"


def _exit_4(name: str, rip: int, info: int) -> str:
    return f"reason {name} rip 0x{rip:x} info {info:x} 0"


def _exit_5_16(name: str, rip: int, info: int, vcpu: int = 0) -> str:
    return (
        f"vcpu {vcpu} reason {name} rip 0x{rip:x} info1 0x{info:016x} info2 0x{0:016x} "
        f"intr_info 0x{0:08x} error_code 0x{0:08x}"
    )


# era -> (header format with {comm} {tid} {cpu} {stamp}, exit payload, entry payload)
ERAS: dict[str, tuple[str, Callable[..., str], str]] = {
    "2.6-ftrace": ("{comm}-{tid}  [{cpu:03d}]  {stamp:.6f}: ", _exit_2_6, "vcpu {vcpu}"),
    "4.x-ftrace": ("{comm}-{tid}  [{cpu:03d}] d... {stamp:.6f}: ", _exit_4, "vcpu {vcpu}"),
    "trace-cmd": (" {comm}-{tid} [{cpu:03d}] {stamp:.6f}: ", _exit_4, "vcpu {vcpu} rip 0x{rip:x}"),
    "5.16-ftrace": (
        "{comm}-{tid}  [{cpu:03d}] d.... {stamp:.6f}: ",
        _exit_5_16,
        "vcpu {vcpu}, rip 0x{rip:x}",
    ),
    "perf-script": ("{comm} {tid:>6} [{cpu:03d}] {stamp:.6f}: kvm:", _exit_4, "vcpu {vcpu}"),
}


def generate(path: Path, era: str, exits: int, seed: int = 0) -> None:
    """Write ``exits`` kvm_exit lines of ``era``, each followed by its kvm_entry line."""
    header, payload, entry = ERAS[era]
    pad = "             " if era == "trace-cmd" else " "  # trace-cmd pads after the event name
    rng = random.Random(seed)
    rips = [0xFFFFFFFF81000000 + rng.randrange(1 << 24) for _ in range(DISTINCT_RIPS)]
    names = [name for name, weight, _ in MIX for _ in range(weight)]
    infos = {name: info for name, _, info in MIX}
    stamp = 24006.249294
    with path.open("w") as out:
        for _ in range(exits):
            name = rng.choice(names)
            vcpu = rng.randrange(len(THREADS))
            comm, tid = THREADS[vcpu]
            rip = rng.choice(rips)
            stamp += rng.randrange(1, 400) * 1e-6
            head = header.format(comm=comm, tid=tid, cpu=vcpu + 4, stamp=stamp)
            args = (name, rip, rng.choice(infos[name]))
            body = _exit_5_16(*args, vcpu=vcpu) if payload is _exit_5_16 else payload(*args)
            out.write(f"{head}kvm_exit:{pad}{body}\n")
            text = entry.format(vcpu=vcpu, rip=rip + 1)
            out.write(f"{header.format(comm=comm, tid=tid, cpu=vcpu + 4, stamp=stamp + 1e-6)}")
            out.write(f"kvm_entry:{pad}{text}\n")


def _partition(path: Path) -> int:
    counts: Counter[str] = Counter()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        for line in f:
            _, sep, rest = line.partition(" reason ")
            if sep:
                counts[rest.partition(" ")[0]] += 1
    return counts.total()


def _reader(path: Path) -> int:
    exits = 0
    with open_trace(path) as reader:
        for batch in reader.batches(4096):
            exits += len(batch)
        assert reader.skipped == 0 and reader.exits == exits, reader.errors
    return exits


def _reader_counter(path: Path) -> int:
    counts: Counter[int] = Counter()
    with open_trace(path) as reader:
        for batch in reader.batches(4096):
            counts.update(batch.reason)
    return counts.total()


def _floor(path: Path) -> int:
    source = open_input(path)
    exits = 0
    try:
        for lines in LineSource(source.blocks()).lists():
            for line in lines:
                if line.partition(b"kvm_exit:")[1]:
                    exits += 1
    finally:
        source.close()
    return exits


WAYS: dict[str, Callable[[Path], int]] = {
    "partition": _partition,
    "reader": _reader,
    "reader+Counter": _reader_counter,
    "floor": _floor,
}


def measure(path: Path, repeat: int) -> dict[str, dict[str, float]]:
    """Median exits/s of each way, and the median per-round ratio to the partition loop."""
    rates: dict[str, list[float]] = {name: [] for name in WAYS}
    for _ in range(repeat):
        for name, way in WAYS.items():  # side by side, alternating, in the same run
            start = time.perf_counter()
            exits = way(path)
            rates[name].append(exits / (time.perf_counter() - start))
    base = rates["partition"]
    return {
        name: {
            "exits_per_second": statistics.median(values),
            "ratio": statistics.median(v / b for v, b in zip(values, base, strict=True)),
        }
        for name, values in rates.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--era", action="append", choices=sorted(ERAS), help="default: all")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, dict[str, float]]] = {}
    print(
        f"{'trace':24} {'partition/s':>12} {'reader/s':>12} {'ratio':>6} {'+Counter':>8} "
        f"{'floor':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for era in args.era or list(ERAS):
            plain = Path(tmp) / f"{era}.trace"
            generate(plain, era, args.exits)
            packed = plain.with_suffix(".gz")
            with plain.open("rb") as src, gzip.open(packed, "wb", compresslevel=1) as dst:
                while data := src.read(1 << 20):
                    dst.write(data)
            for path in (plain, packed):
                label = f"{era}{'.gz' if path is packed else ''}"
                result = results[label] = measure(path, args.repeat)
                print(
                    f"{label:24} {result['partition']['exits_per_second']:12,.0f} "
                    f"{result['reader']['exits_per_second']:12,.0f} "
                    f"{result['reader']['ratio']:6.2f} {result['reader+Counter']['ratio']:8.2f} "
                    f"{result['floor']['ratio']:6.2f}",
                    flush=True,
                )
            plain.unlink()
            packed.unlink()
    print(json.dumps({"exits": args.exits, "repeat": args.repeat, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
