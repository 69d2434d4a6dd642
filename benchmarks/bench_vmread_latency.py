"""Latency of one unary VMREAD (an Execute call with one VMREAD), p50/p99 from an HdrHistogram.

    .venv/bin/python benchmarks/bench_vmread_latency.py [--calls N]

One sequential sync client (``RemoteVcpu.vmread``: what a test harness does) against a
``vmxsim serve`` child, on a vCPU in VMX root operation with a current VMCS; the first 200
calls warm up and are not recorded. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from hdrh.histogram import HdrHistogram

from vmxsim_client.client import Client
from vmxsim_client.load.driver import HISTOGRAM_MICROSECONDS
from vmxsim_client.load.local_servers import local_servers

WARMUP = 200
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()
    histogram = HdrHistogram(*HISTOGRAM_MICROSECONDS)
    with local_servers(1) as (server,), Client(server.address) as client:
        vcpu = client.create_vcpu("kvm")
        for address, op in ((0x1000, vcpu.vmxon), (0x2000, vcpu.vmptrld)):
            vcpu.revid(address)
            assert op(address).ok
        for _ in range(WARMUP):
            vcpu.vmread("GUEST_RIP")
        started = time.perf_counter()
        for _ in range(args.calls):
            before = time.perf_counter_ns()
            assert vcpu.vmread("GUEST_RIP").ok
            histogram.record_value(max(1, (time.perf_counter_ns() - before) // 1000))
        seconds = time.perf_counter() - started
    latency = {f"p{q:g}": histogram.get_value_at_percentile(q) for q in PERCENTILES}
    latency["max"] = histogram.get_max_value()
    print(f"{args.calls:,} sequential VMREAD calls, {args.calls / seconds:,.0f} calls/s; us:")
    print("".join(f"{k:>9}" for k in latency))
    print("".join(f"{v:>9,}" for v in latency.values()))
    print(json.dumps({"benchmark": "vmread_latency", "calls": args.calls,
                      "python": platform.python_version(), "latency_us": latency,
                      "calls_per_s": round(args.calls / seconds)}))  # fmt: skip


if __name__ == "__main__":
    main()
