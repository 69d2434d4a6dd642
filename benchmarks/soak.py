"""A bounded soak: many clients, mixed unary calls and resumable replays, for minutes, against a
real ``vmxsim serve --state-dir`` process; samples the server's memory and counts errors.

Each of ``--clients`` threads owns ``--vcpus`` vCPUs and loops until ``--seconds`` pass: on
each of its vCPUs an Execute of a VMX set-up and VMREADs, a GetStats, a resumable Replay of
``--exits`` exits (persisted after every batch), and once a round a short-lived vCPU created
and deleted (id and memory churn). The server's resident set size (VmRSS of
/proc/<pid>/status) is sampled every ``--sample`` seconds.

Memory is flat when the last third of the samples grows less than ``--max-growth-mib`` over
the first third's maximum (after warm-up). Prints a table and one JSON line; exits 1 on any
error or on growth.
Usage: ``.venv/bin/python benchmarks/soak.py [--clients 16] [--vcpus 4] [--seconds 150]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from vmxsim_client.client import Client
from vmxsim_client.instructions import Instruction
from vmxsim_client.rpc_errors import VmxsimRpcError
from vmxsim_server.vmx.mixes import load_mix, synthesize


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _start_server(state_dir: str) -> tuple[subprocess.Popen[str], str]:
    vmxsim = Path(sys.executable).with_name("vmxsim")
    command = [str(vmxsim), "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off",
               "--state-dir", state_dir, "--log-format", "json",
               "--max-streams", "256"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("{") and "port" in (doc := json.loads(line)):
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # type: ignore[union-attr]
            return process, f"127.0.0.1:{doc['port']}"
    raise RuntimeError("the server did not start")


SETUP = [
    Instruction("REVID", (0x1000,)),
    Instruction("VMXON", (0x1000,)),
    Instruction("REVID", (0x2000,)),
    Instruction("VMCLEAR", (0x2000,)),
    Instruction("VMPTRLD", (0x2000,)),
    Instruction("VMWRITE", ("GUEST_RIP", 0x1000)),
    Instruction("VMREAD", ("GUEST_RIP",)),
    Instruction("VMCLEAR", (0x2000,)),
    Instruction("VMXOFF", ()),
]


def _client(address: str, args: argparse.Namespace, stop: float, totals: Counter[str]) -> None:
    mix = load_mix("linux-boot")
    with Client(address, timeout=30) as client:
        vcpus = [client.create_vcpu("haxm-cache", "nested") for _ in range(args.vcpus)]
        seed = 0
        while time.monotonic() < stop:
            for vcpu in vcpus:
                try:
                    vcpu.execute(SETUP)
                    vcpu.stats()
                    seed += 1
                    summary = client.replay(
                        synthesize(mix, args.exits, seed=seed), "kvm", "nested",
                        batch_size=1000, resume=True,
                    )  # fmt: skip
                    assert summary["exits"] == args.exits
                    totals["unary"] += 2
                    totals["replays"] += 1
                    totals["exits"] += args.exits
                except (VmxsimRpcError, AssertionError) as exc:
                    totals["errors"] += 1
                    totals[f"error {type(exc).__name__}"] += 1
            try:
                client.create_vcpu().delete()
                totals["unary"] += 2
            except VmxsimRpcError:
                totals["errors"] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--vcpus", type=int, default=4, help="vCPUs per client")
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--exits", type=int, default=5_000, help="exits per replay")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--max-growth-mib", type=float, default=8.0)
    args = parser.parse_args()
    totals: Counter[str] = Counter()
    samples: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory(prefix="vmxsim-soak-") as state_dir:
        process, address = _start_server(state_dir)
        began = time.monotonic()
        stop = began + args.seconds
        threads = [
            threading.Thread(target=_client, args=(address, args, stop, totals), daemon=True)
            for _ in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            samples.append((time.monotonic() - began, _rss_kib(process.pid)))
            time.sleep(args.sample)
        samples.append((time.monotonic() - began, _rss_kib(process.pid)))
        elapsed = time.monotonic() - began
        process.terminate()
        status = process.wait(30)
        leftovers = len(list(Path(state_dir, "replays").glob("*.state")))
    third = max(1, len(samples) // 3)
    early = max(kib for _, kib in samples[:third])
    late = max(kib for _, kib in samples[-third:])
    growth_mib = (late - early) / 1024
    result: dict[str, Any] = {
        "clients": args.clients,
        "vcpus": args.clients * args.vcpus,
        "seconds": round(elapsed, 1),
        "unary_calls": totals["unary"],
        "replays": totals["replays"],
        "exits": totals["exits"],
        "exits_per_second": round(totals["exits"] / elapsed),
        "errors": totals["errors"],
        "rss_mib": {
            "first": round(samples[0][1] / 1024, 1),
            "early_max": round(early / 1024, 1),
            "late_max": round(late / 1024, 1),
            "max": round(max(kib for _, kib in samples) / 1024, 1),
        },
        "rss_growth_mib": round(growth_mib, 1),
        "replay_checkpoints_left": leftovers,
        "server_exit_status": status,
    }
    print("   t(s)  RSS(MiB)")
    for at, kib in samples:
        print(f"{at:7.1f}  {kib / 1024:8.1f}")
    print(json.dumps(result))
    failed = totals["errors"] or growth_mib > args.max_growth_mib or leftovers or status
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
