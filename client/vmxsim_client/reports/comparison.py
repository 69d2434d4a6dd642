"""One trace through several profiles and latency modes, side by side (``compare``, ``demo``).

Each profile x mode is one Replay on the server. The slowdown ratios answer the seed's question
(KVM 45.4 s vs HAXM 532.5 s nested): ``vs_fastest`` divides each run's simulated time by the
fastest profile's in the same mode; ``vs_native`` divides each non-native run by the same
profile's native run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ..client import DEFAULT_BATCH_SIZE, Client
from ..names import Mode, Profile
from ..resume import DEFAULT_MAX_UNACKED
from ..summaries import ReplayProgress, RunSummary
from .exit_table import ExitTable
from .per_exit import MAX_IN_FLIGHT, ExitTap
from .progress import Progress
from .sources import exit_opener

__all__ = [
    "DEFAULT_MODES",
    "DEFAULT_PROFILES",
    "Watch",
    "compare",
    "comparison_rows",
    "first_run_per_profile",
    "ratios",
    "reason_rows",
    "run_grid",
]

DEFAULT_PROFILES: tuple[Profile, ...] = ("haxm-legacy", "haxm-cache", "kvm")
DEFAULT_MODES: tuple[Mode, ...] = ("native", "nested")

Summary = Mapping[str, Any]
"""A run summary as the tables read it (a ``RunSummary`` or the same keys in a plain dict)."""


Watch = Callable[[str, str, Any], Callable[[ReplayProgress], None] | None]
"""``watch(profile, mode, exits)``, called before each run with the run's exits; returns that
run's ``on_progress`` (see ``Client.replay``) or None."""


def run_grid(
    client: Client,
    open_exits: Callable[[], AbstractContextManager[Any]],
    profiles: Sequence[Profile],
    modes: Sequence[Mode],
    batch_size: int,
    *,
    per_exit: bool = False,
    watch: Watch | None = None,
    tables: dict[tuple[str, str], ExitTable] | None = None,
) -> list[RunSummary]:
    """One run summary per profile x mode (profile-major); ``open_exits()`` gives the exits of
    one run (a fresh reader, or the same in-memory list). With ``tables``, each run's
    per-reason exit table is folded from its per-exit results into ``tables[profile, mode]``."""
    runs = []
    for profile in profiles:
        for mode in modes:
            with open_exits() as exits:
                on_progress = watch(profile, mode, exits) if watch is not None else None
                source = exits
                if tables is not None:
                    source = ExitTap(exits)
                    table = tables[profile, mode] = ExitTable()
                    on_progress = _folding(source, table, on_progress)
                runs.append(
                    client.replay(
                        source,
                        profile=profile,
                        mode=mode,
                        batch_size=batch_size,
                        per_exit=per_exit or tables is not None,
                        on_progress=on_progress,
                        max_unacked=MAX_IN_FLIGHT if tables is not None else DEFAULT_MAX_UNACKED,
                    )
                )
    return runs


def _folding(
    tap: ExitTap, table: ExitTable, then: Callable[[ReplayProgress], None] | None
) -> Callable[[ReplayProgress], None]:
    """An ``on_progress`` that folds each acknowledged batch into ``table``, then calls
    ``then``."""

    def on_progress(message: ReplayProgress) -> None:
        table.add(tap.join(message))
        if then is not None:
            then(message)

    return on_progress


def compare(
    client: Client,
    spec: str,
    profiles: Sequence[Profile] = DEFAULT_PROFILES,
    modes: Sequence[Mode] = DEFAULT_MODES,
    *,
    trace_format: str | None = None,
    strict: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    per_exit: bool = False,
    watch: Watch | None = None,
    tables: dict[tuple[str, str], ExitTable] | None = None,
) -> list[RunSummary]:
    """The run summaries of ``spec`` (a trace path, ``-`` or ``mix:NAME[:EXITS[:SEED]]``)
    through every profile x mode, with a progress bar per run; ``watch`` and ``tables`` as in
    ``run_grid``."""
    bar = progress or Progress(enabled=False)

    def watch_run(profile: str, mode: str, exits: Any) -> Callable[[ReplayProgress], None]:
        bar.start(exits, f"{profile}/{mode}")
        inner = watch(profile, mode, exits) if watch is not None else None

        def on_progress(message: ReplayProgress) -> None:
            bar.update(message["exits"])
            if inner is not None:
                inner(message)

        return on_progress

    with exit_opener(spec, trace_format, strict) as open_exits:
        try:
            return run_grid(
                client, open_exits, profiles, modes, batch_size,
                per_exit=per_exit, watch=watch_run, tables=tables,
            )  # fmt: skip
        finally:
            bar.done()


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def ratios(runs: Iterable[Summary]) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{"vs_fastest": {mode: {profile: x}}, "vs_native": {profile: {mode: x}}}``."""
    seconds: dict[tuple[str, str], float] = {
        (r["profile"], r["mode"]): r["simulated_seconds"] for r in runs
    }
    vs_fastest: dict[str, dict[str, float | None]] = {}
    vs_native: dict[str, dict[str, float | None]] = {}
    for (profile, mode), t in seconds.items():
        fastest = min(s for (_, m), s in seconds.items() if m == mode)
        vs_fastest.setdefault(mode, {})[profile] = _ratio(t, fastest)
        native = seconds.get((profile, "native"))
        if mode != "native" and native is not None:
            vs_native.setdefault(profile, {})[mode] = _ratio(t, native)
    return {"vs_fastest": vs_fastest, "vs_native": vs_native}


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _per_exit(count: int, exits: int) -> float:
    return count / exits if exits else 0.0


def comparison_rows(runs: Sequence[Summary]) -> list[dict[str, str]]:
    """One row of formatted cells per run: counts per exit, simulated time and ratios."""
    r = ratios(runs)
    rows = []
    for run in runs:
        exits, counts, per = run["exits"], run["instructions"], run["per_exit"]
        rows.append(
            {
                "profile": run["profile"],
                "mode": run["mode"],
                "exits": f"{exits:,}",
                "vmread/exit": f"{per['vmread']['mean']:.2f}",
                "vmread p50": f"{per['vmread']['p50']:g}",
                "vmread p99": f"{per['vmread']['p99']:g}",
                "vmwrite/exit": f"{per['vmwrite']['mean']:.2f}",
                "vmwrite p50": f"{per['vmwrite']['p50']:g}",
                "vmwrite p99": f"{per['vmwrite']['p99']:g}",
                "vmptrld/exit": f"{_per_exit(counts['vmptrld'], exits):.2f}",
                "vmclear/exit": f"{_per_exit(counts['vmclear'], exits):.2f}",
                "simulated s": f"{run['simulated_seconds']:.6f}",
                "vs fastest": _x(r["vs_fastest"].get(run["mode"], {}).get(run["profile"])),
                "vs native": _x(r["vs_native"].get(run["profile"], {}).get(run["mode"])),
            }
        )
    return rows


def first_run_per_profile(runs: Iterable[Summary]) -> dict[str, Summary]:
    """Each profile's first run: counts do not depend on the latency mode, so it stands for
    all the profile's modes."""
    first: dict[str, Summary] = {}
    for run in runs:
        first.setdefault(run["profile"], run)
    return first


def reason_rows(runs: Sequence[Summary]) -> list[dict[str, str]]:
    """Per exit reason (most frequent first): exits and VMREAD/VMWRITE per exit of each
    profile."""
    first = first_run_per_profile(runs)
    if not first:
        return []
    reference = next(iter(first.values()))["by_reason"]
    rows = []
    for reason, totals in reference.items():
        row = {"reason": reason, "exits": f"{totals['exits']:,}"}
        for profile, run in first.items():
            entry = run["by_reason"].get(reason)
            shown = "-"
            if entry and entry["exits"]:
                n = entry["exits"]
                shown = f"{entry['vmread'] / n:.1f}/{entry['vmwrite'] / n:.1f}"
            row[f"{profile} rd/wr"] = shown
        rows.append(row)
    return rows
