"""Property tests: on any input a reader raises nothing in skip mode and only TraceParseError
in strict mode; the JSONL writer and reader round-trip every record."""

from __future__ import annotations

import io
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmxsim_client.traces import READERS, JsonlReader, TraceParseError, open_trace, write_jsonl
from vmxsim_server.vmx.exit_reasons import EXIT_REASONS
from vmxsim_server.vmx.records import ExitRecord

WORDS = [
    "kvm_exit:", "kvm:kvm_exit:", "kvm_entry:", "kvm_nested_vmexit:", "reason", "rip", "info",
    "info1", "info2", "intr_info", "error_code", "vcpu", "0x", "0xffffffffffffffff", "-1",
    "0x10000000000000000", "HLT", "EXIT_NPF", "[000]", "[001]123:", "1.5:", "d....", "<=", "!",
    "delta:", "vmread_ctr:", "vmwrite_ctr:", "VM-EXIT", "Samples", "50.00%", "1.0us", "Total",
    "Samples:5,", '{"reason":', '"HLT"}', '{"vmxsim_trace": 1}', "nan", "1e999", "\t", "\n",
]  # fmt: skip
TRACE_TEXT = st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), max_size=40).map(
    " ".join
)
LINES = st.lists(TRACE_TEXT.map(lambda t: t + "\n"), max_size=12)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(lines=LINES, name=st.sampled_from(sorted(READERS)))
def test_skip_mode_never_raises(lines: list[str], name: str) -> None:
    reader = READERS[name](lines, source="fuzz")
    records = list(reader)
    assert all(isinstance(r, ExitRecord) for r in records)
    assert reader.exits == len(records) and reader.skipped >= len(reader.errors)


@SETTINGS
@given(lines=LINES, name=st.sampled_from(sorted(READERS)))
def test_strict_mode_raises_only_trace_parse_error(lines: list[str], name: str) -> None:
    try:
        list(READERS[name](lines, source="fuzz", strict=True))
    except TraceParseError as exc:
        assert str(exc).startswith(f"fuzz:{exc.line}: ")


@SETTINGS
@given(data=st.binary(max_size=300), name=st.sampled_from([None, *sorted(READERS)]))
def test_random_bytes_through_open_trace(data: bytes, name: str | None) -> None:
    try:
        reader = open_trace(io.BytesIO(data), format=name)
    except TraceParseError:
        return  # undetectable or unreadable: the only error open_trace may raise here
    with reader:
        try:
            list(reader)
        except TraceParseError as exc:  # a forced format that matched nothing, or damaged input
            assert "format was forced" in exc.problem or "damaged" in exc.problem, exc
            assert "damaged" in exc.problem or name is not None
            return
    try:
        with open_trace(io.BytesIO(data), format=reader.format_name, strict=True) as strict:
            list(strict)
    except TraceParseError:
        pass


U64 = st.integers(0, (1 << 64) - 1)
RECORDS = st.builds(
    ExitRecord,
    reason=st.sampled_from([r.number for r in EXIT_REASONS]),
    rip=U64,
    qualification=U64,
    info2=U64,
    intr_info=U64,
    error_code=U64,
    guest_physical_address=U64,
    instruction_len=st.integers(0, 15),
    timestamp=st.one_of(st.none(), st.floats(0, 1e12, allow_nan=False)),
    vcpu=st.integers(0, 1024),
)


@SETTINGS
@given(records=st.lists(RECORDS, max_size=20))
def test_jsonl_round_trip(records: list[ExitRecord]) -> None:
    out = io.StringIO()
    assert write_jsonl(records, out, header={"source": "test"}) == len(records)
    reader = JsonlReader(io.StringIO(out.getvalue()), strict=True)
    back = list(reader)
    assert back == records and reader.skipped == 0
    assert all(math.isfinite(r.timestamp) for r in back if r.timestamp is not None)
