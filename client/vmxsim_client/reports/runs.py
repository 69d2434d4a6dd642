"""Reports people look at: one trace through several profiles and modes, as PNG charts and one
self-contained HTML page (``vmxsim report``, ``vmxsim compare --html``).

Every run goes through the server (Replay with ``per_exit=True``); the per-exit VMREAD/VMWRITE
counts of each acknowledged batch are folded into histograms on arrival (``Counter``: memory
grows with the number of distinct counts, never with the trace). Rendering is in
``charts`` (matplotlib, optional extra ``reports``) and ``html_page``, written by ``write``.

    report = collect(client, "mix:linux-boot:50000", ["haxm-legacy", "kvm"], ["native", "nested"])
    write_report(report, out_dir="report", html="report.html")
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from ..client import DEFAULT_BATCH_SIZE, Client
from ..names import Mode, Profile
from ..summaries import ReplayProgress, RunSummary
from .comparison import compare
from .progress import Progress

__all__ = ["Report", "RunResult", "collect"]


@dataclass
class RunResult:
    """One profile x mode: its run summary and the histograms of its per-exit counts."""

    summary: RunSummary
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

    def summaries(self) -> list[RunSummary]:
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
    profiles: Sequence[Profile],
    modes: Sequence[Mode],
    options: Any = _DEFAULTS,
    progress: Progress | None = None,
) -> Report:
    """Replay ``spec`` through every profile x mode; ``options`` has ``format``, ``strict``
    and ``batch_size`` (parsed command-line arguments will do)."""
    histograms: list[tuple[Counter[int], Counter[int]]] = []

    def watch(profile: str, mode: str, exits: Any) -> Callable[[ReplayProgress], None]:
        reads, writes = Counter[int](), Counter[int]()
        histograms.append((reads, writes))

        def on_progress(message: ReplayProgress) -> None:
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
