"""Reports people look at: one trace through several profiles and modes, as PNG charts and one
self-contained HTML page (``vmxsim report``, ``vmxsim compare --html``).

Every run goes through the server (Replay with ``per_exit=True``); the per-exit VMREAD/VMWRITE
counts of each acknowledged batch are folded into histograms on arrival (``Counter``: memory
grows with the number of distinct counts, never with the trace). Rendering is in
``report_charts`` (matplotlib, optional extra ``reports``) and ``report_html``.

    report = collect(client, "mix:linux-boot:50000", ["haxm-legacy", "kvm"], ["native", "nested"])
    write_report(report, out_dir="report", html="report.html")
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from .cli_common import Progress
from .client import DEFAULT_BATCH_SIZE, Client
from .comparison import compare

__all__ = ["Report", "RunResult", "collect", "write_report"]


@dataclass
class RunResult:
    """One profile x mode: its run summary and the histograms of its per-exit counts."""

    summary: dict[str, Any]
    vmread_hist: Counter[int] = field(default_factory=Counter)
    vmwrite_hist: Counter[int] = field(default_factory=Counter)

    @property
    def profile(self) -> str:
        return str(self.summary["profile"])

    @property
    def mode(self) -> str:
        return str(self.summary["mode"])


@dataclass
class Report:
    """The runs of one trace, profile-major."""

    trace: str
    runs: list[RunResult]

    def summaries(self) -> list[dict[str, Any]]:
        """The run summaries, in run order."""
        return [run.summary for run in self.runs]

    def first_per_profile(self) -> list[RunResult]:
        """Each profile's first run (per-exit counts do not depend on the latency mode)."""
        seen: dict[str, RunResult] = {}
        for run in self.runs:
            seen.setdefault(run.profile, run)
        return list(seen.values())


_DEFAULTS = SimpleNamespace(format=None, strict=False, batch_size=DEFAULT_BATCH_SIZE)


def collect(
    client: Client,
    spec: str,
    profiles: Sequence[str],
    modes: Sequence[str],
    options: Any = _DEFAULTS,
    progress: Progress | None = None,
) -> Report:
    """Replay ``spec`` through every profile x mode; ``options`` has ``format``, ``strict``
    and ``batch_size`` (parsed command-line arguments will do)."""
    histograms: list[tuple[Counter[int], Counter[int]]] = []

    def watch(profile: str, mode: str, exits: Any) -> Callable[[dict[str, Any]], None]:
        reads, writes = Counter[int](), Counter[int]()
        histograms.append((reads, writes))

        def on_progress(message: dict[str, Any]) -> None:
            batch = message["batch"]
            reads.update(batch.get("per_exit_vmread", ()))
            writes.update(batch.get("per_exit_vmwrite", ()))

        return on_progress

    summaries = compare(
        client,
        spec,
        profiles,
        modes,
        trace_format=options.format,
        strict=options.strict,
        batch_size=options.batch_size,
        progress=progress,
        per_exit=True,
        watch=watch,
    )
    runs = [
        RunResult(summary, reads, writes)
        for summary, (reads, writes) in zip(summaries, histograms, strict=True)
    ]
    return Report(spec, runs)


def write_report(
    report: Report, *, out_dir: str | None = None, html: str | None = None
) -> list[str]:
    """Render the charts; write them as PNGs into ``out_dir`` and/or the HTML page to
    ``html`` (PNGs embedded). Returns the paths written."""
    from .report_charts import render_charts
    from .report_html import render_html

    charts = render_charts(report)
    written = []
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        for name, png in charts.items():
            path = os.path.join(out_dir, name)
            _write_atomically(path, png)
            written.append(path)
    if html is not None:
        _write_atomically(html, render_html(report, charts).encode("utf-8"))
        written.append(html)
    return written


def _write_atomically(path: str, data: bytes) -> None:
    temp = f"{path}.tmp{os.getpid()}"
    try:
        with open(temp, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
