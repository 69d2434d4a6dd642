"""How to cut ftrace lines into columns, measured before choosing (issue 15, item 1).

    .venv/bin/python benchmarks/bench_tokenizers.py [--exits N] [--repeat R] [--era NAME]

On one generated trace per era (``bench_readers.generate``: every exit followed by its
``kvm_entry`` line), side by side in one run, alternating, ``--repeat`` rounds, over the same
1 MiB blocks already in memory (so the disk is out of it):

- ``partition``: the issue's yardstick, ``str`` lines, ``partition(" reason ")`` and a Counter,
- ``split+partition``: ``bytes.split(b"\\n")`` per block and one ``partition`` per line, nothing
  kept (what any per-line Python reader pays at least),
- ``regex``: one compiled regex over each block (``re.finditer``, named groups for the header's
  thread and timestamp and the payload), the values taken from the match: the "one compiled
  regex over the chunk" option,
- ``reader``: the project's reader (the C bulk path ``traces/_scan.c`` when built) on the same
  blocks: every column of the replay, exact.

Prints exits/s (median) and each way's median per-round ratio to ``partition``; one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_readers import ERAS, generate

from vmxsim_client.traces import FtraceReader
from vmxsim_client.traces.lines import LineSource

_EXIT = re.compile(
    rb"^(?P<head>[^\n]*?) (?P<stamp>\d+\.\d+): (?:kvm:)?kvm_exit: +(?P<payload>[^\n]*)$",
    re.MULTILINE,
)


def _blocks(path: Path) -> list[bytes]:
    """The file in blocks of about 1 MiB, each ending after a line break."""
    data, blocks, start = path.read_bytes(), [], 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + (1 << 20)) + 1 or len(data)
        blocks.append(data[start:end])
        start = end
    return blocks


def _partition(blocks: list[bytes]) -> int:
    counts: Counter[str] = Counter()
    for line in b"".join(blocks).decode().splitlines():
        _, sep, rest = line.partition(" reason ")
        if sep:
            counts[rest.partition(" ")[0]] += 1
    return counts.total()


def _split_partition(blocks: list[bytes]) -> int:
    exits = 0
    for block in blocks:
        for line in block.split(b"\n"):
            if line.partition(b"kvm_exit:")[1]:
                exits += 1
    return exits


def _regex(blocks: list[bytes]) -> int:
    exits = 0
    stamps: list[float] = []
    payloads: Counter[bytes] = Counter()
    for block in blocks:
        for match in _EXIT.finditer(block):
            stamps.append(float(match["stamp"]))
            payloads[match["payload"]] += 1
            exits += 1
    return exits


def _reader(blocks: list[bytes]) -> int:
    reader = FtraceReader(LineSource(blocks), source="bench")
    with reader:
        return sum(len(batch) for batch in reader.batches(4096))


WAYS: dict[str, Callable[[list[bytes]], int]] = {
    "partition": _partition,
    "split+partition": _split_partition,
    "regex": _regex,
    "reader": _reader,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--era", action="append", choices=sorted(ERAS), help="default: all")
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{'trace':<14}" + "".join(f"{name:>18}" for name in WAYS) + "   (exits/s, ratio)")
    with tempfile.TemporaryDirectory() as tmp:
        for era in args.era or list(ERAS):
            path = Path(tmp) / f"{era}.trace"
            generate(path, era, args.exits)
            blocks = _blocks(path)
            times: dict[str, list[float]] = {name: [] for name in WAYS}
            for _ in range(args.repeat):
                for name, way in WAYS.items():
                    started = time.perf_counter()
                    counted = way(blocks)
                    times[name].append(time.perf_counter() - started)
                    assert counted == args.exits, (name, counted)
            result = results[era] = {
                name: {
                    "exits_per_second": args.exits / statistics.median(values),
                    "ratio": statistics.median(
                        p / v for p, v in zip(times["partition"], values, strict=True)
                    ),
                }
                for name, values in times.items()
            }
            cells = "".join(
                f"{r['exits_per_second']:>11,.0f} {r['ratio']:>5.2f}" for r in result.values()
            )
            print(f"{era:<14}{cells}", flush=True)
    print(json.dumps({"benchmark": "tokenizers", "exits": args.exits, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
