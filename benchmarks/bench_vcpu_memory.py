"""Memory per idle vCPU: the RSS of a ``vmxsim serve`` child before and after 10,000 vCPUs.

    .venv/bin/python benchmarks/bench_vcpu_memory.py [--vcpus N]

Creates ``--vcpus`` vCPUs (each in a VM of its own, the default of CreateVcpu) over 16 asyncio
channels and reads the server's ``VmRSS`` from /proc/<pid>/status before and after.
Target: 10,000 idle vCPUs < 1 GiB. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time

from grpc import aio

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_client.load.local_servers import local_servers, resident_kib

TARGET_BYTES = 1 << 30
CHANNELS = 16


async def create(address: str, count: int) -> None:
    """``count`` vCPUs, created by ``CHANNELS`` concurrent sequential callers."""

    async def caller(share: int) -> None:
        async with aio.insecure_channel(address) as channel:
            stub = pb_grpc.VcpuServiceStub(channel)
            for _ in range(share):
                await stub.CreateVcpu(pb.CreateVcpuRequest(profile="kvm"), timeout=30)

    shares = [count // CHANNELS + (i < count % CHANNELS) for i in range(CHANNELS)]
    await asyncio.gather(*(caller(n) for n in shares))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vcpus", type=int, default=10_000)
    args = parser.parse_args()
    limit = str(2 * args.vcpus)  # vCPUs and their VMs
    with local_servers(1, ["--max-vcpus", limit]) as (server,):
        before = resident_kib(server.pid)
        started = time.perf_counter()
        asyncio.run(create(server.address, args.vcpus))
        seconds = time.perf_counter() - started
        after = resident_kib(server.pid)
    grown = (after - before) * 1024
    per_vcpu = grown / args.vcpus
    projected = per_vcpu * 10_000 + before * 1024
    print(f"{'vCPUs':>8}{'RSS before MiB':>16}{'RSS after MiB':>15}{'per vCPU KiB':>14}"
          f"{'create/s':>10}")  # fmt: skip
    print(f"{args.vcpus:>8,}{before / 1024:>16.1f}{after / 1024:>15.1f}{per_vcpu / 1024:>14.2f}"
          f"{args.vcpus / seconds:>10,.0f}")  # fmt: skip
    print(f"10,000 vCPUs: {projected / 2**20:,.0f} MiB resident (target < 1 GiB)")
    print(json.dumps({
        "benchmark": "vcpu_memory", "vcpus": args.vcpus, "python": platform.python_version(),
        "rss_before_kib": before, "rss_after_kib": after,
        "bytes_per_vcpu": round(per_vcpu), "creates_per_s": round(args.vcpus / seconds),
        "rss_for_10000_mib": round(projected / 2**20, 1),
        "target_met": projected < TARGET_BYTES,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
