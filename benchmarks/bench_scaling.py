"""Throughput with 1, 2, 4, 8 clients against 1 and 2 server processes (``vmxsim load``).

    .venv/bin/python benchmarks/bench_scaling.py [--seconds S] [--clients 1,2,4,8]
        [--vcpus-per-client M]

Each cell is one ``run_load`` (load.py): N clients with M vCPUs each (default 2), driving batches of
4,096 exits of mix linux-boot (kvm, native) for ``--seconds``, against ``vmxsim serve`` child
processes (vCPUs sharded round robin over them). The load generator runs in this process and
shares the machine's cores with the servers; the CPU seconds each side used per second of
the run are measured (/proc/<pid>/stat, getrusage) to show where the cores went.
Target: 2 servers >= 1.6x 1 server (best cell of each). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource

from bench_fairness import MIX_EXITS

from vmxsim_client.load.local_servers import cpu_seconds, local_servers
from vmxsim_client.load.runner import LoadPlan, run_load

TARGET = 1.6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--servers", default="1,2")
    parser.add_argument("--vcpus-per-client", type=int, default=2)
    parser.add_argument("--mix-exits", type=int, default=MIX_EXITS,
                        help="exits of linux-boot each stream cycles through")  # fmt: skip
    args = parser.parse_args()
    client_counts = [int(n) for n in args.clients.split(",")]
    source = f"mix:linux-boot:{args.mix_exits}:0"
    rates: dict[int, dict[int, int]] = {}
    p99: dict[int, dict[int, int]] = {}
    cores: dict[int, dict[int, tuple[float, float]]] = {}
    for servers in (int(n) for n in args.servers.split(",")):
        with local_servers(servers) as running:
            targets = tuple(s.address for s in running)
            for clients in client_counts:
                plan = LoadPlan(
                    targets, clients, args.vcpus_per_client, source, duration_seconds=args.seconds
                )
                server_before = sum(cpu_seconds(s.pid) for s in running)
                client_before = own_cpu_seconds()
                report = run_load(plan)
                server_cpu = sum(cpu_seconds(s.pid) for s in running) - server_before
                client_cpu = own_cpu_seconds() - client_before
                seconds = report["seconds"]
                cores.setdefault(servers, {})[clients] = (
                    server_cpu / seconds,
                    client_cpu / seconds,
                )
                assert report["consistent"] and not report["errors"], report
                rates.setdefault(servers, {})[clients] = report["exits_per_second"]
                p99.setdefault(servers, {})[clients] = report["batch_latency_us"]["p99"]
    print(f"exits/s, {args.seconds:g} s per cell, {args.vcpus_per_client} vCPUs per client "
          "(batch p99 us; cores used by the servers + the load generator)")  # fmt: skip
    print(f"{'clients':>8}" + "".join(f"{f'{s} server(s)':>38}" for s in rates))
    for clients in client_counts:
        cells = "".join(
            f"{rates[s][clients]:>14,} ({p99[s][clients]:>7,}; "
            f"{cores[s][clients][0]:.2f} + {cores[s][clients][1]:.2f})"
            for s in rates
        )
        print(f"{clients:>8}{cells}")
    result = {"benchmark": "scaling", "seconds": args.seconds, "python": platform.python_version(),
              "exits_per_s": {f"{s}_servers": {str(c): r for c, r in row.items()}
                              for s, row in rates.items()},
              "vcpus_per_client": args.vcpus_per_client,
              "batch_p99_us": {f"{s}_servers": {str(c): r for c, r in row.items()}
                               for s, row in p99.items()},
              "cores_server_client": {f"{s}_servers": {str(c): [round(x, 2) for x in r]
                                                       for c, r in row.items()}
                                      for s, row in cores.items()}}  # fmt: skip
    if 1 in rates and 2 in rates:
        ratio = max(rates[2].values()) / max(rates[1].values())
        print(f"2 servers / 1 server (best cells): {ratio:.2f}x (target >= {TARGET}x)")
        result.update(two_vs_one=round(ratio, 3), target_met=ratio >= TARGET)
    print(json.dumps(result))


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process (the load generator) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
