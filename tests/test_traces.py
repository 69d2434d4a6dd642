"""Trace readers on hand-written samples of each format (tests/fixtures/traces/README.md)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from vmxsim_client.traces import (
    FORMATS,
    FtraceReader,
    HaxmLogReader,
    JsonlReader,
    PerfKvmStatReader,
    TraceParseError,
    detect_format,
    open_trace,
)
from vmxsim_server.vmx.exceptions import InvalidArgument
from vmxsim_server.vmx.records import ExitBatch, ExitRecord

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
KERNEL = 0xFFFFFFFF81000000


def read(name: str, **options: object) -> tuple[list[ExitRecord], object]:
    reader = open_trace(FIXTURES / name, **options)  # type: ignore[arg-type]
    with reader:
        return list(reader), reader


def test_old_ftrace_lowercase_names_and_vcpu_from_kvm_entry() -> None:
    records, reader = read("ftrace_old.txt")
    assert records == [
        ExitRecord(30, rip=0xC01E4400, timestamp=512.000150, vcpu=1),
        ExitRecord(44, rip=0xC0115100, timestamp=512.000230, vcpu=1),
        ExitRecord(12, rip=0xC0102233, timestamp=512.000300, vcpu=0),  # thread 4212: no entry
    ]
    assert reader.skipped == 0 and reader.lines == 10  # type: ignore[attr-defined]


def test_mid_ftrace_info_is_qualification_and_intr_info() -> None:
    records, _ = read("ftrace_mid.txt")
    assert records == [
        ExitRecord(10, rip=0x1000, timestamp=4100.000020),
        ExitRecord(0, rip=0x1002, qualification=0x2000, intr_info=0x80000B0E, timestamp=4100.00004),
        ExitRecord(7, rip=0x1004, timestamp=4100.000050),  # PENDING_INTERRUPT = INTERRUPT_WINDOW
        ExitRecord(30, rip=0x1006, qualification=0x3F80000, timestamp=4100.000060),
    ]


def test_new_ftrace_all_fields_trailing_words_svm_names_and_bad_values() -> None:
    records, reader = read("ftrace_new.txt")
    assert records == [
        ExitRecord(28, rip=KERNEL + 0x10, qualification=4, timestamp=900.1, vcpu=0),
        ExitRecord(
            1,
            rip=KERNEL + 0x20304,
            info2=0x80000031,
            intr_info=0x800000EC,
            timestamp=900.100005,
            vcpu=1,
        ),
        ExitRecord(48, rip=KERNEL + 0xAABBCC, qualification=0x181, timestamp=900.100011, vcpu=1),
        ExitRecord(32, rip=KERNEL + 0x50, timestamp=900.10005, vcpu=0),
    ]
    assert isinstance(reader, FtraceReader)
    assert reader.unknown_reasons == {"EXIT_NPF": 1}  # SVM names are not VMX reasons
    assert reader.skipped == 2
    assert [(e.line, e.source) for e in reader.errors] == [
        (17, str(FIXTURES / "ftrace_new.txt")),
        (18, str(FIXTURES / "ftrace_new.txt")),
    ]
    assert "0xffffffff8100zz30" in reader.errors[0].problem
    assert "64-bit" in reader.errors[1].problem  # 17 hex digits


def test_trace_cmd_report_headers_and_per_thread_vcpus() -> None:
    records, reader = read("tracecmd_report.txt")
    assert [(r.reason, r.vcpu, r.qualification) for r in records] == [
        (56, 0, 0x380),
        (12, 1, 0),
        (49, 0, 0),
    ]
    assert records[0].timestamp == 72000.000004
    assert reader.skipped == 0  # type: ignore[attr-defined]


def test_raw_clock_timestamp_glued_to_cpu_field() -> None:
    records, _ = read("tracecmd_rawclock.txt")
    assert records == [ExitRecord(52, rip=KERNEL, timestamp=500000000001100 / 1e9)]
    records, _ = read("tracecmd_rawclock.txt", raw_clock_hz=1e6)
    assert records[0].timestamp == 500000000001100 / 1e6


def test_perf_script_wrapped_record_and_nested_events_not_yielded() -> None:
    records, reader = read("perf_script.txt")
    assert records == [
        ExitRecord(24, rip=0xFFFFF80000002000, timestamp=31000.000110),
        ExitRecord(31, rip=0xFFFFF80000002010, timestamp=31000.000120),
    ]
    assert isinstance(reader, FtraceReader) and reader.nested_exits == 2
    assert reader.skipped == 0


def test_mail_wrapped_ftrace_records_are_joined() -> None:
    records, reader = read("ftrace_wrapped.txt")
    assert records == [
        ExitRecord(30, rip=0x7C2A, qualification=0x600008, timestamp=70.0001),
        ExitRecord(1, rip=0x7C2C, intr_info=0x800000F6, timestamp=70.0002),
    ]
    assert reader.skipped == 0  # type: ignore[attr-defined]


def test_haxm_log_records_and_recorded_counters() -> None:
    records, reader = read("haxm.log")
    assert records == [
        ExitRecord(10, rip=0xFFFFF80001234560),
        ExitRecord(30, rip=0x7C00),
        ExitRecord(48, rip=0x7C04),
    ]
    assert isinstance(reader, HaxmLogReader)
    assert reader.recorded == [(33, 22, 5210), (32, 21, 8120), (33, 23, 40000)]
    assert reader.unknown_reasons == {"99": 1}


def test_haxm_log_incomplete_and_stray_lines_are_malformed() -> None:
    lines = ["0x10 <= HLT!\n", "delta: 1\n", "0x20 <= HLT!\n", "vmread_ctr: x\n", "junk\n"]
    reader = HaxmLogReader(lines, source="h.log")
    assert list(reader) == []
    assert [str(e) for e in reader.errors] == [
        "h.log:1: record ends before vmread_ctr, vmwrite_ctr",
        "h.log:4: not an unsigned 64-bit decimal number: 'x'",
        "h.log:5: expected one of vmread_ctr, vmwrite_ctr, delta: N",
        "h.log:3: record ends before vmread_ctr, vmwrite_ctr, delta",
    ]


def test_perf_kvm_stat_mix_is_reproduced_exactly_and_deterministically() -> None:
    records, reader = read("perf_kvm_stat.txt")
    assert isinstance(reader, PerfKvmStatReader)
    assert [(r.name, r.reason, r.samples) for r in reader.mix] == [
        ("MSR_WRITE", 32, 600),
        ("HLT", 12, 250),
        ("EXTERNAL_INTERRUPT", 1, 100),
        ("CPUID", 10, 10),
    ]
    assert reader.mix[1].avg_seconds == pytest.approx(0.004)
    assert reader.unknown_reasons == {"UNKNOWN": 40}
    assert reader.total_samples == 1000 and reader.tables_seen == 2
    counts = {n: sum(r.reason == n for r in records) for n in (32, 12, 1, 10)}
    assert counts == {32: 600, 12: 250, 1: 100, 10: 10}
    again, _ = read("perf_kvm_stat.txt")
    other_seed, _ = read("perf_kvm_stat.txt", seed=1)
    assert again == records and other_seed != records
    assert sorted(r.reason for r in other_seed) == sorted(r.reason for r in records)


def test_perf_kvm_stat_scaled_second_table_and_old_layout() -> None:
    records, _ = read("perf_kvm_stat.txt", exits=96)
    assert len(records) == 96 and sum(r.reason == 32 for r in records) == 60
    records, _ = read("perf_kvm_stat.txt", table=1)
    assert [r.reason for r in records] == [12, 12, 12]
    records, reader = read("perf_kvm_stat_old.txt")
    assert len(records) == 100 and sum(r.reason == 7 for r in records) == 20
    assert [r.avg_seconds for r in reader.mix] == [30e-6, 5e-6, 90e-6]  # type: ignore[attr-defined]


def test_perf_kvm_stat_bad_row_is_malformed() -> None:
    lines = ["VM-EXIT Samples Samples% Time% Avg time\n", "HLT 12x 50.00% 1.00% 1.00us\n"]
    reader = PerfKvmStatReader(lines, source="p")
    assert list(reader) == [] and reader.skipped == 1
    with pytest.raises(TraceParseError, match=r"^p:2: VM-EXIT row HLT"):
        list(PerfKvmStatReader(lines, source="p", strict=True))


def test_jsonl_reader_values_hex_strings_and_unknowns() -> None:
    records, reader = read("sample.jsonl")
    assert records == [
        ExitRecord(10, rip=4096, instruction_len=2, timestamp=1.5),
        ExitRecord(30, rip=0x7C00, qualification=0x3F80000, vcpu=1),
        ExitRecord(32, rip=KERNEL),
    ]
    assert reader.unknown_reasons == {"NOT_A_REASON": 1}  # type: ignore[attr-defined]
    assert [e.line for e in reader.errors] == [6]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "line",
    [
        '{"vmxsim_trace": 2}',
        "[1, 2]",
        '{"rip": 1}',
        '{"reason": "HLT", "rip": "0x1_0"}',
        '{"reason": "HLT", "rip": 18446744073709551616}',
        '{"reason": "HLT", "vcpu": true}',
        '{"reason": "HLT", "ts": -1}',
        '{"reason": 4294967306}',
        "{not json",
    ],
)
def test_jsonl_malformed_lines(line: str) -> None:
    reader = JsonlReader([line + "\n"], source="j")
    assert list(reader) == [] and reader.skipped == 1
    with pytest.raises(TraceParseError, match=r"^j:1: "):
        list(JsonlReader([line + "\n"], source="j", strict=True))


def test_strict_raises_the_first_malformed_line_as_invalid_argument() -> None:
    with pytest.raises(TraceParseError) as info:
        read("ftrace_new.txt", strict=True)
    assert isinstance(info.value, InvalidArgument)
    assert str(info.value) == f"{FIXTURES / 'ftrace_new.txt'}:17: {info.value.problem}"


def test_errors_keep_only_the_first_twenty() -> None:
    lines = [" x-1 [000] 1.0: kvm_exit: reason HLT rip 0xzz info 0 0\n"] * 50
    reader = FtraceReader(lines)
    assert list(reader) == [] and reader.skipped == 50 and len(reader.errors) == 20


def test_truncated_kvm_exit_line_is_malformed_but_headers_are_not() -> None:
    lines = ["# tracer: nop\n", "cpus=2\n", "CPU 1 is empty\n", "\n", " a-1 [000] 1.0: kvm_exit\n"]
    reader = FtraceReader(lines, source="t")
    assert list(reader) == [] and reader.skipped == 1 and reader.errors[0].line == 5


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ftrace_old.txt", "ftrace"),
        ("ftrace_wrapped.txt", "ftrace"),
        ("perf_script.txt", "ftrace"),
        ("tracecmd_rawclock.txt", "ftrace"),
        ("perf_kvm_stat_old.txt", "perf-kvm-stat"),
        ("haxm.log", "haxm-log"),
        ("sample.jsonl", "jsonl"),
    ],
)
def test_detection_from_content(name: str, expected: str) -> None:
    assert detect_format((FIXTURES / name).read_text().splitlines(True)) == expected
    with open_trace(FIXTURES / name) as reader:
        assert reader.format_name == expected
    assert expected in FORMATS


def test_undetectable_and_unknown_format_raise_trace_parse_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some words\n")
    with pytest.raises(TraceParseError, match="cannot tell the trace format"):
        open_trace(path)
    with pytest.raises(TraceParseError, match="unknown format 'pcap'"):
        open_trace(path, format="pcap")


def test_forced_format_skips_detection(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text('{"reason": "HLT"}\n# a comment\n' + (FIXTURES / "ftrace_mid.txt").read_text())
    with open_trace(path, format="ftrace") as reader:
        assert len(list(reader)) == 4 and reader.skipped == 0  # the jsonl line: passed over


@pytest.mark.parametrize("name", ["ftrace", "jsonl", "haxm-log", "perf-kvm-stat"])
def test_forced_format_that_matches_nothing_is_an_error(name: str, tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(TraceParseError, match="the format was forced") as caught:
        list(open_trace(path, format=name))
    lines = io.TextIOWrapper(io.BytesIO(path.read_bytes()), encoding="latin-1").readlines()
    assert caught.value.line == len(lines) == 81  # \n and \r end lines, as open() reads text


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "xz": lzma.compress,
    "bzip2": bz2.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_input_detected_by_magic_not_suffix(kind: str, tmp_path: Path) -> None:
    raw = (FIXTURES / "tracecmd_report.txt").read_bytes()
    path = tmp_path / "trace.bin"  # no telling suffix
    path.write_bytes(COMPRESSORS[kind](raw))
    records, reader = read_path(path)
    assert records == read("tracecmd_report.txt")[0]
    assert reader.bytes_read == path.stat().st_size  # type: ignore[attr-defined]


def read_path(path: Path) -> tuple[list[ExitRecord], object]:
    with open_trace(path) as reader:
        return list(reader), reader


def test_truncated_compressed_input_is_an_error_naming_the_offset(tmp_path: Path) -> None:
    data = gzip.compress((FIXTURES / "tracecmd_report.txt").read_bytes() * 50)
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    for strict in (False, True):
        with pytest.raises(TraceParseError, match="damaged gzip input at compressed byte") as e:
            list(open_trace(path, format="ftrace", strict=strict))
        assert f"{len(data) // 2:,}" in e.value.problem and "truncated" in e.value.problem


def test_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    data = gzip.compress((FIXTURES / "haxm.log").read_bytes())
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(data)))
    reader = open_trace("-")
    assert reader.source == "<stdin>" and reader.format_name == "haxm-log"
    assert len(list(reader)) == 3


def test_binary_file_object_and_progress_counters() -> None:
    raw = (FIXTURES / "tracecmd_report.txt").read_bytes()
    reader = open_trace(io.BytesIO(raw))
    records = iter(reader)
    first = next(records)  # counters move a block of lines at a time
    assert first.reason == 56 and reader.lines == 10 and reader.exits == 3
    assert len(list(records)) == 2 and reader.lines == 10 and reader.bytes_read == len(raw)


def test_batches_are_packed_columns_of_the_same_records() -> None:
    records, _ = read("ftrace_mid.txt")
    with open_trace(FIXTURES / "ftrace_mid.txt") as reader:
        batches = list(reader.batches(3))
    assert [len(b) for b in batches] == [3, 1] and isinstance(batches[0], ExitBatch)
    assert list(batches[0].reason) == [10, 0, 7]
    assert [b.sequence for b in batches] == [1, 2]
    columns = [
        (r.reason, r.rip, r.qualification, r.intr_info) for b in batches for r in b.records()
    ]
    assert columns == [(r.reason, r.rip, r.qualification, r.intr_info) for r in records]


def test_a_repeated_payload_still_reads_each_lines_own_header(tmp_path: Path) -> None:
    """Parsed payloads are remembered by their text; timestamps and threads stay per line, and
    a line whose header is not the plain form still takes the full path."""
    payload = "kvm_exit: reason CPUID rip 0xffffffff81000010 info 0 0\n"
    path = tmp_path / "repeat.txt"
    path.write_text(
        " qemu-system-x86-100 [001] 10.000001: kvm_entry: vcpu 0\n"
        f" qemu-system-x86-100 [001] 10.000002: {payload}"
        " qemu-system-x86-200 [000] 10.000003: kvm_entry: vcpu 1\n"
        f" qemu-system-x86-200 [000] 10.000004: {payload}"
        f" qemu-system-x86-100 [001] 10.000005: {payload}"
        f" qemu-system-x86-100 [001] -1.5: {payload}"
    )
    with open_trace(path) as reader:
        records = list(reader)
        skipped = reader.skipped
    assert [(r.reason, r.rip, r.timestamp, r.vcpu) for r in records] == [
        (10, 0xFFFFFFFF81000010, 10.000002, 0),
        (10, 0xFFFFFFFF81000010, 10.000004, 1),
        (10, 0xFFFFFFFF81000010, 10.000005, 0),
    ]
    assert skipped == 1  # the negative timestamp is malformed, not a remembered payload
