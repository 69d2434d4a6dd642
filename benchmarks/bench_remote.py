"""Remote batched replay throughput against the in-process engine on the same exits.

Synthesises ``--exits`` exits of a shipped mix (default 500,000 of ``linux-boot``, seed 0), then
times in one run, on the same machine:

- ``in-process``: ``Engine.run_batch`` over the exits in core ``ExitBatch`` columns (the
  columns are built outside the timed region: this is the engine alone);
- ``remote``: ``Client.replay`` to a server in a separate process (packing, gRPC, the
  server's translation and engine, acknowledgements: everything a remote user pays);
- ``embedded``: the same against a server in this process (the CLI's default without
  ``--server``; client and server then share one interpreter and its GIL).

Checks that all three count the same VMREADs/VMWRITEs, prints a table and one JSON line.
Usage: ``.venv/bin/python benchmarks/bench_remote.py [--exits N] [--profile P] [--server ADDR]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vmxsim_client.client import DEFAULT_BATCH_SIZE, Client
from vmxsim_client.inprocess import connect
from vmxsim_server.vmx import Vcpu
from vmxsim_server.vmx.engine import Engine
from vmxsim_server.vmx.latency import LatencyModel
from vmxsim_server.vmx.mixes import load_mix, synthesize
from vmxsim_server.vmx.profiles import load_profile
from vmxsim_server.vmx.records import ExitBatch, ExitRecord

_SERVER_PROCESS = """\
import sys
from vmxsim_server.app import start_background
from vmxsim_server.config import ServerConfig
with start_background(ServerConfig(listen="127.0.0.1:0", metrics_listen=None)) as server:
    print(server.address, flush=True)
    sys.stdin.read()
"""


def in_process(records: list[ExitRecord], profile: str, mode: str, size: int) -> tuple[float, Any]:
    """Seconds of the engine alone over the exits, and its totals."""
    batches = [
        ExitBatch.from_records(records[i : i + size], sequence=n)
        for n, i in enumerate(range(0, len(records), size), 1)
    ]
    engine = Engine(Vcpu(), load_profile(profile), LatencyModel(mode))
    started = time.perf_counter()
    for batch in batches:
        engine.run_batch(batch)
    return time.perf_counter() - started, engine.totals


def replay(
    client: Client, records: list[ExitRecord], profile: str, mode: str, size: int
) -> tuple[float, dict[str, Any]]:
    """Seconds of one remote replay of the exits, and its summary."""
    started = time.perf_counter()
    summary = client.replay(records, profile=profile, mode=mode, batch_size=size)
    return time.perf_counter() - started, summary


@contextmanager
def server_process() -> Iterator[str]:
    """A vmxsim server in a child process; yields its address."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SERVER_PROCESS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    try:
        address = child.stdout.readline().strip()
        if not address:
            raise RuntimeError(f"the server process did not start (exit status {child.wait()})")
        yield address
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def main() -> int:
    """Run the three timings; print a table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=500_000)
    parser.add_argument("--mix", default="linux-boot")
    parser.add_argument("--profile", default="kvm")
    parser.add_argument("--mode", default="native")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--server", help="time against this server instead of a child process")
    args = parser.parse_args()
    records = list(synthesize(load_mix(args.mix), args.exits, seed=0))
    size = args.batch_size

    engine_seconds, totals = in_process(records, args.profile, args.mode, size)
    expected = (totals.exits, totals.counters.vmread, totals.counters.vmwrite)
    timings = {"in-process": engine_seconds}
    remote = server_process() if args.server is None else _given(args.server)
    with remote as address, Client(address) as client:
        timings["remote"], summary = replay(client, records, args.profile, args.mode, size)
    with connect(None) as client:
        timings["embedded"], embedded = replay(client, records, args.profile, args.mode, size)
    for result in (summary, embedded):
        got = (result["exits"], result["instructions"]["vmread"], result["instructions"]["vmwrite"])
        assert got == expected, (got, expected)

    rates = {name: args.exits / seconds for name, seconds in timings.items()}
    print(f"{args.exits:,} exits of {args.mix}, profile {args.profile}, mode {args.mode}, "
          f"batches of {size}")  # fmt: skip
    print(f"{'path':<12}{'seconds':>10}{'exits/s':>14}{'vs in-process':>16}")
    for name, seconds in timings.items():
        ratio = rates[name] / rates["in-process"]
        print(f"{name:<12}{seconds:>10.3f}{rates[name]:>14,.0f}{ratio:>15.0%}")
    print(json.dumps({
        "bench": "remote_replay", "exits": args.exits, "mix": args.mix, "profile": args.profile,
        "mode": args.mode, "batch_size": size,
        "exits_per_second": {name: round(rate) for name, rate in rates.items()},
        "remote_vs_in_process": round(rates["remote"] / rates["in-process"], 3),
        "embedded_vs_in_process": round(rates["embedded"] / rates["in-process"], 3),
    }))  # fmt: skip
    return 0


@contextmanager
def _given(address: str) -> Iterator[str]:
    yield address


if __name__ == "__main__":
    sys.exit(main())
