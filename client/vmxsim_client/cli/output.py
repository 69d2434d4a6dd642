"""Rendering rows for people (aligned tables) and for scripts (csv, json)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

__all__ = ["FORMATS", "emit_json", "render_rows"]

FORMATS = ("table", "csv", "json")


def render_rows(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: str = "table",
    out: TextIO | None = None,
) -> None:
    """Print rows as an aligned table, as CSV with exactly ``columns``, or as a JSON array."""
    stream = out if out is not None else sys.stdout
    if fmt == "json":
        json.dump([{c: row[c] for c in columns} for row in rows], stream, indent=2)
        stream.write("\n")
    elif fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[c] for c in columns])
    else:
        cells = [[str(row[c]) for c in columns] for row in rows]
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        stream.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        stream.write("\n")
        for r in cells:
            stream.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
            stream.write("\n")


def emit_json(obj: Any, out: TextIO | None = None, indent: int | None = None) -> None:
    """Print one JSON document on its own line(s)."""
    stream = out if out is not None else sys.stdout
    stream.write(json.dumps(obj, indent=indent, sort_keys=False))
    stream.write("\n")
