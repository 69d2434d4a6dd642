"""``vmxsim compare``: one trace through several profiles and modes, with slowdown ratios.

TRACE is a trace file, re-read for each run so memory stays flat, or ``-`` (standard input,
read once into memory), or ``mix:NAME[:EXITS[:SEED]]``: a shipped exit mix synthesised
(e.g. ``mix:linux-boot:20000``; the same exits for every run). ``--json`` prints
``{"trace": TRACE, "runs": [run summary, ...], "ratios": {"vs_fastest": {mode: {profile: x}},
"vs_native": {profile: {mode: x}}}}``. ``--html FILE`` also writes the report of
``vmxsim report`` (charts and tables in one self-contained file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO, cast

from vmxsim_server.vmx.latency import MODES
from vmxsim_server.vmx.profiles import available_profiles

from ..errors import CliError
from ..names import Mode, Profile
from ..reports.comparison import (
    DEFAULT_MODES,
    DEFAULT_PROFILES,
    compare,
    comparison_rows,
    ratios,
    reason_rows,
)
from ..reports.exit_table import ExitTable, print_exit_tables
from ..reports.progress import Progress
from .common import (
    add_batch_size_option,
    add_exit_table_options,
    add_server_options,
    add_trace_options,
    check_batch_size,
    client_from_args,
    rpc_command,
)
from .output import emit_json, render_rows

__all__ = ["add_grid_options", "grid_from_args", "print_comparison", "register"]


def _names(text: str, what: str, known: Sequence[str] | None = None) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CliError(f"--{what} needs at least one name")
    unknown = [n for n in names if known is not None and n not in known]
    if unknown:
        raise CliError(f"unknown {what[:-1]} {unknown[0]!r} (known: {', '.join(known or ())})")
    if len(set(names)) != len(names):
        raise CliError(f"--{what} names one twice")
    return names


def add_grid_options(parser: argparse.ArgumentParser) -> None:
    """TRACE, ``--profiles``, ``--modes``, the trace and batch options (compare, report)."""
    parser.add_argument(
        "trace", metavar="TRACE", help="trace file, - (stdin) or mix:NAME[:EXITS[:SEED]]"
    )
    parser.add_argument(
        "--profiles",
        default=",".join(DEFAULT_PROFILES),
        help=f"comma-separated profiles (default {','.join(DEFAULT_PROFILES)})",
    )
    parser.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        help=f"comma-separated modes of {', '.join(MODES)} (default {','.join(DEFAULT_MODES)})",
    )
    add_trace_options(parser)
    add_batch_size_option(parser)


def grid_from_args(args: argparse.Namespace) -> tuple[list[Profile], list[Mode]]:
    """The profiles and modes asked for (CliError on an empty, unknown or repeated name)."""
    check_batch_size(args)
    profiles = _names(args.profiles, "profiles", available_profiles())
    return cast(list[Profile], profiles), cast(list[Mode], _names(args.modes, "modes", MODES))


@rpc_command
def _compare(args: argparse.Namespace) -> int:
    profiles, modes = grid_from_args(args)
    progress = Progress(enabled=not args.json)
    tables: dict[tuple[str, str], ExitTable] | None = None  # the HTML report has its own tables
    with client_from_args(args) as client:
        if args.html is not None:
            from ..reports.runs import collect
            from ..reports.write import write_report

            require_charts()
            report = collect(client, args.trace, profiles, modes, args, progress)
            write_report(report, html=args.html)
            runs = report.summaries()
        else:
            tables = {} if not args.json or args.exit_table else None
            runs = compare(
                client,
                args.trace,
                profiles,
                modes,
                trace_format=args.format,
                strict=args.strict,
                batch_size=args.batch_size,
                progress=progress,
                tables=tables,
            )
    if args.json:
        out: list[dict[str, Any]] = [dict(run) for run in runs]
        if tables:
            for run in out:
                run["exit_table"] = tables[run["profile"], run["mode"]].to_json()
        emit_json({"trace": args.trace, "runs": out, "ratios": ratios(runs)})
    else:
        print(f"trace {args.trace}: {runs[0]['exits']:,} exits\n")
        print_comparison(runs)
        for (profile, mode), table in (tables or {}).items():
            print(f"\n=== {profile} / {mode} ===\n")
            print_exit_tables(table.groups(), args.sort)
    return 0


def require_charts() -> None:
    """CliError unless matplotlib can be imported (before any replay runs)."""
    from ..reports.charts import require_matplotlib

    require_matplotlib()


def register(sub: Any) -> None:
    """Add ``compare`` to the CLI."""
    p = sub.add_parser(
        "compare",
        help="replay one trace through several profiles and modes, side by side",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
    )
    add_grid_options(p)
    add_exit_table_options(p)
    p.add_argument(
        "--html", metavar="FILE", help="also write an HTML report with charts (needs matplotlib)"
    )
    add_server_options(p)
    p.set_defaults(func=_compare)


def print_comparison(runs: Sequence[Mapping[str, Any]], out: TextIO | None = None) -> None:
    """The comparison table (per profile and mode) and the per-reason breakdown."""
    stream = out if out is not None else sys.stdout
    rows = comparison_rows(runs)
    render_rows(rows, list(rows[0]) if rows else [], out=stream)
    stream.write("\n")
    reasons = reason_rows(runs)
    if reasons:
        stream.write("VMREADs/VMWRITEs per exit, by exit reason:\n")
        render_rows(reasons, list(reasons[0]), out=stream)
