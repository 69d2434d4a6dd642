"""The report as one HTML page: the charts embedded as base64 PNG data URIs and the summary
tables of ``vmxsim compare`` (no external asset: the file can be mailed or attached)."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .comparison import comparison_rows, reason_rows

if TYPE_CHECKING:
    from .runs import Report

__all__ = ["render_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0 1.5em; }
.note { color: #555; font-size: 0.9em; }
"""

_CAPTIONS = {
    "vmread_per_exit.png": "Distribution of VMREADs per exit",
    "vmwrite_per_exit.png": "Distribution of VMWRITEs per exit",
    "by_reason.png": "VMREADs and VMWRITEs per exit by exit reason",
    "simulated_time.png": "Simulated time per profile and latency mode",
    "cache_hit_rate.png": "VMCS cache hit rate per profile",
}


def _table(rows: Sequence[Mapping[str, str]]) -> str:
    if not rows:
        return "<p class='note'>(no exits)</p>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row[c]))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _input_rows(report: Report) -> list[dict[str, str]]:
    first: Mapping[str, Any] = report.runs[0].summary if report.runs else {}
    unknown = first.get("unknown_reasons", {})
    return [
        {
            "trace": report.trace,
            "exits": f"{first.get('exits', 0):,}",
            "skipped lines": f"{first.get('skipped', 0):,}",
            "unknown reasons": ", ".join(f"{k} ({v:,})" for k, v in unknown.items()) or "-",
        }
    ]


def render_html(report: Report, charts: Mapping[str, bytes]) -> str:
    """The page: input, runs table, charts, per-reason table."""
    summaries = report.summaries()
    figures = "".join(
        f"<h3>{html.escape(_CAPTIONS.get(name, name))}</h3>"
        f"<img alt='{html.escape(name)}' "
        f"src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"
        for name, png in charts.items()
    )
    title = f"vmxsim report: {report.trace}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<h2>Input</h2>{_table(_input_rows(report))}"
        f"<h2>Runs</h2>{_table(comparison_rows(summaries))}"
        "<p class='note'>vs fastest: simulated time over the fastest profile's in the same mode;"
        " vs native: over the same profile's native run.</p>"
        f"<h2>Charts</h2>{figures}"
        "<h2>VMREADs/VMWRITEs per exit, by exit reason</h2>"
        f"{_table(reason_rows(summaries))}"
        "</body></html>\n"
    )
