"""Replay every real public trace in ../shared/traces that a reader detects (see its README).

The folder is not part of the project; the test is skipped where it does not exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmxsim_client.traces import TraceParseError, open_trace

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
FILES = sorted(p for p in SHARED.rglob("*") if p.is_file() and p.name != "README.md")


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} does not exist (shared trace data)")
def test_every_detected_shared_trace_parses_cleanly() -> None:
    report = []
    for path in FILES:
        try:
            reader = open_trace(path)
        except TraceParseError:
            report.append(f"{path.name}: not a supported format")
            continue
        with reader:
            exits = sum(1 for _ in reader.rows())
        report.append(
            f"{path.name}: {reader.format_name} {exits} exits, {reader.lines} lines, "
            f"{reader.skipped} malformed, unknown {dict(reader.unknown_reasons)}"
        )
        assert exits > 0, path
        assert reader.skipped <= 1, (path, [str(e) for e in reader.errors])
        assert set(reader.unknown_reasons) <= {"UNKNOWN"}, path  # perf's name for unnamed codes
    print("\n".join(report))
    assert sum("exits" in line for line in report) >= 30
