"""The report's charts as PNG bytes, drawn with matplotlib's object API on the Agg canvas (no
pyplot, no global backend state, no display needed).

- ``vmread_per_exit.png`` / ``vmwrite_per_exit.png``: the distribution of VMREADs / VMWRITEs
  per exit, one panel per profile;
- ``by_reason.png``: VMREADs and VMWRITEs per exit of the most frequent exit reasons, bars
  grouped by profile;
- ``simulated_time.png``: simulated seconds per profile and latency mode;
- ``cache_hit_rate.png``: the VMCS cache's hit rate per profile.

Per-exit counts do not depend on the latency mode, so the count charts use each profile's
first run.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vmxsim_server.vmx.summary import distribution

from ..errors import CliError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .runs import Report, RunResult

__all__ = ["CHART_FILES", "render_charts", "require_matplotlib"]

CHART_FILES = (
    "vmread_per_exit.png",
    "vmwrite_per_exit.png",
    "by_reason.png",
    "simulated_time.png",
    "cache_hit_rate.png",
)
MAX_REASONS = 12
"""Exit reasons shown in ``by_reason.png`` (the most frequent; the rest are in the tables)."""
DPI = 110
_INSTALL_HINT = "vmxsim report needs matplotlib: pip install 'vmxsim[reports]'"


def require_matplotlib() -> None:
    """CliError with the install hint when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError(_INSTALL_HINT) from None


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(figure: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    out = io.BytesIO()
    figure.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _colours(profiles: Sequence[str]) -> dict[str, Any]:
    """One colour per profile, the same in every chart."""
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {profile: palette(i % 10) for i, profile in enumerate(profiles)}


def _distribution_chart(runs: Sequence[RunResult], name: str, colours: dict[str, Any]) -> bytes:
    """% of exits at each per-exit count of one instruction, one panel per profile."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    figure = _figure(8.0, 0.6 + 1.9 * len(runs))
    axes = figure.subplots(len(runs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, run in zip(axes, runs, strict=True):
        hist: Counter[int] = run.vmread_hist if name == "VMREAD" else run.vmwrite_hist
        total = sum(hist.values()) or 1
        values = sorted(hist)
        ax.bar(values, [100 * hist[v] / total for v in values], width=0.8,
               color=colours[run.profile])  # fmt: skip
        d = distribution(hist)
        ax.set_title(
            f"{run.profile}: mean {d['mean']:.2f}, p50 {d['p50']:g}, p99 {d['p99']:g}",
            loc="left", fontsize=10,
        )  # fmt: skip
        ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax.set_ylabel("share of exits")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel(f"{name}s per exit")
    figure.suptitle(f"{name}s per exit: share of exits at each count")
    return _png(figure)


def _grouped_bars(
    ax: Axes,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    colours: dict[str, Any],
    value_format: str | None = None,
) -> None:
    """Bars of each series side by side at each label."""
    width = 0.8 / max(len(series), 1)
    for i, (profile, values) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        bars = ax.bar([x + offset for x in range(len(labels))], values, width,
                      label=profile, color=colours[profile])  # fmt: skip
        if value_format is not None:
            ax.bar_label(bars, fmt=value_format, fontsize=8, padding=2)
    ax.set_xticks(range(len(labels)), labels)
    ax.grid(axis="y", alpha=0.3)


def _by_reason_chart(runs: Sequence[RunResult], colours: dict[str, Any]) -> bytes:
    """VMREAD and VMWRITE per exit of the most frequent reasons, grouped by profile."""
    reference = runs[0].summary
    total = reference["exits"] or 1
    reasons = list(reference["by_reason"])[:MAX_REASONS]
    labels = [f"{r} ({100 * reference['by_reason'][r]['exits'] / total:.1f}%)" for r in reasons]
    width = min(14.0, max(8.0, 0.22 * len(reasons) * len(runs) + 2.5))
    figure = _figure(width, 7.5)
    top, bottom = figure.subplots(2, 1, sharex=True)
    for ax, key in ((top, "vmread"), (bottom, "vmwrite")):
        series = {}
        for run in runs:
            by_reason: Mapping[str, Mapping[str, Any]] = run.summary["by_reason"]
            series[run.profile] = [
                by_reason[r][key] / by_reason[r]["exits"] if r in by_reason else 0.0
                for r in reasons
            ]
        _grouped_bars(ax, labels, series, colours)
        ax.set_ylabel(f"{key.upper()}s per exit")
    bottom.tick_params(axis="x", labelrotation=35, labelsize=9)
    for label in bottom.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    top.legend(loc="lower center", bbox_to_anchor=(0.5, 1.01), ncols=len(runs), frameon=False)
    figure.suptitle(
        f"VMREADs / VMWRITEs per exit by exit reason, top {len(reasons)} reasons "
        "(in brackets: share of exits)"
    )
    return _png(figure)


def _simulated_time_chart(report: Report, colours: dict[str, Any]) -> bytes:
    """Simulated seconds per profile (bars) and mode (groups)."""
    modes = list(dict.fromkeys(run.mode for run in report.runs))
    seconds = {(run.profile, run.mode): run.summary["simulated_seconds"] for run in report.runs}
    profiles = list(dict.fromkeys(run.profile for run in report.runs))
    scale, unit = (1.0, "seconds") if max(seconds.values(), default=0) >= 1 else (1e3, "ms")
    series = {p: [scale * seconds.get((p, m), 0.0) for m in modes] for p in profiles}
    figure = _figure(max(6.5, 1.6 * len(modes) * max(1, len(profiles)) / 2 + 3), 4.8)
    ax = figure.subplots()
    _grouped_bars(ax, modes, series, colours, value_format="%.3g")
    values = [v for v in seconds.values() if v > 0]
    if values and max(values) / min(values) > 30:
        ax.set_yscale("log")
    ax.margins(y=0.15)
    ax.set_xlabel("latency mode")
    ax.set_ylabel(f"simulated time ({unit})")
    ax.legend(title="profile", frameon=False, loc="upper left")
    exits = report.runs[0].summary["exits"] if report.runs else 0
    ax.set_title(f"Simulated time of {exits:,} exits")
    return _png(figure)


def _cache_chart(runs: Sequence[RunResult], colours: dict[str, Any]) -> bytes:
    """Hit rate of each profile's VMCS cache (lookups = hits + misses)."""
    figure = _figure(7.0, 0.9 + 0.6 * len(runs))
    ax = figure.subplots()
    names = [run.profile for run in runs]
    rates, notes = [], []
    for run in runs:
        hits, misses = run.summary["cache"]["hits"], run.summary["cache"]["misses"]
        lookups = hits + misses
        rates.append(100 * hits / lookups if lookups else 0.0)
        notes.append(f"{rates[-1]:.1f}% of {lookups:,}" if lookups else "no cache")
    bars = ax.barh(names, rates, color=[colours[n] for n in names], height=0.6)
    ax.bar_label(bars, labels=notes, padding=4, fontsize=9)
    ax.set_xlim(0, 118)  # room for the labels right of a 100% bar
    ax.set_xticks(range(0, 101, 20))
    ax.invert_yaxis()
    ax.set_xlabel("cache hit rate (% of cached-field lookups)")
    ax.set_title("VMCS cache hit rate per profile")
    ax.grid(axis="x", alpha=0.3)
    return _png(figure)


def render_charts(report: Report) -> dict[str, bytes]:
    """Every chart of :data:`CHART_FILES` as PNG bytes, by file name."""
    require_matplotlib()
    firsts = report.first_per_profile()
    colours = _colours([run.profile for run in firsts])
    makers: dict[str, Callable[[], bytes]] = {
        "vmread_per_exit.png": lambda: _distribution_chart(firsts, "VMREAD", colours),
        "vmwrite_per_exit.png": lambda: _distribution_chart(firsts, "VMWRITE", colours),
        "by_reason.png": lambda: _by_reason_chart(firsts, colours),
        "simulated_time.png": lambda: _simulated_time_chart(report, colours),
        "cache_hit_rate.png": lambda: _cache_chart(firsts, colours),
    }
    return {name: makers[name]() for name in CHART_FILES}
