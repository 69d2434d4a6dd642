"""``vmxsim replay --server ... --json`` end to end through a real server, for every trace format
(and compressed, and standard input): the summary counts what the reader counted; ``--out``
files; the HAXM log's recorded-vs-model comparison; the progress bar only on a terminal."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from vmxsim_client.cli import main
from vmxsim_client.client import Client
from vmxsim_client.reports.per_exit import ExitTap
from vmxsim_client.reports.progress import Progress
from vmxsim_client.traces import open_trace

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
TRACES = {
    "ftrace old": "ftrace_old.txt",
    "ftrace 3.x": "ftrace_mid.txt",
    "ftrace new": "ftrace_new.txt",
    "ftrace wrapped": "ftrace_wrapped.txt",
    "trace-cmd": "tracecmd_report.txt",
    "trace-cmd raw clock": "tracecmd_rawclock.txt",
    "perf script": "perf_script.txt",
    "perf-kvm-stat": "perf_kvm_stat.txt",
    "perf-kvm-stat old": "perf_kvm_stat_old.txt",
    "haxm-log": "haxm.log",
    "haxm-log nested": "haxm_nested.log",
    "jsonl": "sample.jsonl",
}
VMXSIM = str(Path(sys.executable).with_name("vmxsim"))  # the installed console script
COMPRESSORS = {
    ".gz": gzip.compress,
    ".xz": lzma.compress,
    ".zst": zstandard.compress,
    ".bz2": bz2.compress,
}


def replay_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    status = main(["replay", *args, "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def reader_counts(path: Path | str) -> tuple[int, int, dict[str, int]]:
    """(exits, skipped, unknown_reasons) as the trace reader counts them."""
    with open_trace(path) as reader:
        exits = sum(1 for _ in reader.rows())
        return exits, reader.skipped, dict(reader.unknown_reasons)


def counts(summary: dict[str, Any]) -> tuple[int, int, dict[str, int]]:
    return summary["exits"], summary["skipped"], summary["unknown_reasons"]


@pytest.mark.parametrize("name", TRACES.values(), ids=list(TRACES))
def test_every_format_replays_with_the_readers_counts(
    name: str, vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = FIXTURES / name
    summary = replay_json([str(path), "--server", vmxsim_address], capsys)
    expected = reader_counts(path)
    assert expected[0] > 0
    assert counts(summary) == expected


@pytest.mark.parametrize("suffix", COMPRESSORS)
def test_compressed_traces_replay_with_the_readers_counts(
    suffix: str, tmp_path: Path, vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("ftrace_new.txt", "haxm_nested.log"):
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(COMPRESSORS[suffix]((FIXTURES / name).read_bytes()))
        summary = replay_json([str(path), "--server", vmxsim_address], capsys)
        assert counts(summary) == reader_counts(FIXTURES / name)


def test_standard_input_replays_with_the_readers_counts(vmxsim_address: str) -> None:
    path = FIXTURES / "tracecmd_report.txt"
    done = subprocess.run(
        [VMXSIM, "replay", "-", "--server", vmxsim_address,
         "--json"],
        input=path.read_bytes(), capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert counts(json.loads(done.stdout)) == reader_counts(path)
    assert done.stderr == b""


def test_haxm_log_summary_compares_recorded_counts_with_the_model(
    tmp_path: Path, vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exits.jsonl"
    args = [str(FIXTURES / "haxm_nested.log"), "--profile", "haxm-legacy", "--mode", "nested"]
    summary = replay_json([*args, "--out", str(out), "--server", vmxsim_address], capsys)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # the six complete records with known reasons, in the log's order
    assert [(r["recorded_vmread"], r["recorded_vmwrite"]) for r in rows] == [
        (32, 22), (33, 22), (32, 21), (34, 32), (32, 21), (32, 23),
    ]  # fmt: skip
    n = len(rows)
    recorded = summary["recorded"]
    assert recorded["exits"] == n == summary["exits"]
    assert recorded["vmread_mean"] == pytest.approx(195 / 6)
    assert recorded["vmwrite_mean"] == pytest.approx(141 / 6)
    assert recorded["model_vmread_mean"] == pytest.approx(summary["per_exit"]["vmread"]["mean"])
    assert recorded["model_vmwrite_mean"] == pytest.approx(summary["per_exit"]["vmwrite"]["mean"])
    for name in ("vmread", "vmwrite"):
        diff = sum(abs(r[name] - r[f"recorded_{name}"]) for r in rows) / n
        assert recorded[f"mean_abs_diff_{name}"] == pytest.approx(diff)
    status = main(["replay", *args, "--server", vmxsim_address])
    text = capsys.readouterr().out
    assert status == 0 and "HAXM log: 6 exits with recorded counters" in text


def test_other_formats_have_no_recorded_key(
    vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = replay_json([str(FIXTURES / "ftrace_new.txt"), "--server", vmxsim_address], capsys)
    assert "recorded" not in summary


# --- --out ---------------------------------------------------------------------------------------


def test_out_csv_has_one_row_per_exit_with_the_trace_columns(
    tmp_path: Path, vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exits.csv"
    trace = FIXTURES / "ftrace_new.txt"
    summary = replay_json(
        [str(trace), "--out", str(out), "--batch-size", "2", "--server", vmxsim_address], capsys
    )
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "reason", "vmread", "vmwrite", "simulated_seconds",
                             "rip", "timestamp"]  # fmt: skip
    with open_trace(trace) as reader:
        records = list(reader)
    assert [int(r["index"]) for r in rows] == list(range(summary["exits"]))
    assert [int(r["rip"], 16) for r in rows] == [rec.rip for rec in records]
    assert [float(r["timestamp"]) for r in rows] == [rec.timestamp for rec in records]
    assert sum(int(r["vmread"]) for r in rows) == summary["instructions"]["vmread"]
    assert sum(int(r["vmwrite"]) for r in rows) == summary["instructions"]["vmwrite"]
    assert sum(float(r["simulated_seconds"]) for r in rows) == pytest.approx(
        summary["simulated_seconds"]
    )
    for reason, totals in summary["by_reason"].items():
        assert sum(r["reason"] == reason for r in rows) == totals["exits"]
    assert [p.name for p in tmp_path.iterdir()] == ["exits.csv"]  # no temporary file left


def test_out_jsonl_gz_of_a_mix_streams_every_exit(
    tmp_path: Path, vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exits.jsonl.gz"
    summary = replay_json(
        ["mix:linux-boot:9000:3", "--out", str(out), "--server", vmxsim_address], capsys
    )
    with gzip.open(out, "rt") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == summary["exits"] == 9000
    assert set(rows[0]) == {"index", "reason", "vmread", "vmwrite", "simulated_seconds", "rip"}
    assert sum(r["vmread"] for r in rows) == summary["instructions"]["vmread"]


def test_out_of_a_failed_run_leaves_nothing(
    tmp_path: Path, vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exits.csv"
    bad = tmp_path / "bad.txt"
    bad.write_text((FIXTURES / "ftrace_new.txt").read_text())
    status = main(["replay", str(bad), "--strict", "--out", str(out), "--batch-size", "1",
                   "--server", vmxsim_address])  # fmt: skip
    _, err = capsys.readouterr()
    assert status == 2 and "bad.txt:" in err
    assert list(tmp_path.iterdir()) == [bad]


def test_out_names_its_format_by_suffix(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["replay", "mix:linux-boot:10", "--out", "exits.txt"])
    _, err = capsys.readouterr()
    assert status == 2 and err.count("\n") == 1 and ".csv, .csv.gz, .jsonl" in err


def test_out_parquet_needs_pyarrow_or_writes_the_columns(
    tmp_path: Path, vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exits.parquet"
    status = main(["replay", str(FIXTURES / "haxm.log"), "--out", str(out), "--json",
                   "--server", vmxsim_address])  # fmt: skip
    captured = capsys.readouterr()
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert status == 2 and captured.err.count("\n") == 1 and "'pyarrow'" in captured.err
        assert not out.exists()
        return
    assert status == 0
    table = pq.read_table(out).to_pylist()
    assert [row["recorded_vmread"] for row in table] == [33, 32, 33]


# --- progress ------------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_total_is_the_stored_size_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "trace.txt.gz"
    path.write_bytes(gzip.compress((FIXTURES / "ftrace_new.txt").read_bytes()))
    terminal = _Terminal()
    progress = Progress(out=terminal)
    with open_trace(path) as reader:
        progress.start(reader)
        assert progress.total == path.stat().st_size
        exits = sum(1 for _ in reader.rows())
        progress.update(exits)
    progress.done()
    with open_trace("mix:linux-boot:1234") as mix:
        progress.start(mix)
        assert progress.total == 1234
    progress.done()
    assert terminal.getvalue()  # the bar was drawn (and cleared)
    silent = Progress(out=io.StringIO())  # not a terminal
    silent.start(mix)
    silent.update(5)
    assert silent.total is None and silent.out.getvalue() == ""


def _stderr_on_a_terminal(args: list[str]) -> tuple[bytes, bytes]:
    """Run ``vmxsim`` with standard error on a pseudo-terminal: (stdout, what the terminal got)."""
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [VMXSIM, *args],
            stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL, timeout=60,
            check=True, env={**os.environ, "COLUMNS": "100"},
        )  # fmt: skip
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return done.stdout, b"".join(chunks)


def test_json_never_prints_progress_even_on_a_terminal(vmxsim_address: str) -> None:
    trace = str(FIXTURES / "ftrace_new.txt")
    out, terminal = _stderr_on_a_terminal(
        ["replay", "mix:linux-boot:20000", "--server", vmxsim_address, "--json"]
    )
    assert json.loads(out)["exits"] == 20000 and terminal == b""
    out, terminal = _stderr_on_a_terminal(["replay", trace, "--server", vmxsim_address])
    assert b"profile kvm" in out and b"B/" in terminal  # a byte-measured bar was drawn


def test_the_tapped_batches_are_only_those_in_flight(vmxsim_address: str) -> None:
    in_flight = []
    with Client(vmxsim_address) as client, open_trace("mix:linux-boot:20000") as reader:
        tap = ExitTap(reader)

        def on_progress(message: dict[str, Any]) -> None:
            in_flight.append(tap.in_flight)
            time.sleep(0.002)  # a consumer slower than the server
            tap.join(message)

        summary = client.replay(
            tap, batch_size=500, per_exit=True, on_progress=on_progress, max_unacked=2
        )
    assert summary["exits"] == 20000 and len(in_flight) == 40
    assert max(in_flight) <= 3  # the unacknowledged window, and the batch read after an ack
    assert tap.in_flight == 0
