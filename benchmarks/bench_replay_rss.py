"""Peak memory of a streamed replay: client and server RSS do not grow with the trace.

Generates trace-cmd ``kvm_exit`` files (``bench_readers.generate``: HIP24's steady-state mix,
~1200 distinct rips) of 100,000 and 1,000,000 exits in a temporary directory; for each size
starts a fresh ``vmxsim serve`` on a free loopback port and runs ``vmxsim replay --server ...
--json`` against it, once plain and once with ``--out exits.csv`` (per-exit results streamed
back and written as they arrive). Peak RSS:

- client: ``ru_maxrss`` of that ``vmxsim replay`` process, from ``os.wait4`` (its own rusage,
  not the running maximum over all children that ``RUSAGE_CHILDREN`` gives);
- server: ``VmHWM`` of ``/proc/<pid>/status`` just before it is stopped (a fresh server per run).

Prints a table and one JSON line. Usage:
``.venv/bin/python benchmarks/bench_replay_rss.py [--sizes 100000,1000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_readers import generate  # benchmarks/ is the script's directory: on sys.path

from vmxsim_client.load.local_servers import local_servers, resident_kib

VMXSIM = str(Path(sys.executable).with_name("vmxsim"))


def run_client(args: list[str]) -> tuple[dict[str, object], int, float]:
    """(run summary, peak RSS in kB, seconds) of one ``vmxsim replay ... --json``."""
    started = time.perf_counter()
    process = subprocess.Popen([VMXSIM, "replay", *args, "--json"], stdout=subprocess.PIPE)
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"vmxsim replay {' '.join(args)} exited {process.returncode}")
    return json.loads(out), usage.ru_maxrss, seconds  # ru_maxrss is in kB on Linux


def measure(trace: Path, exits: int, out: Path | None) -> dict[str, object]:
    """One replay of ``trace`` on a fresh server; its peak RSS figures."""
    with local_servers(1) as (server,):
        address = server.address
        extra = ["--out", str(out)] if out is not None else []
        summary, client_kib, seconds = run_client([str(trace), "--server", address, *extra])
        server_kib = resident_kib(server.pid, "VmHWM")
    assert summary["exits"] == exits, summary["exits"]
    return {
        "exits": exits,
        "variant": "--out csv" if out is not None else "plain",
        "trace_mib": round(trace.stat().st_size / 2**20, 1),
        "client_peak_rss_mib": round(client_kib / 1024, 1),
        "server_peak_rss_mib": round(server_kib / 1024, 1),
        "seconds": round(seconds, 2),
        "exits_per_second": round(exits / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated exit counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for exits in sizes:
            trace = Path(tmp) / f"trace-{exits}.txt"
            generate(trace, "trace-cmd", exits)
            for out in (None, Path(tmp) / f"exits-{exits}.csv"):
                results.append(measure(trace, exits, out))
                print(f"  measured {exits:,} exits {results[-1]['variant']}", file=sys.stderr)
            trace.unlink()
    columns = list(results[0])
    widths = [max(len(c), *(len(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]))
                            for r in results)) for c in columns]  # fmt: skip
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for r in results:
        cells = [f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in columns]
        print("  ".join(v.rjust(w) for v, w in zip(cells, widths, strict=True)))
    print(json.dumps({"benchmark": "replay_rss", "python": sys.version.split()[0],
                      "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
