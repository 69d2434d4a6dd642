"""Writing a report: its charts as PNG files and/or one self-contained HTML page."""

from __future__ import annotations

import os

from .charts import render_charts
from .html_page import render_html
from .runs import Report

__all__ = ["write_report"]


def write_report(
    report: Report, *, out_dir: str | None = None, html: str | None = None
) -> list[str]:
    """Render the charts; write them as PNGs into ``out_dir`` and/or the HTML page to
    ``html`` (PNGs embedded). Returns the paths written."""

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
