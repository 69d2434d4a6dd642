"""The bulk ftrace reader gives exactly the rows of the reader before issue 15
(tests/reference_ftrace.py) on every fixture and on random traces of every era; the line
splitter numbers lines as ``open()`` does; each exit carries its vCPU and VM."""

from __future__ import annotations

import gzip
import io
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_ftrace import ReferenceFtraceReader

from vmxsim_client.traces import FtraceReader, TraceReader, open_trace
from vmxsim_client.traces.lines import TOO_LONG, LineSource

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces" / "kvm-ftrace"


def _text_lines(data: bytes) -> list[str]:
    """The lines as the reader before issue 15 got them: text mode, universal newlines."""
    return list(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace"))


def _outcome(reader: TraceReader) -> dict[str, Any]:
    try:
        rows = list(reader.rows())
    except Exception as exc:
        rows = [("raised", type(exc).__name__, str(exc))]  # type: ignore[list-item]
    return {
        "rows": rows,
        "lines": reader.lines,
        "exits": reader.exits,
        "skipped": reader.skipped,
        "errors": [str(e) for e in reader.errors],
        "unknown": dict(reader.unknown_reasons),
        "nested": getattr(reader, "nested_exits", 0),
    }


def _both(data: bytes) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The reference on text lines; the new reader on the same str lines and on the bytes."""
    reference = _outcome(ReferenceFtraceReader(_text_lines(data), source="t"))
    from_str = _outcome(FtraceReader(_text_lines(data), source="t"))
    from_bytes = _outcome(FtraceReader(LineSource([data]), source="t"))
    return reference, from_str, from_bytes


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def _traces() -> list[Path]:
    """The fixtures and shared real traces that hold ftrace-family events."""
    found = sorted(FIXTURES.iterdir())
    if SHARED.is_dir():
        found += sorted(SHARED.rglob("*.txt*"))
    return [p for p in found if p.suffix != ".md" and b"kvm_e" in _read(p)]


@pytest.mark.parametrize("path", _traces(), ids=lambda p: p.name)
def test_every_fixture_and_real_trace_gives_the_reference_rows(path: Path) -> None:
    reference, from_str, from_bytes = _both(_read(path))
    assert from_str == reference
    assert from_bytes == reference


# --- random traces of every era ----------------------------------------------------------------

COMMS = ["qemu-system-x86", "CPU 0/KVM", "qemu-kvm", "<...>", "a b-c", "kvm_exit", "x[1]"]
TIDS = st.sampled_from(["4211", "4212", "30501", "12"])
NAMES = st.sampled_from(
    ["HLT", "hlt", "EPT_VIOLATION", "apic_access", "EXIT_NPF", "BOGUS", "CPUID"]
)
HEX = st.sampled_from(["0", "1f", "ffffffff81000a2c", "10000000000000000", "zz", "0x1"])
RAW_CLOCKS = ["303280081900681", "9223372036854775809", "99999999999999999999", "5.5"]
STAMP = st.sampled_from(["4100.000020", "4100.0001", "12345", "1_0.5", "nan", "-1.5", "x.y"])


@st.composite
def _header(draw: Any) -> str:
    comm, tid = draw(st.sampled_from(COMMS)), draw(TIDS)
    cpu = draw(st.sampled_from(["[001]", "[3]", ""]))
    flags = draw(st.sampled_from(["", " d...", " d....", " .N.."]))
    sep = draw(st.sampled_from([" ", "  ", "\t"]))
    if draw(st.booleans()) and cpu:  # raw clock glued to the CPU field
        clock = draw(st.sampled_from(RAW_CLOCKS))
        return f"{comm}-{tid}{sep}{cpu}{clock}:"
    if draw(st.integers(0, 5)) == 0:  # perf script
        return f"{comm} {tid} {cpu} {draw(STAMP)}: kvm:"
    return f"{draw(st.sampled_from(['', ' ']))}{comm}-{tid}{sep}{cpu}{flags} {draw(STAMP)}:"


@st.composite
def _payload(draw: Any) -> str:
    name, rip = draw(NAMES), draw(HEX)
    era = draw(st.integers(0, 3))
    pad = draw(st.sampled_from([" ", "             "]))
    if era == 0:
        return f"kvm_exit:{pad}reason {name} rip 0x{rip}"
    if era == 1:
        return f"kvm_exit:{pad}reason {name} rip 0x{rip} info {draw(HEX)} {draw(HEX)}"
    vcpu = draw(st.sampled_from(["0", "1", "7", "x"]))
    return (
        f"kvm_exit:{pad}vcpu {vcpu} reason {name} rip 0x{rip} info1 0x{draw(HEX)} info2 "
        f"0x0000000000000000 intr_info 0x{draw(HEX)} error_code 0x00000000"
    )


@st.composite
def _line(draw: Any) -> str:
    kind = draw(st.integers(0, 9))
    if kind <= 4:
        return f"{draw(_header())} {draw(_payload())}"
    if kind <= 6:
        vcpu = draw(st.sampled_from(["0", "1", "2,", "x", ""]))
        rest = draw(st.sampled_from(["", ", rip 0x22da", " rip 0xffffffffb33f2e60"]))
        pad = draw(st.sampled_from([" ", "    "]))
        return f"{draw(_header())} kvm_entry:{pad}vcpu {vcpu}{rest}"
    if kind == 7:
        return draw(_header())  # a header wrapped away from its event
    if kind == 8:
        return draw(
            st.sampled_from(
                ["# tracer: nop", "", "cpus=2", "CPU 1 is empty", "kvm_exit: reason HLT rip 0x1",
                 f"{draw(_header())} kvm_nested_vmexit: rip 1", f"{draw(_header())} kvm_msr: x"]
            )
        )  # fmt: skip
    noise = st.characters(codec="utf-8", exclude_characters="\r\n")
    return draw(st.text(alphabet=noise, max_size=30))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_line(), max_size=40), repeat=st.integers(1, 3))
def test_random_traces_give_the_reference_rows(lines: list[str], repeat: int) -> None:
    data = ("\n".join(lines * repeat) + "\n").encode()  # repeats: remembered payloads reused
    reference, from_str, from_bytes = _both(data)
    if reference["rows"][:1] and reference["rows"][0][0] == "raised":
        return  # the old reader crashed on this input (an empty header before a known payload)
    for new in (from_str, from_bytes):
        # a QEMU "CPU N/KVM" name gives the vCPU where the old reader had no kvm_entry: only N=0
        # names are drawn, so every vCPU must agree
        assert new == reference


# --- lines -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b"b", b"\r", b"\n"]), max_size=60).map(b"".join),
    block=st.integers(1, 9),
    limit=st.integers(1, 6),
)
def test_lines_are_numbered_as_open_reads_text(data: bytes, block: int, limit: int) -> None:
    expected = [line.rstrip("\n").encode() for line in _text_lines(data)]
    blocks = [data[i : i + block] for i in range(0, len(data), block)]
    got = [line for piece in LineSource(blocks, limit).lists() for line in piece]
    assert got == [TOO_LONG if len(line) > limit else line for line in expected]


def test_a_long_line_in_the_first_lines_keeps_detection_and_line_numbers(tmp_path: Path) -> None:
    good = (FIXTURES / "ftrace_new.txt").read_bytes()
    path = tmp_path / "t.txt"
    path.write_bytes(b"#" + b"x" * 200_000 + b"\n" + good)
    with open_trace(path, max_line_bytes=65_536) as reader:
        rows = list(reader.rows())
        assert reader.format_name == "ftrace" and reader.lines == 1 + good.count(b"\n")
    assert str(reader.errors[0]).endswith("t.txt:1: line longer than the limit of 65,536 bytes "
                                          "(--max-line-bytes)")  # fmt: skip
    reference = ReferenceFtraceReader(_text_lines(good), source=str(path))
    assert [r[:9] for r in rows] == [r[:9] for r in reference.rows()]
    assert [e.line + 1 for e in reference.errors] == [e.line for e in reader.errors[1:]]


def test_a_line_without_end_is_never_held_in_memory() -> None:
    class Endless(io.RawIOBase):  # 64 MiB of one line, then a kvm_exit line
        sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            if self.sent >= 64 << 20:
                tail = b"\nqemu-1 [000] 1.000001: kvm_exit: reason HLT rip 0x1 info 0 0\n"
                n = min(len(buffer), len(tail)) if self.sent == 64 << 20 else 0
                buffer[:n] = tail[:n]
                self.sent += n
                return n
            n = min(len(buffer), (64 << 20) - self.sent)
            buffer[:n] = b"y" * n
            self.sent += n
            return n

    import tracemalloc

    tracemalloc.start()
    with open_trace(io.BufferedReader(Endless()), format="ftrace", max_line_bytes=4096) as r:
        rows = list(r.rows())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(rows) == 1 and r.lines == 2 and r.skipped == 1 and peak < 24 << 20  # 4 MiB blocks


# --- who made each exit ----------------------------------------------------------------------


def _identities(path: Path | io.BytesIO) -> tuple[Counter[tuple[int, int]], FtraceReader]:
    counts: Counter[tuple[int, int]] = Counter()
    reader = open_trace(path)
    assert isinstance(reader, FtraceReader)
    with reader:
        for batch in reader.batches(4096):
            counts.update(zip(batch.vm, batch.vcpu, strict=True))
    return counts, reader


def test_vcpu_and_vm_from_entries_names_and_tgids() -> None:
    text = (
        "CPU 1/KVM-501 [002] d.... 10.000001: kvm_exit: reason HLT rip 0x1 info 0 0\n"  # name
        "CPU 0/KVM-500 [001] d.... 10.000002: kvm_exit: reason HLT rip 0x1 info 0 0\n"
        "qemu-700 (690) [003] 10.000003: kvm_exit: reason HLT rip 0x1 info 0 0\n"  # tgid
        "qemu-702 [003] 10.000004: kvm_entry: vcpu 2, rip 0x1\n"
        "qemu-702 [003] 10.000005: kvm_exit: reason HLT rip 0x1 info 0 0\n"  # entry: vcpu 2
        "CPU 0/KVM-500 [001] d.... 10.000006: kvm_exit: vcpu 3 reason HLT rip 0x1 info1 0x0\n"
    )
    counts, reader = _identities(io.BytesIO(text.encode()))
    assert counts == {(500, 1): 1, (500, 0): 1, (690, 0): 1, (700, 2): 1, (497, 3): 1}
    assert reader.threads["501"].comm == "CPU 1/KVM"
    assert [t.tgid for t in reader.threads.values() if t.comm == "qemu" and t.tid == 700] == [690]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/traces is not here")
def test_hip24_trace_has_three_vcpu_threads_in_two_vms() -> None:
    name = "tracedat_25d1ee6b_host_3threads_110k_exits.report.txt.gz"
    path = SHARED / "hip24-masterarbeit" / name
    counts, reader = _identities(path)
    assert sum(counts.values()) == reader.exits == 110_653
    vms = Counter[int]()
    for (vm, _vcpu), n in counts.items():
        vms[vm] += n
    assert set(vms) == {483882, 453724} and vms[483882] == 94_927  # README: the RT guest's exits
    assert {vcpu for vm, vcpu in counts if vm == 453724} == {0, 1}
    assert {t.comm for t in reader.threads.values()} == {"qemu-system-x86", "CPU 0/KVM",
                                                         "CPU 1/KVM"}  # fmt: skip
