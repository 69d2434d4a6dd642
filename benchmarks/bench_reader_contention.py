"""The trace reader alone, and beside a thread that runs Python without pause: what the reader
of an embedded replay meets (the in-process server, gRPC and start-up's imports share its
process).

    .venv/bin/python benchmarks/bench_reader_contention.py [--exits N] [--repeat R] [--era NAME]

Per era a generated trace (``bench_readers.generate``), plain; alternating, ``--repeat``
rounds: ``open_trace(path).batches(16384)`` alone, then the same while another thread counts in
a Python loop; and that thread's rate against its rate alone. The reader's C scan runs without
the interpreter lock, but its thread takes the lock back after each file read, each scan call
and each hand-over of a batch, and each time may wait for the other thread's switch interval
(``sys.getswitchinterval()``, 5 ms). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_readers import ERAS, generate

from vmxsim_client.traces import open_trace

BATCH = 16384


def _read(path: Path) -> float:
    started = time.perf_counter()
    with open_trace(path) as reader:
        count = sum(len(batch.reason) for batch in reader.batches(BATCH))
    assert count == reader.exits
    return time.perf_counter() - started


def _spinning(work: object) -> tuple[float, float]:
    """Seconds of ``work()`` (or 0.5 s of nothing when None) while a thread counts in a Python
    loop, and the thread's count per second."""
    stop, counted = threading.Event(), [0]

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1
        counted[0] = count

    thread = threading.Thread(target=spin)
    started = time.perf_counter()
    thread.start()
    if work is None:
        time.sleep(0.5)
    else:
        work()  # type: ignore[operator]
    stop.set()
    thread.join()
    seconds = time.perf_counter() - started
    return seconds, counted[0] / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--era", action="append", choices=sorted(ERAS), help="default: all")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for era in args.era or ERAS:
            path = Path(tmp) / f"{era}.trace"
            generate(path, era, args.exits)
            rounds = []
            for _ in range(args.repeat):
                alone, (_, solo_rate) = _read(path), _spinning(None)
                beside, spinner_rate = _spinning(lambda p=path: _read(p))
                rounds.append((alone, beside, spinner_rate / solo_rate))
            alone = statistics.median(r[0] for r in rounds)
            beside = statistics.median(r[1] for r in rounds)
            rows.append({
                "era": era, "alone_s": round(alone, 3), "beside_spinner_s": round(beside, 3),
                "slowdown": round(statistics.median(r[1] / r[0] for r in rounds), 2),
                "spinner_share": round(statistics.median(r[2] for r in rounds), 2),
            })  # fmt: skip
    print(f"{args.exits:,} exits per trace, median of {args.repeat}, batches of {BATCH:,}")
    print(f"{'trace':<14}{'alone s':>9}{'beside s':>10}{'slowdown':>10}{'spinner':>9}")
    for r in rows:
        print(f"{r['era']:<14}{r['alone_s']:>9.3f}{r['beside_spinner_s']:>10.3f}"
              f"{r['slowdown']:>9.2f}x{r['spinner_share']:>9.0%}")  # fmt: skip
    print(json.dumps({"benchmark": "reader_contention", "exits": args.exits, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
