"""``vmxsim replay``: stream a trace through a profile and a latency mode; print the run summary.

The trace is read incrementally and sent in batches of packed columns (Replay RPC); memory stays
flat however long the trace. On a terminal a progress bar follows the bytes read. ``--json``
prints the run summary of DESIGN.md "Machine-readable output"; for a HAXM log it adds
``"recorded"``: the log's own VMREAD/VMWRITE counts per exit against the model's
(``per_exit.RecordedComparison``). ``--out FILE`` writes every exit's results (``.csv``,
``.jsonl``, ``.gz`` of either, or ``.parquet`` with pyarrow; ``per_exit_file.py``).
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from ..reports.exit_table import ExitTable, print_exit_tables
from ..reports.per_exit import MAX_IN_FLIGHT, ExitTap, RecordedComparison, has_recorded
from ..reports.per_exit_file import OUT_SUFFIXES, PerExitFile, check_out_path
from ..reports.progress import Progress
from ..reports.sources import exit_source
from ..resume import DEFAULT_MAX_UNACKED
from ..summaries import ReplayProgress
from ..traces.readahead import ReadAhead
from .common import (
    add_batch_size_option,
    add_exit_table_options,
    add_profile_options,
    add_server_options,
    add_trace_options,
    check_batch_size,
    client_from_args,
    print_summary,
    rpc_command,
    warn_skipped,
)
from .output import emit_json, render_rows

if TYPE_CHECKING:  # grpc loads once the trace is being read (``_replay``)
    from ..client import Client

__all__ = ["register", "replay_source", "wants_per_exit"]


def wants_per_exit(args: argparse.Namespace, reader: Any) -> bool:
    """Whether the replay needs each exit's results: ``--out``, a HAXM log's recorded counters,
    or the per-reason exit table (not with ``--json`` alone)."""
    return args.out is not None or has_recorded(reader) or not args.json or args.exit_table


def replay_source(
    client: Client,
    reader: Any,
    args: argparse.Namespace,
    progress: Progress,
) -> dict[str, Any]:
    """The run summary of ``reader`` through ``args.profile``/``args.mode``; per-exit results
    go to ``args.out``, for a HAXM log into the summary's ``"recorded"`` key, and into the
    per-reason exit table (``"exit_table"``, an ``ExitTable`` unless ``--json`` without
    ``--exit-table``: then the replay needs no per-exit results)."""
    tap = ExitTap(reader)
    recorded = RecordedComparison() if tap.has_recorded else None
    table = ExitTable() if not args.json or args.exit_table else None
    per_exit = wants_per_exit(args, reader)
    out_file = PerExitFile(args.out) if args.out is not None else None
    source = tap if per_exit else reader  # the tap keeps each batch until it is joined

    def on_progress(message: ReplayProgress) -> None:
        progress.update(message["exits"])
        if per_exit:
            batch = tap.join(message)
            if out_file is not None:
                out_file.write(batch)
            if recorded is not None:
                recorded.add(batch)
            if table is not None:
                table.add(batch)

    progress.start(reader)
    with out_file or nullcontext():
        try:
            summary = client.replay(
                source,
                profile=args.profile,
                mode=args.mode,
                l0=getattr(args, "l0", None),
                batch_size=args.batch_size,
                per_exit=per_exit,
                on_progress=on_progress,
                max_unacked=MAX_IN_FLIGHT if per_exit else DEFAULT_MAX_UNACKED,
            )
        finally:
            progress.done()
    out: dict[str, Any] = dict(summary)
    if recorded is not None:
        out["recorded"] = recorded.to_json()
    if table is not None:
        out["exit_table"] = table.to_json() if args.json else table
    return out


def _print_recorded(recorded: dict[str, Any]) -> None:
    print(f"\nHAXM log: {recorded['exits']:,} exits with recorded counters, against the model")
    rows = [
        {
            "per exit": f"{name.upper()}s",
            "log mean": f"{recorded[f'{name}_mean']:.2f}",
            "model mean": f"{recorded[f'model_{name}_mean']:.2f}",
            "mean |log - model|": f"{recorded[f'mean_abs_diff_{name}']:.2f}",
        }
        for name in ("vmread", "vmwrite")
    ]
    render_rows(rows, list(rows[0]))


@rpc_command
def _replay(args: argparse.Namespace) -> int:
    check_batch_size(args)
    if args.out is not None:
        check_out_path(args.out)
    progress = Progress(enabled=not args.json)
    with exit_source(args.trace, args.format, args.strict) as reader:
        # a thread reads the trace from now on, beside the imports, the server's start-up and
        # then the stream (traces/readahead.py); not for a HAXM log, whose recorded counters
        # the tap takes from the reader as it reads, nor with --out, where writing each exit
        # is what the replay waits for (a reader thread beside it made a 1M-exit CSV replay
        # slower, 3.38 s against 2.88 s, and 6 MiB larger: bench_replay_rss.py)
        ahead = None
        if args.out is None and not has_recorded(reader):
            ahead = ReadAhead(reader, args.batch_size)
        try:
            with client_from_args(args) as client:
                summary = replay_source(client, ahead or reader, args, progress)
        finally:
            if ahead is not None:
                ahead.close()
        warn_skipped(reader)
    if args.json:
        emit_json(summary)
    else:
        print_summary(summary, by_reason=False)
        print_exit_tables(summary["exit_table"].groups(), args.sort)
        if "recorded" in summary:
            _print_recorded(summary["recorded"])
    return 0


def register(sub: Any) -> None:
    """Add ``replay`` to the CLI."""
    p = sub.add_parser(
        "replay",
        help="replay a trace through a profile and mode; print the run summary",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "trace",
        metavar="TRACE",
        help="trace file (ftrace, perf-kvm-stat, haxm-log, jsonl; .gz/.xz/.zst; - = stdin), "
        "or mix:NAME[:EXITS[:SEED]] for a shipped exit mix synthesised",
    )
    add_profile_options(p)
    add_trace_options(p)
    add_batch_size_option(p)
    add_exit_table_options(p)
    p.add_argument(
        "--out",
        metavar="FILE",
        help="write each exit's reason, VMREADs, VMWRITEs and simulated seconds (and the "
        f"trace's rip/timestamp) to FILE; the format follows its name: {', '.join(OUT_SUFFIXES)}",
    )
    add_server_options(p)
    p.set_defaults(func=_replay)
