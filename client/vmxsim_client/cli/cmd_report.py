"""``vmxsim report``: one trace through several profiles and modes, drawn as charts.

Replays TRACE (a trace file, ``-`` or ``mix:NAME[:EXITS[:SEED]]``) through every profile x mode
on the server with per-exit results, then writes the PNG charts of ``reports.charts`` into
``--out-dir`` (default ``vmxsim-report``) and, with ``--html FILE``, one self-contained HTML page
with the charts and the summary tables. Needs matplotlib (``pip install 'vmxsim[reports]'``).
``--json`` prints ``{"trace": TRACE, "files": [paths written], "runs": [run summary, ...]}``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..reports.progress import Progress
from ..reports.runs import collect
from ..reports.write import write_report
from .cmd_compare import add_grid_options, grid_from_args, require_charts
from .common import add_server_options, client_from_args, rpc_command
from .output import emit_json

__all__ = ["DEFAULT_OUT_DIR", "register"]

DEFAULT_OUT_DIR = "vmxsim-report"


@rpc_command
def _report(args: argparse.Namespace) -> int:
    profiles, modes = grid_from_args(args)
    require_charts()
    with client_from_args(args) as client:
        report = collect(client, args.trace, profiles, modes, args, Progress(enabled=not args.json))
    files = write_report(report, out_dir=args.out_dir, html=args.html)
    if args.json:
        emit_json({"trace": args.trace, "files": files, "runs": report.summaries()})
    else:
        for path in files:
            print(path)
    return 0


def register(sub: Any) -> None:
    """Add ``report`` to the CLI."""
    p = sub.add_parser(
        "report",
        help="replay a trace through several profiles and modes; write PNG charts and HTML",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
    )
    add_grid_options(p)
    p.add_argument(
        "--out-dir",
        default=DEFAULT_OUT_DIR,
        metavar="DIR",
        help=f"directory of the PNG charts (default {DEFAULT_OUT_DIR})",
    )
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report")
    add_server_options(p)
    p.set_defaults(func=_report)
