"""Damaged input ends a read with one line naming the problem (never a short replay with exit 0);
the readers' limits are documented constants overridable by flag; binary trace.dat/perf.data
files are read through their tools (issue 14 items 3 and 12, issue 16 item 5)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from vmxsim_client.cli import main
from vmxsim_client.traces import LIMITS, MAX_SAMPLES, TraceParseError, open_trace
from vmxsim_client.traces.tools import BINARY_FORMATS

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
TRACE = (FIXTURES / "tracecmd_report.txt").read_bytes() * 3000  # 9000 exits

COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "xz": lzma.compress,
    "bzip2": bz2.compress,
    "zstd": lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data),
}


def _flip(data: bytes) -> bytes:
    """One bit flipped in the middle of the deflate data."""
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x10
    return bytes(damaged)


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda data: data[: len(data) * 2 // 3],
    "bit-flipped": _flip,
}


@pytest.mark.parametrize("kind", sorted(COMPRESS))
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_compressed_input_is_an_error_with_its_offset(
    kind: str, damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "trace.bin"
    path.write_bytes(DAMAGE[damage](COMPRESS[kind](TRACE)))
    with pytest.raises(TraceParseError, match=f"damaged {kind} input at compressed byte") as e:
        list(open_trace(path).rows())
    assert int(e.value.problem.split("byte ")[1].split(":")[0].replace(",", "")) <= len(
        path.read_bytes()
    )
    assert main(["replay", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and f"damaged {kind} input" in err


def test_concatenated_members_and_zero_padding_are_not_damage(tmp_path: Path) -> None:
    path = tmp_path / "two.gz"
    path.write_bytes(gzip.compress(TRACE[:50_000]) + gzip.compress(TRACE[50_000:]) + b"\0" * 8)
    assert len(list(open_trace(path).rows())) == 9000


def test_forced_format_on_random_bytes_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(os.urandom(50_000).replace(b"kvm_e", b"xxxxx"))
    assert main(["replay", "--format", "ftrace", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "the format was forced" in err


def test_perf_kvm_stat_sample_count_is_capped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = (FIXTURES / "perf_kvm_stat.txt").read_text()
    first = next(line for line in table.splitlines() if "%" in line and "MSR" in line)
    path = tmp_path / "huge.txt"
    path.write_text(table.replace(first, first.replace(first.split()[1], "1" + "0" * 18, 1)))
    with pytest.raises(TraceParseError, match=f"the limit is {MAX_SAMPLES:,}"):
        list(open_trace(path).rows())
    monkeypatch.setattr(LIMITS, "max_samples", LIMITS.max_samples)  # restored after the test
    assert main(["replay", str(path)]) == 2
    assert "(--max-samples)" in capsys.readouterr().err
    assert main(["replay", "--max-samples", "50", "mix:linux-boot:51"]) == 2
    assert "EXITS is over the limit of 50 (--max-samples)" in capsys.readouterr().err


def test_line_limit_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(LIMITS, "max_line_bytes", LIMITS.max_line_bytes)
    path = tmp_path / "t.txt"
    path.write_bytes(b"#" + b"x" * 5000 + b"\n" + TRACE[:2000])
    assert main(["replay", "--max-line-bytes", "1000", "--strict", str(path)]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("t.txt:1: line longer than the limit of 1,000 bytes (--max-line-bytes)")
    )


# --- trace.dat and perf.data -------------------------------------------------------------------


def _fake_tool(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("kind", BINARY_FORMATS, ids=lambda k: k.name)
def test_binary_trace_is_streamed_through_its_tool(
    kind: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in tool on PATH (the real ones need a recording this sandbox cannot make):
    it checks its arguments and prints the text rendering."""
    assert hasattr(kind, "magic") and hasattr(kind, "command")
    tools = tmp_path / "bin"
    tools.mkdir()
    argv = list(kind.command[1:])
    _fake_tool(tools, kind.command[0], (
        "import sys\n"
        f"assert sys.argv[1:-1] == {argv!r}, sys.argv\n"
        f"assert open(sys.argv[-1], 'rb').read(8) == {kind.magic[:8]!r}\n"
        f"sys.stdout.buffer.write(open({str(FIXTURES / 'tracecmd_report.txt')!r}, 'rb').read())\n"
    ))  # fmt: skip
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    path = tmp_path / "recording"
    path.write_bytes(kind.magic + b"\0" * 100)
    expected = list(open_trace(FIXTURES / "tracecmd_report.txt").rows())
    with open_trace(path) as reader:
        assert list(reader.rows()) == expected and reader.format_name == "ftrace"


@pytest.mark.parametrize("kind", BINARY_FORMATS, ids=lambda k: k.name)
def test_binary_trace_without_its_tool_names_the_debian_package(
    kind: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert hasattr(kind, "magic") and hasattr(kind, "package")
    monkeypatch.setenv("PATH", str(tmp_path))  # no tools here
    path = tmp_path / "recording"
    path.write_bytes(kind.magic + b"\0" * 100)
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"install the Debian package {kind.package}" in err


def test_a_failing_tool_is_an_error_with_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    _fake_tool(tools, "trace-cmd", "import sys\nprint('  CPU 0 is empty')\n"
               "sys.exit('trace-cmd: No such file or directory\\n  failed to read')\n")  # fmt: skip
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    path = tmp_path / "trace.dat"
    path.write_bytes(b"\x17\x08\x44tracing6\0")
    with pytest.raises(TraceParseError, match=r"exit status 1.*failed to read"):
        list(open_trace(path, format="ftrace").rows())


@pytest.mark.skipif(shutil.which("perf") is None, reason="perf is not installed (linux-perf)")
def test_a_real_perf_data_file_is_read_through_perf_script(tmp_path: Path) -> None:
    """A perf.data recorded here (software cpu-clock samples: this sandbox runs no KVM guest
    whose kvm_exit events perf could record) goes through the real ``perf script``: its text
    reaches the reader, which finds no kvm_exit in it."""
    data = tmp_path / "perf.data"
    done = subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-o", str(data), "--", sys.executable,
         "-c", "sum(range(3_000_000))"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    if done.returncode != 0 or not data.exists():
        pytest.skip(f"perf record is not permitted here: {done.stderr.decode()[-200:]}")
    with pytest.raises(TraceParseError, match=r"nothing in [1-9][0-9,]* lines is ftrace input"):
        list(open_trace(data, format="ftrace").rows())
    script = subprocess.run(["perf", "script", "-i", str(data)], capture_output=True, timeout=60)
    assert b"cpu-clock" in script.stdout
