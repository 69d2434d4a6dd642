"""``vmxsim drive``: drive a vCPU with exits over the Drive stream and print the totals.

The exits are a shipped mix synthesised with a seed (``--mix``), or a trace file. They run on
an existing vCPU (``--vcpu``, which keeps its state and counts) or on a new vCPU of
``--profile``/``--mode`` that is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import CliError
from ..reports.sources import exit_source
from ..summaries import BatchReport
from ..traces.mix import MIX_PREFIX
from .common import (
    add_batch_size_option,
    add_profile_options,
    add_server_options,
    add_trace_options,
    check_batch_size,
    client_from_args,
    print_summary,
    rpc_command,
    warn_skipped,
)
from .output import emit_json

__all__ = ["register"]


def _source_spec(args: argparse.Namespace) -> str:
    if (args.mix is None) == (args.trace is None):
        raise CliError("give either --mix NAME or a TRACE file")
    if args.mix is not None:
        if args.exits < 0:
            raise CliError("--exits must not be negative")
        return f"{MIX_PREFIX}{args.mix}:{args.exits}:{args.seed}"
    if args.exits_given:
        raise CliError("--exits and --seed apply to --mix only")
    return str(args.trace)


def _batch_line(batch: BatchReport) -> None:
    counts = batch["instructions"]
    print(
        f"batch {batch['sequence']}: {batch['exits']:,} exits  vmread {counts['vmread']:,}  "
        f"vmwrite {counts['vmwrite']:,}  simulated {batch['simulated_seconds']:.6f} s",
        file=sys.stderr,
    )


@rpc_command
def _drive(args: argparse.Namespace) -> int:
    check_batch_size(args)
    if args.vcpu and (args.profile or args.mode):
        raise CliError("--vcpu drives an existing vCPU: leave out --profile and --mode")
    spec = _source_spec(args)
    show_batches = sys.stderr.isatty() and not args.json
    with exit_source(spec, args.format, args.strict) as source:
        with client_from_args(args) as client:
            if args.vcpu:
                vcpu = client.vcpu(args.vcpu)
            else:
                vcpu = client.create_vcpu(args.profile or "kvm", args.mode or "native")
            try:
                totals = vcpu.drive(
                    source,
                    batch_size=args.batch_size,
                    per_exit=True,  # for the p50/p99 of the summary
                    on_batch=_batch_line if show_batches else None,
                )
            finally:
                if not args.vcpu and not args.keep:
                    vcpu.delete()
        warn_skipped(source)
    if args.json:
        emit_json(totals)
    else:
        kept = " (kept)" if args.keep and not args.vcpu else ""
        print(f"vCPU {totals['vcpu_id']}{kept}: {totals['batches']} batches")
        print_summary(totals)
    return 0


def register(sub: Any) -> None:
    """Add ``drive`` to the CLI."""
    p = sub.add_parser(
        "drive",
        help="drive a vCPU with a mix or a trace (Drive stream); print the totals",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("trace", nargs="?", metavar="TRACE", help="trace file (- = stdin)")
    p.add_argument("--mix", metavar="NAME", help="a shipped exit mix, e.g. linux-boot")
    p.add_argument(
        "--exits", type=int, default=None, help="exits to synthesise from --mix (default 10000)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed of --mix (default 0)")
    p.add_argument("--vcpu", metavar="ID", help="drive this existing vCPU")
    add_profile_options(p, defaults=False)
    p.add_argument("--keep", action="store_true", help="keep the new vCPU (without --vcpu)")
    add_trace_options(p)
    add_batch_size_option(p)
    add_server_options(p)
    p.set_defaults(func=_drive_with_defaults)


def _drive_with_defaults(args: argparse.Namespace) -> int:
    """Fill --exits/--seed defaults, remembering whether either was given."""
    args.exits_given = args.exits is not None or args.seed is not None
    args.exits = 10_000 if args.exits is None else args.exits
    args.seed = 0 if args.seed is None else args.seed
    return _drive(args)
