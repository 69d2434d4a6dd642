"""``vmxsim convert IN OUT``: end to end through the CLI's argument handling."""

from __future__ import annotations

import gzip
import io
import sys
import types
from pathlib import Path

import pytest

from vmxsim_client import cli
from vmxsim_client.traces import open_trace

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


def convert(*argv: str) -> int:
    """Run ``vmxsim convert`` through the CLI's entry point."""
    return cli.main(["convert", *argv])


def test_convert_ftrace_to_jsonl_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl"
    assert convert(str(FIXTURES / "ftrace_new.txt"), str(out)) == 0
    with open_trace(FIXTURES / "ftrace_new.txt") as original, open_trace(out) as converted:
        assert converted.format_name == "jsonl"
        assert list(converted) == list(original)
    first = out.read_text().splitlines()[0]
    assert first.startswith('{"vmxsim_trace": 1') and '"format": "ftrace"' in first
    err = capsys.readouterr().err
    assert "converted 4 exits (ftrace)" in err and "2 malformed skipped" in err
    assert "EXIT_NPF x1" in err


def test_convert_perf_kvm_stat_with_seed_and_exits_to_gzip(tmp_path: Path) -> None:
    out = tmp_path / "mix.jsonl.gz"
    argv = [str(FIXTURES / "perf_kvm_stat.txt"), str(out), "--seed", "7", "--exits", "50"]
    assert convert(*argv) == 0
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    with open_trace(out) as reader:
        assert len(list(reader)) == 50


def test_convert_stdin_to_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (FIXTURES / "haxm.log").read_bytes()
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(gzip.compress(data))))
    assert convert("-", "-", "--format", "haxm-log") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and '"reason": "CPUID"' in lines[1]


def test_convert_strict_fails_without_leaving_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl"
    assert convert(str(FIXTURES / "ftrace_new.txt"), str(out), "--strict") == 2
    assert "ftrace_new.txt:17: " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.txt", "-"], "cannot read missing.txt"),
        ([str(FIXTURES / "README.md"), "-"], "cannot tell the trace format"),
        ([str(FIXTURES / "haxm.log"), "-", "--seed", "1"], "apply to perf-kvm-stat"),
        ([str(FIXTURES / "haxm.log"), "-", "--format", "ftrace", "--exits", "3"], "perf-kvm-stat"),
        ([str(FIXTURES / "haxm.log"), "/nonexistent-dir/out.jsonl"], "cannot write"),
    ],
)
def test_convert_bad_input_is_a_one_line_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert convert(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
