"""The raw gRPC streaming ceiling on this machine, and vmxsim remote replay's share of it.

    .venv/bin/python benchmarks/bench_grpc_ceiling.py [--exits N] [--batch-size N]

- ceiling: a trivial bidi "sink" service (``grpc.aio`` server in a child process, like
  ``vmxsim serve``) that answers every message with a fixed acknowledgement; a sync client
  (like ``Client.replay``) streams pre-serialized ``ReplayRequest`` batches of the same size as
  vmxsim's (``--batch-size`` exits of mix linux-boot, packed columns) and reads the acks of the
  size of a real ``ReplayResponse``. No decoding, no work: the most this transport carries.
- vmxsim: ``Client.replay`` of the same exits to ``vmxsim serve`` in a child process.
- breakdown: each step of vmxsim's path timed alone over the same batches in this thread
  (packing, serializing, parsing, translating, the engine, the stats), in ms per batch.
Target: vmxsim >= 50% of the ceiling (exits/s). Prints tables and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from typing import Any

import grpc

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim_client.client import CHANNEL_OPTIONS, DEFAULT_BATCH_SIZE, Client
from vmxsim_client.load.local_servers import local_servers
from vmxsim_client.wire import exit_batches
from vmxsim_server.translate import batch_stats, exit_batch
from vmxsim_server.vmx import Vcpu
from vmxsim_server.vmx.engine import Engine
from vmxsim_server.vmx.latency import LatencyModel
from vmxsim_server.vmx.mixes import load_mix, synthesize
from vmxsim_server.vmx.profiles import load_profile
from vmxsim_server.vmx.records import ExitBatch

TARGET = 0.5
METHOD = "/bench.Sink/Stream"
_SINK_SERVER = """\
import asyncio, sys
import grpc
from grpc import aio
ACK = b"\\x00" * int(sys.argv[1])
async def stream(requests, context):
    async for _ in requests:
        yield ACK
async def main():
    server = aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    handler = grpc.stream_stream_rpc_method_handler(stream)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Sink",
                                     {"Stream": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)
asyncio.run(main())
"""


def ack_size(records: list, size: int) -> int:
    """The size of a real ReplayResponse acknowledging one batch."""
    engine = Engine(Vcpu(), load_profile("kvm"), LatencyModel("native"))
    stats = engine.run_batch(ExitBatch.from_records(records[:size], sequence=1))
    progress = pb.ReplayProgress(acked_sequence=1, exits=size, batch=batch_stats(stats, False))
    return pb.ReplayResponse(progress=progress).ByteSize()


def breakdown(records: list, size: int) -> dict[str, float]:
    """Milliseconds per batch of each step of a remote replay, timed alone."""
    steps: dict[str, float] = {}
    count = -(-len(records) // size)

    def timed(name: str, work: Any) -> Any:
        started = time.perf_counter()
        result = work()
        steps[name] = round((time.perf_counter() - started) / count * 1e3, 3)
        return result

    batches = timed("client: pack records", lambda: list(exit_batches(records, size)))
    data = timed("client: serialize", lambda: [
        pb.ReplayRequest(batch=b).SerializeToString() for b in batches])  # fmt: skip
    parsed = timed("server: parse", lambda: [pb.ReplayRequest.FromString(d) for d in data])
    core = timed("server: wire -> core columns", lambda: [
        exit_batch(p.batch, size) for p in parsed])  # fmt: skip
    engine = Engine(Vcpu(), load_profile("kvm"), LatencyModel("native"))
    stats = timed("server: engine", lambda: [engine.run_batch(c) for c in core])
    timed("server: stats message", lambda: [
        batch_stats(s, False).SerializeToString() for s in stats])  # fmt: skip
    return steps


def ceiling(messages: list[bytes], ack_bytes: int) -> float:
    """Seconds to stream every message through the sink and read every ack."""
    child = subprocess.Popen([sys.executable, "-c", _SINK_SERVER, str(ack_bytes)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stream = channel.stream_stream(METHOD)
            started = time.perf_counter()
            acks = sum(1 for _ in stream(iter(messages)))
            seconds = time.perf_counter() - started
        assert acks == len(messages), (acks, len(messages))
        return seconds
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()


def vmxsim_replay(records: list, size: int) -> float:
    """Seconds of one ``Client.replay`` of the exits to a ``vmxsim serve`` child."""
    with local_servers(1) as (server,), Client(server.address) as client:
        started = time.perf_counter()
        summary = client.replay(records, profile="kvm", mode="native", batch_size=size)
        seconds = time.perf_counter() - started
    assert summary["exits"] == len(records)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=500_000)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args()
    records = list(synthesize(load_mix("linux-boot"), args.exits, seed=0))
    messages = [
        pb.ReplayRequest(batch=batch).SerializeToString()
        for batch in exit_batches(records, args.batch_size)
    ]
    ack_bytes = ack_size(records, args.batch_size)
    sink_seconds = ceiling(messages, ack_bytes)
    replay_seconds = vmxsim_replay(records, args.batch_size)
    rates = {"ceiling": args.exits / sink_seconds, "vmxsim": args.exits / replay_seconds}
    ratio = rates["vmxsim"] / rates["ceiling"]
    mean_bytes = sum(map(len, messages)) / len(messages)
    print(f"{args.exits:,} exits in {len(messages)} messages of {mean_bytes:,.0f} bytes "
          f"(acks {ack_bytes} bytes)")  # fmt: skip
    print(f"{'path':<10}{'messages/s':>12}{'exits/s':>14}")
    for name, seconds in (("ceiling", sink_seconds), ("vmxsim", replay_seconds)):
        print(f"{name:<10}{len(messages) / seconds:>12,.0f}{rates[name]:>14,.0f}")
    print(f"vmxsim / ceiling: {ratio:.0%} (target >= {TARGET:.0%})")
    steps = breakdown(records, args.batch_size)
    print("\nms per batch, each step alone:")
    for name, ms in steps.items():
        print(f"  {name:<32}{ms:>8.3f}")
    print(json.dumps({
        "benchmark": "grpc_ceiling", "exits": args.exits, "batch_size": args.batch_size,
        "messages": len(messages), "message_bytes": round(mean_bytes), "ack_bytes": ack_bytes,
        "python": platform.python_version(),
        "ceiling_messages_per_s": round(len(messages) / sink_seconds),
        "ceiling_exits_per_s": round(rates["ceiling"]),
        "vmxsim_exits_per_s": round(rates["vmxsim"]),
        "vmxsim_vs_ceiling": round(ratio, 3), "target_met": ratio >= TARGET,
        "ms_per_batch": steps,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
