"""How cost grows (issue 15.5): with the trace's size, the number of streams, the server processes.

    .venv/bin/python benchmarks/bench_growth.py [--sizes 100000,1000000,10000000]
        [--streams 1,4,16,64] [--seconds S] [--repeat R] [--quick] [--json]

- size: per size a generated 5.16+ ftrace trace, each exit followed by its ``kvm_entry`` line
  (``bench_readers.generate``), replayed by the real CLI, ``vmxsim replay FILE --server ADDR
  --profile kvm --mode nested --json``, against a fresh ``vmxsim serve`` child each run: wall
  seconds and exits/s (medians), peak RSS of the client (its own ``ru_maxrss`` from
  ``os.wait4``) and of the server (``VmHWM`` of /proc/<pid>/status before it is stopped; the
  largest of the runs); per-exit cost relative to the smallest size.
- streams: ``run_load`` (what ``vmxsim load`` runs, as bench_fairness does) with each number of
  streams (clients x 1 vCPU, batches of 4,096 exits of ``linux-boot``) on one server,
  ``--seconds`` each, alternating: total exits/s, batch round-trip p50/p99 (medians).
- servers: ``vmxsim serve`` has no multi-process mode, so two children on two ports with the
  vCPUs split round robin (docs/scale-out.md) against one, 16 streams in both, alternating:
  total exits/s and the 2 / 1 ratio (median of the per-round ratios).

Every part runs ``--repeat`` rounds. ``--quick``: small sizes, 0.3-second cells over a
20,000-exit mix, one round (a smoke run under 20 s). Progress goes to standard error; the
tables to standard output, or with ``--json`` one JSON document alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fairness import MIX_EXITS, load_round
from bench_readers import generate
from bench_replay_rss import run_client
from bench_scaling import own_cpu_seconds

from vmxsim_client.load.local_servers import LocalServer, cpu_seconds, local_servers, resident_kib

ERA = "5.16-ftrace"
REPLAY = ("--profile", "kvm", "--mode", "nested")
SERVE = ("--max-streams", "128", "--max-streams-per-client", "128", "--log-level", "warning")
SPLIT_STREAMS = 16
"""Streams of the 1-vs-2-server part: 8 per server with two (docs/performance.md "Scaling")."""


def progress(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def replay_once(trace: Path, exits: int) -> dict[str, float]:
    """One CLI replay of ``trace`` on a fresh server: seconds and both peaks (kB)."""
    with local_servers(1) as (server,):
        output, client_kib, seconds = run_client([str(trace), "--server", server.address, *REPLAY])
        server_kib = resident_kib(server.pid, "VmHWM")
    summary: dict[str, Any] = output
    replayed = int(summary["exits"]) + sum(summary.get("panics", {}).values())
    if replayed != exits:
        raise RuntimeError(f"replayed {replayed:,} exits of {exits:,}")
    return {"seconds": seconds, "client_kib": client_kib, "server_kib": server_kib}


def by_size(sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for exits in sizes:
            trace = Path(tmp) / f"{exits}.trace"
            progress(f"generating {exits:,} exits ({ERA}, with kvm_entry lines)")
            generate(trace, ERA, exits)
            runs = []
            for round_ in range(repeat):
                progress(f"replaying {exits:,} exits, round {round_ + 1} of {repeat}")
                runs.append(replay_once(trace, exits))
            seconds = statistics.median(r["seconds"] for r in runs)
            rows.append({
                "exits": exits,
                "trace_mib": round(trace.stat().st_size / 2**20, 1),
                "seconds": round(seconds, 2),
                "exits_per_s": round(exits / seconds),
                "client_peak_rss_mib": round(max(r["client_kib"] for r in runs) / 1024, 1),
                "server_peak_rss_mib": round(max(r["server_kib"] for r in runs) / 1024, 1),
            })  # fmt: skip
            trace.unlink()
    smallest = rows[0]["seconds"] / rows[0]["exits"]
    for row in rows:
        row["cost_per_exit_vs_smallest"] = round(row["seconds"] / row["exits"] / smallest, 2)
    return rows


def by_streams(
    server: LocalServer, counts: list[int], seconds: float, repeat: int, mix_exits: int
) -> list[dict[str, Any]]:
    rounds: list[dict[int, dict[str, float]]] = []
    for round_ in range(repeat):
        progress(f"load with {counts} streams, round {round_ + 1} of {repeat}")
        rounds.append({n: load_round((server.address,), n, seconds, mix_exits) for n in counts})
    return [{"streams": n, **{k: round(statistics.median(r[n][k] for r in rounds))
                              for k in rounds[0][n]}} for n in counts]  # fmt: skip


def by_servers(
    servers: list[LocalServer], seconds: float, repeat: int, mix_exits: int
) -> dict[str, Any]:
    rounds: list[dict[int, dict[str, float]]] = []
    for round_ in range(repeat):
        progress(f"load with {SPLIT_STREAMS} streams on 1 and 2 servers, round {round_ + 1}")
        rounds.append({n: _with_cores(servers[:n], seconds, mix_exits) for n in (1, 2)})
    return {
        "streams": SPLIT_STREAMS,
        "exits_per_s": {str(n): round(statistics.median(r[n]["exits_per_s"] for r in rounds))
                        for n in (1, 2)},
        "cores_servers_client": {str(n): [round(statistics.median(r[n][k] for r in rounds), 2)
                                          for k in ("server_cores", "client_cores")]
                                 for n in (1, 2)},
        "failed": sum(r[n]["failed"] for r in rounds for n in (1, 2)),
        "two_vs_one": round(statistics.median(r[2]["exits_per_s"] / r[1]["exits_per_s"]
                                              for r in rounds), 3),
    }  # fmt: skip


def _with_cores(servers: list[LocalServer], seconds: float, mix_exits: int) -> dict[str, float]:
    """``load_round`` on ``servers`` and the cores the servers and this process used."""
    server_before, client_before = sum(cpu_seconds(s.pid) for s in servers), own_cpu_seconds()
    started = time.perf_counter()
    cell = load_round(tuple(s.address for s in servers), SPLIT_STREAMS, seconds, mix_exits)
    elapsed = time.perf_counter() - started
    cell["server_cores"] = (sum(cpu_seconds(s.pid) for s in servers) - server_before) / elapsed
    cell["client_cores"] = (own_cpu_seconds() - client_before) / elapsed
    return cell


def print_tables(result: dict[str, Any], out: Any) -> None:
    print(f"size: {ERA} trace, `vmxsim replay --server` on a fresh server, median of "
          f"{result['repeat']}", file=out)  # fmt: skip
    print(f"{'exits':>12}{'MiB':>8}{'seconds':>9}{'exits/s':>10}{'client RSS':>12}"
          f"{'server RSS':>12}{'cost/exit':>11}", file=out)  # fmt: skip
    for r in result["sizes"]:
        print(f"{r['exits']:>12,}{r['trace_mib']:>8}{r['seconds']:>9}{r['exits_per_s']:>10,}"
              f"{r['client_peak_rss_mib']:>10} M{r['server_peak_rss_mib']:>10} M"
              f"{r['cost_per_exit_vs_smallest']:>10}x", file=out)  # fmt: skip
    print(f"\nstreams: run_load on one server, {result['seconds']:g} s per cell", file=out)
    print(f"{'streams':>8}{'exits/s':>12}{'p50 us':>10}{'p99 us':>10}{'failed':>8}", file=out)
    for r in result["streams"]:
        print(f"{r['streams']:>8}{r['exits_per_s']:>12,}{r['p50']:>10,}{r['p99']:>10,}"
              f"{r['failed']:>8}", file=out)  # fmt: skip
    split = result["servers"]
    print(f"\nservers: {split['streams']} streams; 1 server {split['exits_per_s']['1']:,} exits/s, "
          f"2 servers {split['exits_per_s']['2']:,} exits/s: {split['two_vs_one']:.2f}x "
          f"({split['failed']} failed); cores used, servers + load generator: "
          + "; ".join(f"{n} server(s) {c[0]} + {c[1]}"
                      for n, c in split["cores_servers_client"].items()), file=out)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="comma-separated exit counts (default 100k,1M,10M)")
    parser.add_argument("--streams", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, help="per load cell (default 4)")
    parser.add_argument("--repeat", type=int, help="rounds of every part (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, short cells, 1 round")
    parser.add_argument("--json", action="store_true", help="one JSON document, no tables")
    args = parser.parse_args()
    sizes_text = args.sizes or ("5000,20000" if args.quick else "100000,1000000,10000000")
    seconds = args.seconds or (0.3 if args.quick else 4.0)
    repeat = args.repeat or (1 if args.quick else 3)
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "growth", "era": ERA, "repeat": repeat,
                              "seconds": seconds, "load_at_start": _loadavg()}  # fmt: skip
    result["sizes"] = by_size([int(s) for s in sizes_text.split(",")], repeat)
    mix_exits = 20_000 if args.quick else MIX_EXITS
    with local_servers(2, SERVE) as servers:  # the second one idle until the last part
        counts = [int(n) for n in args.streams.split(",")]
        result["streams"] = by_streams(servers[0], counts, seconds, repeat, mix_exits)
        result["servers"] = by_servers(servers, seconds, repeat, mix_exits)
    result["load_at_end"] = _loadavg()
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result))
    else:
        print_tables(result, sys.stdout)
    return 0


def _loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
