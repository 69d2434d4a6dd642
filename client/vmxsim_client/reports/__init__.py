"""What vmxsim tells people about runs: the side-by-side comparison of profiles and modes
(``comparison``), reports as charts and one HTML page (``runs`` collects, ``write`` renders with
``charts`` and ``html_page``), the per-exit comparison with a recorded trace (``per_exit``,
``per_exit_file``), and the exit sources and progress bar those runs share.

Layer: reports import the client proper and ``traces``, never the CLI or ``load``.

    report = collect(client, "mix:linux-boot:50000", ["haxm-legacy", "kvm"], ["native", "nested"])
    write_report(report, out_dir="report", html="report.html")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .comparison import compare, ratios
    from .runs import Report, RunResult, collect
    from .write import write_report

__all__ = ["Report", "RunResult", "collect", "compare", "ratios", "write_report"]

_HOME = {
    "compare": "comparison",
    "ratios": "comparison",
    "Report": "runs",
    "RunResult": "runs",
    "collect": "runs",
    "write_report": "write",
}


def __getattr__(name: str) -> Any:
    """The package's names, imported when first asked for (PEP 562): ``vmxsim replay`` imports
    ``reports.exit_table`` alone, not the comparison and chart stack (~30 ms of its start-up)."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)
