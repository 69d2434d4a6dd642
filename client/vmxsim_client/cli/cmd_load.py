"""``vmxsim load``: many clients driving many vCPUs at once; throughput, latency, errors.

N simulated clients (one gRPC channel each) drive M vCPUs each with batched Drive streams,
for a duration or an exit count, against one server or several (vCPUs sharded round robin
over the targets). Reports exits/s, per-batch round-trip percentiles (HdrHistogram), errors by
status code, and the servers' own counts (GetStats, summed), which must equal the clients'.
Exit status 1 when any stream failed or the counts differ. TLS and tokens: the options of every
remote command (connection.py). Logic: load/runner.py.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..connection import add_connection_options, client_kwargs
from ..errors import CliError
from ..load.runner import (
    LOAD_BATCH_SIZE,
    MAX_CLIENTS,
    MAX_DURATION_SECONDS,
    MAX_VCPUS,
    MAX_VCPUS_PER_CLIENT,
    LoadError,
    LoadPlan,
    run_load,
)
from ..traces.mix import MIX_PREFIX
from .common import add_batch_size_option, add_profile_options, rpc_command
from .output import emit_json, render_rows

__all__ = ["register"]

DEFAULT_PROCESSES = 1
"""One event loop for every client: measured fastest on the 2-core development machine
(docs/performance.md "Load generator: asyncio or processes")."""


def _plan(args: argparse.Namespace) -> LoadPlan:
    if (args.mix is None) == (args.trace is None):
        raise CliError("give either --mix NAME or --trace FILE")
    if (args.duration is None) == (args.exits is None):
        raise CliError("give either --duration SECONDS or --exits N")
    source = str(args.trace) if args.trace else f"{MIX_PREFIX}{args.mix}:100000:{args.seed}"
    targets = tuple(t.strip() for t in args.server.split(",") if t.strip()) if args.server else ()
    return LoadPlan(
        targets=targets,
        clients=args.clients,
        vcpus_per_client=args.vcpus_per_client,
        source=source,
        profile=args.profile,
        mode=args.mode,
        l0=args.l0,
        duration_seconds=args.duration,
        exits=args.exits,
        batch_size=args.batch_size,
        processes=args.processes,
        allow_remote=args.allow_remote,
        timeout=args.timeout,
        security=client_kwargs(args),
        metrics_listen=args.metrics_listen,
    )


def _print_report(report: dict[str, Any]) -> None:
    print(
        f"{report['clients']} clients x {report['vcpus_per_client']} vCPUs on "
        f"{len(report['targets'])} server(s), {report['processes']} process(es), "
        f"{report['profile']} {report['mode']}, batches of {report['batch_size']:,}"
    )
    print(
        f"{report['exits']:,} exits in {report['batches']:,} batches, {report['seconds']:.2f} s: "
        f"{report['exits_per_second']:,} exits/s\n"
    )
    latency = report["batch_latency_us"]  # HdrHistogram microseconds
    print("batch round trip:")
    render_rows([{k: f"{v:,} us" for k, v in latency.items()}], list(latency))
    print()
    rows = [
        {"counted by": side, **{k: f"{v:,}" for k, v in report[side].items()}}
        for side in ("client", "server")
    ]
    render_rows(rows, ("counted by", "exits", "vmread", "vmwrite"))
    errors = ", ".join(f"{code} {n}" for code, n in report["errors"].items()) or "none"
    agree = "equal" if report["consistent"] else "DIFFERENT"
    print(f"\nerrors: {errors}; client and server counts {agree}")


@rpc_command
def _load(args: argparse.Namespace) -> int:
    try:
        report = run_load(_plan(args))
    except LoadError as exc:
        raise CliError(str(exc)) from None
    except ImportError as exc:
        raise CliError(f"{exc}; install the load extra: pip install 'vmxsim[load]'") from None
    except TimeoutError:
        raise CliError(
            f"could not connect to {args.server or 'the servers'} within {args.timeout} s"
        ) from None
    if args.json:
        emit_json(report)
    else:
        _print_report(report)
    if report["errors"] or not report["consistent"]:
        print("vmxsim: error: the load run had errors or inconsistent counts", file=sys.stderr)
        return 1
    return 0


def register(sub: Any) -> None:
    """Add ``load`` to the CLI."""
    p = sub.add_parser(
        "load",
        help="many concurrent clients driving vCPUs: exits/s, batch latency, errors",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "--server",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="the server(s); vCPUs are sharded over several; default: an in-process server",
    )
    p.add_argument(
        "--allow-remote", action="store_true", help="allow targets that are not loopback"
    )
    add_connection_options(p)
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve the load clients' own Prometheus metrics (batch round trips, exits, stream"
        " errors) at http://HOST:PORT/metrics while the run lasts (needs --processes 1)",
    )
    p.add_argument("--clients", type=int, default=1, help=f"simulated clients (1..{MAX_CLIENTS})")
    p.add_argument(
        "--vcpus-per-client",
        type=int,
        default=1,
        metavar="M",
        help=f"vCPUs each client drives at once (1..{MAX_VCPUS_PER_CLIENT}; {MAX_VCPUS} in all)",
    )
    stop = p.add_mutually_exclusive_group()
    stop.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help=f"run this long (at most {MAX_DURATION_SECONDS:g})",
    )
    stop.add_argument("--exits", type=int, metavar="K", help="drive K exits in all, then stop")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--trace", metavar="FILE", help="exits from a trace file (cycled)")
    source.add_argument("--mix", metavar="NAME", help="exits of a shipped mix, e.g. linux-boot")
    p.add_argument("--seed", type=int, default=0, help="seed of --mix (default 0)")
    add_profile_options(p)
    add_batch_size_option(p, LOAD_BATCH_SIZE)
    p.add_argument(
        "--processes",
        type=int,
        default=DEFAULT_PROCESSES,
        help=f"split the clients over this many processes (default {DEFAULT_PROCESSES})",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="deadline of unary calls"
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=_load)
