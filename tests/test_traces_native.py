"""The C bulk path of the ftrace reader (traces/_scan.c) and its Python twin (traces/scan.py)
give the same output: on random traces of every era (the strategies of test_traces_fast.py,
whose reference test pins both to the reader before issue 15), on the timestamps that take the
C fast path, and one scan call at a time (stopping offset, counts, columns)."""

from __future__ import annotations

import os
import shutil
import sysconfig
from array import array
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_traces_fast import _line, _outcome

from vmxsim_client.traces import FtraceReader, ftrace, scan
from vmxsim_client.traces.lines import LineSource

needs_native = pytest.mark.skipif(not scan.NATIVE, reason="the C scanner is not built here")


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


def test_the_extension_is_built_where_a_compiler_is() -> None:
    """CI has gcc: the reader there must run the C path (else these tests would skip)."""
    if _compiler() is None:
        pytest.skip("no C compiler: the Python twin is what runs")
    if os.environ.get("VMXSIM_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("VMXSIM_PURE_PYTHON asks for the Python twin")
    assert scan.NATIVE
    assert scan.scan is not scan.scan_chunk


def _read_with(data: bytes, native: bool, monkeypatch: pytest.MonkeyPatch, limit: int) -> Any:
    with monkeypatch.context() as patch:
        if not native:
            patch.setattr(ftrace, "scan", scan.scan_chunk)
            patch.setattr(ftrace, "new_memo", lambda: None)
        reader = FtraceReader(
            LineSource([data[k : k + 97] for k in range(0, len(data), 97)], limit)
        )
        outcome = _outcome(reader)
        outcome["entries"] = reader.entries
        outcome["threads"] = {k: (t.comm, t.tid, t.tgid, t.vcpu) for k, t in reader.threads.items()}
        return outcome


@needs_native
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(lines=st.lists(_line(), max_size=40), repeat=st.integers(1, 3),
       limit=st.sampled_from([60, 1 << 20]))  # fmt: skip
def test_random_traces_read_the_same_in_c_and_in_python(
    lines: list[str], repeat: int, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = ("\n".join(lines * repeat) + "\n").encode("utf-8", "surrogatepass")
    assert _read_with(data, True, monkeypatch, limit) == _read_with(data, False, monkeypatch, limit)


_STAMPS = st.one_of(
    st.floats(0, 1e7).map(lambda v: f"{v:.6f}"),
    st.floats(0, 1e5).map(lambda v: f"{v:.9f}"),
    st.from_regex(r"\A[0-9]{1,20}\.[0-9]{0,24}\Z"),
    st.from_regex(r"\A0*[0-9]{0,3}\.0*[0-9]{1,3}\Z"),
    st.sampled_from(["1e5", "1_0.5", ".5", "5.", ".", "inf", "nan", "-0.0", "0.0", "1.5e-3"]),
)


@needs_native
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stamps=st.lists(_STAMPS, min_size=1, max_size=8))
def test_timestamps_parse_as_float_does(stamps: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each exit's timestamp is float() of its token (the C path divides N by 10**k exactly)."""
    body = "kvm_exit: reason HLT rip 0xffffffff81000a2c info 0 0"
    lines = [f"qemu-4211  [001] d... {s}: {body}" for s in ["1.0", *stamps]]
    data = ("\n".join(lines * 2) + "\n").encode()
    native = _read_with(data, True, monkeypatch, 1 << 20)
    assert native == _read_with(data, False, monkeypatch, 1 << 20)
    expected = []
    for text in ["1.0", *stamps] * 2:
        try:
            value = float(text)
        except ValueError:
            continue
        if 0.0 <= value < float("inf") and "." in text:
            expected.append(value)
    assert [row[-2] for row in native["rows"]] == expected


@needs_native
def test_one_scan_call_stops_where_its_twin_stops() -> None:
    """Per call: the same stopping offset, counts and columns, for each line of a mixed chunk."""
    fixture = Path(__file__).parent / "fixtures" / "traces"
    texts = [p.read_bytes() for p in sorted(fixture.glob("*")) if p.suffix in (".txt", ".trace")]
    assert texts, "no ftrace fixtures"
    for data in texts:
        reader = FtraceReader(LineSource([data]))
        list(reader.batches(4096))  # fills the payload and prefix tables
        tables = (reader._payloads, reader._remember, reader._reasons, *reader._tables)
        chunk = data.replace(b"\r\n", b"\n").rstrip(b"\n")
        pos = 0
        memo = scan.new_memo()
        while pos <= len(chunk):
            got = []
            for fn, state in ((scan.scan, memo), (scan.scan_chunk, None)):
                records = bytearray()
                stamps = array("d")
                who = bytearray()
                end = len(chunk)
                result = fn(chunk, pos, end, 1 << 20, state, *tables, 1e9, records, stamps, who)
                got.append((result, records, stamps.tobytes(), who))
            assert got[0] == got[1]
            pos = got[0][0][0]
            end = chunk.find(b"\n", pos)
            pos = len(chunk) + 1 if end < 0 else end + 1  # step over the line it stopped at


_WORDS = st.sampled_from(
    ["vcpu", "reason", "rip", "info", "info1", "info2", "intr_info", "error_code", "HLT", "hlt",
     "EPT_VIOLATION", "EXIT_NPF", "BOGUS", "0x1f", "0X1F", "1f", "0x", "0x0x1", "0b1", "zz",
     "ffffffffffffffff", "10000000000000000", "00000000000000000001", "+1", "1_0", "\u0663",
     "0", "7", "7,", "7,,", ",", "-1", "1234567890123456789", "kvm_exit", "kvm_entry", "é"]
)  # fmt: skip
_ERAS = [
    ["reason", "HLT", "rip", "0x1f"],
    ["vcpu", "3", "reason", "EPT_VIOLATION", "rip", "0x10", "info1", "0x5", "info2", "0x0"],
    ["reason", "hlt", "rip", "1f", "info", "0", "800000fd"],
]
_GAPS = st.sampled_from([" ", " ", "  ", "\t", "\x0b", "\x1c", "\x85"])


@st.composite
def _payload_text(draw: Any) -> bytes:
    words = draw(st.lists(_WORDS, max_size=14))
    if draw(st.booleans()):  # the shape of a real payload, then noise
        era = draw(st.sampled_from(_ERAS))
        words = era + words
    text = "".join(draw(_GAPS) + w for w in words) + draw(st.sampled_from(["", " ", "\n"]))
    return text.encode("utf-8")


@needs_native
@settings(max_examples=2000, deadline=None)
@given(payload=_payload_text())
def test_the_c_payload_parser_agrees_with_the_python_one(payload: bytes) -> None:
    """A payload the C scan parses itself gets exactly what FtraceReader._remember gives it;
    one it leaves to Python is one with bytes beyond printable ASCII or a vCPU of 19+ digits."""
    from vmxsim_client.traces._scan import parse_payload  # type: ignore[import-not-found]

    reader = FtraceReader(LineSource([b""]))
    reader._reasons.update({"HLT": 12, "hlt": 12, "EPT_VIOLATION": 48, "EXIT_NPF": -1})
    python = reader._remember(payload)
    native = parse_payload(payload, reader._reasons)
    if native is not None:
        assert native == python
    elif python is not None:
        odd = any((b < 0x20 and b not in b"\t\n\x0b\x0c\r") or b >= 0x7F for b in payload)
        assert odd or b"1234567890123456789" in payload, (payload, python)


@needs_native
def test_the_c_payload_parser_takes_every_era() -> None:
    from vmxsim_client.traces._scan import parse_payload

    reader = FtraceReader(LineSource([b""]))
    reader._reasons.update({"HLT": 12, "apic_access": 44, "EPT_VIOLATION": 48})
    for payload in (
        b" reason apic_access rip 0xc011518c",
        b" reason HLT rip 0x22da info 0 800000fd",
        b" vcpu 1 reason EPT_VIOLATION rip 0xffffffff81d18dba info1 0x0000000000000181 info2 "
        b"0x0000000000000000 intr_info 0x00000000 error_code 0x00000000",
        b" vcpu 0, reason HLT [guest-mode] rip 0x10 info1 0x1 info2 0x2 extra 0x3",
    ):
        native = parse_payload(payload, reader._reasons)
        assert native is not None and native == reader._remember(payload), payload


@pytest.mark.parametrize("native", [True, False])
def test_a_thread_that_changes_vcpu_gets_the_new_vcpu(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kvm_entry that moves a thread to another vCPU stops the bulk scan, and the exits after
    it (without ``vcpu N`` in their payload: they take the thread's current vCPU) get the new
    vCPU, in C and in Python: nothing the scan remembered of the thread goes stale."""
    if native and not scan.NATIVE:
        pytest.skip("the C scanner is not built here")
    head = "qemu-system-x86-4211  [001] d... {:.6f}: "
    lines = []
    for k, vcpu in enumerate([0, 0, 1, 1, 0, 2, 2]):
        lines.append(head.format(k + 0.1) + f"kvm_entry: vcpu {vcpu}")
        lines.append(head.format(k + 0.2) + "kvm_exit: reason HLT rip 0xffffffff81000a2c info 0 0")
    data = ("\n".join(lines * 40) + "\n").encode()
    with monkeypatch.context() as patch:
        if not native:
            patch.setattr(ftrace, "scan", scan.scan_chunk)
            patch.setattr(ftrace, "new_memo", lambda: None)
        reader = FtraceReader(LineSource([data]))
        vcpus = [v for batch in reader.batches(4096) for v in batch.vcpu]
    assert vcpus == [0, 0, 1, 1, 0, 2, 2] * 40


_U64 = st.integers(0, 2**64 - 1)


@needs_native
@settings(max_examples=500, deadline=None)
@given(
    rows=st.lists(st.tuples(*[st.one_of(st.just(0), _U64)] * 8), max_size=40),
    spare=st.integers(0, 3),
    zero=st.sets(st.integers(1, 5)),
)
def test_a_batchs_columns_are_the_same_in_c_and_in_python(
    rows: list[tuple[int, ...]], spare: int, zero: set[int]
) -> None:
    """``_scan.columns`` (the transposing of a batch's packed records, without the lock) gives
    exactly ``columns_of``'s columns, None for the same all-zero ones, reading only the first
    ``count`` records; both refuse a count beyond the buffers."""
    from vmxsim_client.traces._scan import columns  # type: ignore[import-not-found]

    rows = [tuple(0 if k in zero else v for k, v in enumerate(row)) for row in rows]
    records = bytearray(array("Q", [v for row in rows for v in row[:6]]).tobytes())
    who = bytearray(array("Q", [v for row in rows for v in row[6:]]).tobytes())
    count = max(0, len(rows) - spare)
    native, python = columns(records, who, count), scan.columns_of(records, who, count)
    assert native == python
    assert python[0] == array("Q", [row[0] for row in rows[:count]]).tobytes()
    for k in range(1, 6):
        if any(row[k] for row in rows[:count]):
            assert python[k] == array("Q", [row[k] for row in rows[:count]]).tobytes()
        else:
            assert python[k] is None
    assert python[7] == array("Q", [row[7] for row in rows[:count]]).tobytes()
    for make in (columns, scan.columns_of):
        with pytest.raises(ValueError, match="fewer records"):
            make(records, who, len(rows) + 1)
