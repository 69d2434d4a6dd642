"""End to end: ``vmxsim replay`` of generated traces as users run it, against (a) a bare
``str.partition()`` + ``Counter`` loop over the same file and (b) the packed-column gRPC ceiling
built per call.

    .venv/bin/python benchmarks/bench_e2e.py [--exits N] [--repeat R] [--era NAME ...]
        [--trace FILE ...]

Per era (``bench_readers.generate``: synthetic lines in each published format, every exit
followed by its ``kvm_entry`` line), plain and gzip, side by side in one run, alternating,
``--repeat`` rounds:

- ``partition``: ``bench_readers``' loop over the file (the floor of a Python text reader),
- ``reader``: the trace reader alone in this process (``open_trace(path).batches(4096)``), to
  tell the reader's share of a replay from the rest,
- ``remote``: ``vmxsim replay FILE --server ADDR --profile kvm --mode nested --json`` (a CLI
  process, wall time including its start-up) against one ``vmxsim serve`` child,
- ``embedded``: the same without ``--server`` (the CLI's in-process server),
- ``ceiling`` (issue 15's "packed-column gRPC ceiling built per call", DESIGN.md's "packed
  columns ... ~2M records/s"): the same number of exits, held in memory as exit records, sent as
  ``ReplayRequest`` batches of the replay's batch size (``DEFAULT_BATCH_SIZE``) whose packed
  repeated columns are built from the records per call (``wire.exit_batches``), serialized
  and streamed to a trivial ``grpc.aio`` sink child (``bench_grpc_ceiling``) that acknowledges
  each with a real ReplayResponse's size;
- ``transport``: the same batches built once before the clock, only serialized per call: what
  the transport alone carries (stricter than the issue's ceiling; reported, no target).

``--trace FILE`` (repeatable) measures your own plain-text traces instead of the generated ones
(each with a gzip copy made for the run; the exits are the reader's count, the ceiling sends as
many). Ratios are medians of the per-round ratios. Targets: replay >= 0.5 of partition and >= 0.5 of
the ceiling. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_grpc_ceiling import _SINK_SERVER, METHOD, ack_size
from bench_readers import ERAS as READER_ERAS
from bench_readers import _partition, generate

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim_client.client import CHANNEL_OPTIONS, DEFAULT_BATCH_SIZE
from vmxsim_client.load.local_servers import local_servers
from vmxsim_client.traces import open_trace
from vmxsim_client.wire import exit_batches
from vmxsim_server.vmx.mixes import load_mix, synthesize
from vmxsim_server.vmx.records import ExitRecord

VMXSIM = str(Path(sys.executable).with_name("vmxsim"))
ERAS = tuple(READER_ERAS)
TARGET = 0.5


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def replay(path: Path, exits: int, server: str | None) -> None:
    """One ``vmxsim replay`` CLI process; checks it counted every exit."""
    where = ["--server", server] if server else []
    command = [VMXSIM, "replay", str(path), *where, "--profile", "kvm", "--mode", "nested"]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    counted = summary["exits"] + sum(summary.get("panics", {}).values())
    assert counted == exits, (counted, exits, done.stderr[-500:])


class Sink:
    """The ceiling's ``grpc.aio`` sink in a child process, for the whole run."""

    def __init__(self, ack_bytes: int) -> None:
        command = [sys.executable, "-c", _SINK_SERVER, str(ack_bytes)]
        self.child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.child.stdout is not None
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{int(self.child.stdout.readline())}", options=CHANNEL_OPTIONS
        )
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stream = self.channel.stream_stream(METHOD)

    def send(self, batches: Iterable[pb.ExitBatch], count: int) -> None:
        """Serialize each batch as it comes and stream them all; read every ack."""
        messages = (pb.ReplayRequest(batch=b).SerializeToString() for b in batches)
        assert sum(1 for _ in self.stream(messages)) == count

    def close(self) -> None:
        self.channel.close()
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.close()
        self.child.wait(timeout=30)
        self.child.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--era", action="append", choices=ERAS, help="default: all")
    parser.add_argument(
        "--trace", action="append", type=Path, metavar="FILE",
        help="a plain-text trace of your own instead of the generated ones (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    for path in args.trace or ():
        if not path.is_file() or path.suffix == ".gz":
            parser.error(f"--trace {path}: not a plain-text trace file")
    sink = Sink(ack_size(_records(args.exits), DEFAULT_BATCH_SIZE))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, local_servers(1) as (server,):
        for label, plain, exits in _sources(args, Path(tmp)):
            packed = Path(tmp) / f"{plain.name}.gz"
            with plain.open("rb") as source, gzip.open(packed, "wb", compresslevel=1) as out:
                shutil.copyfileobj(source, out)
            records = _records(exits)
            batches = list(exit_batches(records, DEFAULT_BATCH_SIZE))
            for path in (plain, packed):
                paths: dict[str, Callable[[], object]] = {
                    "partition": lambda p=path: _partition(p),
                    "reader": lambda p=path: _count(p),
                    "ceiling": lambda r=records, b=batches: sink.send(
                        exit_batches(r, DEFAULT_BATCH_SIZE), len(b)
                    ),
                    "transport": lambda b=batches: sink.send(b, len(b)),
                    "remote": lambda p=path, n=exits: replay(p, n, server.address),
                    "embedded": lambda p=path, n=exits: replay(p, n, None),
                }
                rounds = [{name: _timed(work) for name, work in paths.items()}
                          for _ in range(args.repeat)]  # fmt: skip
                rows.append(_row(label, path.suffix == ".gz", rounds, exits))
    sink.close()
    per_trace = f"{args.exits:,} exits per trace (+ as many kvm_entry lines)"
    what = "your traces" if args.trace else per_trace
    print(f"{what}, median of {args.repeat}, batches of {DEFAULT_BATCH_SIZE:,}")
    head = (
        ("partition/s", 12),
        ("reader/s", 11),
        ("ceiling/s", 12),
        ("transport/s", 12),
        ("remote/s", 11),
        ("embedded/s", 12),
        ("rem/part", 9),
        ("rem/ceil", 9),
        ("emb/part", 9),
        ("emb/ceil", 9),
    )
    print(f"{'trace':<22}" + "".join(f"{name:>{width}}" for name, width in head))  # fmt: skip
    for r in rows:
        print(f"{r['trace']:<22}{r['partition']:>12,.0f}{r['reader']:>11,.0f}{r['ceiling']:>12,.0f}"
              f"{r['transport']:>12,.0f}{r['remote']:>11,.0f}{r['embedded']:>12,.0f}{r['remote_vs_partition']:>9.3f}"
              f"{r['remote_vs_ceiling']:>9.3f}{r['embedded_vs_partition']:>9.3f}"
              f"{r['embedded_vs_ceiling']:>9.3f}")  # fmt: skip
    met = all(float(v) >= TARGET for r in rows for k, v in r.items()  # type: ignore[arg-type]
              if "_vs_" in k and not k.endswith("transport"))  # fmt: skip
    for r in rows:
        print(f"{r['trace']:<22} vs transport: remote {r['remote_vs_transport']:.3f}, embedded "
              f"{r['embedded_vs_transport']:.3f}")  # fmt: skip
    print(json.dumps({"benchmark": "e2e", "exits": args.exits, "repeat": args.repeat,
                      "traces": [str(p) for p in args.trace or ()], "rows": rows,
                      "target_met": met}))  # fmt: skip
    return 0


def _records(exits: int) -> list[ExitRecord]:
    """The ceiling's exits: ``exits`` of linux-boot's mix, in memory."""
    return list(synthesize(load_mix("linux-boot"), exits, seed=0))


def _sources(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, Path, int]]:
    """(label, plain trace, exits): the --trace files, else one generated trace per era."""
    for path in args.trace or ():
        yield path.name[:22], path, _count(path)
    if args.trace:
        return
    for era in args.era or ERAS:
        plain = tmp / f"{era}.trace"
        generate(plain, era, args.exits)
        yield era, plain, args.exits


def _count(path: Path) -> int:
    """The exits the reader yields (what a replay sends), in batches of 4,096 as bench_readers
    reads; a trace of your own may have lines the reader skips."""
    with open_trace(path) as reader:
        return sum(len(batch) for batch in reader.batches(4096))


def _row(era: str, gz: bool, rounds: list[dict[str, float]], exits: int) -> dict[str, object]:
    """Median rates (exits/s) and median per-round ratios of one trace."""
    row: dict[str, object] = {"trace": era + (" gzip" if gz else "")}
    for name in rounds[0]:
        row[name] = round(exits / statistics.median(r[name] for r in rounds))
    for side in ("remote", "embedded"):
        for base in ("partition", "ceiling", "transport"):
            ratio = statistics.median(r[base] / r[side] for r in rounds)
            row[f"{side}_vs_{base}"] = round(ratio, 3)
    return row


if __name__ == "__main__":
    sys.exit(main())
