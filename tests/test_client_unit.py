"""The client's pure parts: instruction validation, result shapes, packed columns, error types,
script parsing and comparison ratios (no server needed)."""

from __future__ import annotations

import io
from typing import Any

import grpc
import pytest

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim_client.cli.cmd_exec import parse_script
from vmxsim_client.errors import CliError
from vmxsim_client.instructions import Instruction, InstructionResult
from vmxsim_client.reports.comparison import ratios
from vmxsim_client.rpc_errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    VmxsimRpcError,
    from_rpc_error,
)
from vmxsim_client.traces import open_trace
from vmxsim_client.wire import StatsAccumulator, exit_batches, mode_from_pb, mode_to_pb
from vmxsim_server.translate import exit_batch
from vmxsim_server.vmx.records import ExitBatch, ExitRecord

# --- instructions ----------------------------------------------------------------------------


def test_instruction_normalises_op_names_and_numbers() -> None:
    i = Instruction("vmwrite", ("guest_rip", "0x1000"), line=3)
    assert (i.op, i.operands, i.line) == ("VMWRITE", ("GUEST_RIP", 0x1000), 3)
    message = i.to_pb()
    assert message.vmwrite.field.name == "GUEST_RIP" and message.vmwrite.value == 0x1000
    assert message.line == 3


def test_instruction_sends_a_numeric_field_as_an_encoding() -> None:
    assert Instruction("VMREAD", ("0x681e",)).to_pb().vmread.field.encoding == 0x681E
    # an encoding no field has is the server's (architectural) business, not a client error
    assert Instruction("VMREAD", (0xFFFF_FFFF_0000,)).to_pb().vmread.field.encoding


def test_exit_resolves_the_reason_by_name_or_synonym() -> None:
    assert Instruction("EXIT", ("cpuid",)).operands == (10,)
    assert Instruction("exit", ("INTERRUPT_WINDOW", "7")).to_pb().exit.record.reason == 7
    record = Instruction("EXIT", (48, 0x181)).to_pb().exit.record
    assert (record.reason, record.qualification) == (48, 0x181)


@pytest.mark.parametrize(
    ("op", "operands", "problem"),
    [
        ("VMFOO", (), "unknown instruction"),
        ("VMXON", (), "VMXON takes 1 operands: VMXON ADDRESS"),
        ("VMXOFF", ("1",), "takes 0 operands"),
        ("VMREAD", ("NO_SUCH_FIELD",), "not a known field name or number"),
        ("VMWRITE", ("GUEST_RIP", str(1 << 64)), "does not fit 64 unsigned bits"),
        ("VMXON", ("-1",), "does not fit"),
        ("MEM32", ("0x1000", "0x1_0000_0000"), "does not fit 32 unsigned bits"),
        ("EXIT", ("NOT_A_REASON",), "not a known reason name or number"),
        ("CR0", ("banana",), "not a known number"),
        ("CR4", (True,), "is not a number"),
    ],
)
def test_instruction_rejects_bad_operands(op: str, operands: tuple[str, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Instruction(op, operands)


def test_result_json_has_keys_only_where_they_apply() -> None:
    read = InstructionResult("VMREAD", "VMsucceed", line=3, value=4096)
    assert read.to_json() == {"line": 3, "op": "VMREAD", "result": "VMsucceed", "value": 4096}
    failed = InstructionResult("VMWRITE", "VMfailValid", line=4, error=13)
    assert failed.to_json() == {"line": 4, "op": "VMWRITE", "result": "VMfailValid", "error": 13}
    fault = InstructionResult("VMXOFF", "fault", line=5, fault="#UD")
    assert fault.to_json() == {"line": 5, "op": "VMXOFF", "result": "fault", "fault": "#UD"}
    entry = InstructionResult("VMLAUNCH", "entry-failed", line=6, exit_reason=2147483681)
    assert entry.to_json()["exit_reason"] == 2147483681 and not entry.ok


def test_result_from_wire() -> None:
    message = pb.InstructionResult(line=2, op="VMREAD", result=pb.OUTCOME_RESULT_VMSUCCEED, value=0)
    result = InstructionResult.from_pb(message)
    assert (result.result, result.value, result.exit_reason, result.ok) == (
        "VMsucceed", 0, None, True,
    )  # fmt: skip


# --- script parsing --------------------------------------------------------------------------


def test_script_parses_comments_blank_lines_and_commas() -> None:
    script = "# set-up\n\nrevid 0x1000\nVMXON 4096   # enter\nvmwrite guest_rip, 0x10\n"
    parsed = parse_script(script, "s.vmx")
    assert [(i.line, i.op) for i, _ in parsed] == [(3, "REVID"), (4, "VMXON"), (5, "VMWRITE")]
    assert parsed[2][1] == "VMWRITE guest_rip 0x10"


def test_script_error_names_file_and_line() -> None:
    with pytest.raises(CliError, match=r"^s\.vmx:3: VMWRITE takes 2 operands"):
        parse_script("VMXON 0x1000\n\nVMWRITE GUEST_RIP\n", "s.vmx")
    with pytest.raises(CliError, match=r"^s\.vmx:1: value: .* does not fit 64 unsigned bits"):
        parse_script("CR0 0x10000000000000000\n", "s.vmx")


# --- packed columns --------------------------------------------------------------------------

RECORDS = [
    ExitRecord(10, rip=0x1000, instruction_len=2),
    ExitRecord(48, rip=0x2000, qualification=0x181, guest_physical_address=0x5000),
    ExitRecord(12, rip=0x3000, instruction_len=1),
]


def test_records_become_batches_of_packed_columns() -> None:
    batches = list(exit_batches(RECORDS, size=2))
    assert [b.sequence for b in batches] == [1, 2]
    assert list(batches[0].reason) == [10, 48] and list(batches[1].reason) == [12]
    assert list(batches[0].qualification) == [0, 0x181]
    # all-zero columns and absent timestamps travel as empty columns
    assert not batches[0].info2 and not batches[0].timestamp and not batches[1].qualification


def test_timestamps_are_sent_when_any_exit_has_one() -> None:
    records = [ExitRecord(10, timestamp=1.5), ExitRecord(10)]
    (batch,) = exit_batches(records, size=10)
    assert list(batch.timestamp) == [1.5, 0.0]


def test_trace_readers_and_column_batches_are_sources_too() -> None:
    text = '{"reason": "CPUID", "rip": 4096, "insn_len": 2}\n{"reason": 30}\n'
    reader = open_trace(io.BytesIO(text.encode()), format="jsonl")
    (batch,) = exit_batches(reader, size=100)  # array columns: sent as *_packed bytes
    assert batch.reason_packed and not batch.reason
    received = exit_batch(batch, max_exits=100)  # as the server reads it
    assert list(received.reason) == [10, 30] and list(received.rip) == [4096, 0]
    columns = ExitBatch.from_records(RECORDS)
    (sent,) = exit_batches([columns], size=1)  # a column batch is sent whole
    assert list(sent.reason) == [10, 48, 12]


def test_empty_sources_give_no_batches_and_bad_sizes_are_refused() -> None:
    assert list(exit_batches([], size=10)) == []
    with pytest.raises(ValueError, match="at least 1"):
        list(exit_batches(RECORDS, size=0))


def test_modes_round_trip() -> None:
    for name in ("native", "nested", "nested-shadow"):
        assert mode_from_pb(mode_to_pb(name)) == name
    with pytest.raises(ValueError, match="unknown mode"):
        mode_to_pb("turbo")


def test_accumulated_batches_have_the_run_summary_keys() -> None:
    totals = StatsAccumulator(profile="kvm", mode="native")
    stats = pb.BatchStats(
        sequence=1, exits=2, instructions=pb.InstructionCounts(vmread=10, vmwrite=4),
        cache_hits=1, cache_misses=3, simulated_seconds=0.5,
        by_reason={"CPUID": pb.ReasonStats(exits=2, vmread=10, vmwrite=4)},
        vmreads_per_exit=[4, 6], vmwrites_per_exit=[2, 2],
    )  # fmt: skip
    totals.add(stats)
    summary = totals.summary()
    assert summary["per_exit"]["vmread"] == {"mean": 5.0, "p50": 4.0, "p99": 6.0}
    assert summary["by_reason"]["CPUID"]["vmread"] == 10 and summary["exits"] == 2


# --- typed errors ----------------------------------------------------------------------------


class _FailedCall(grpc.RpcError, grpc.Call):
    """A stand-in for what a stub raises."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> Any:
        return ()

    def trailing_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPreconditionError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
        (grpc.StatusCode.INTERNAL, VmxsimRpcError),
    ],
)
def test_status_codes_map_to_typed_errors(code: grpc.StatusCode, cls: type) -> None:
    error = from_rpc_error(_FailedCall(code, "the server's words"))
    assert type(error) is cls and error.code is code
    assert error.details == "the server's words"
    assert str(error) == f"{code.name}: the server's words"


# --- comparison ratios -----------------------------------------------------------------------


def test_ratios_divide_by_the_fastest_profile_and_by_native() -> None:
    runs = [
        {"profile": "kvm", "mode": "native", "simulated_seconds": 1.0},
        {"profile": "kvm", "mode": "nested", "simulated_seconds": 4.0},
        {"profile": "haxm-legacy", "mode": "native", "simulated_seconds": 2.0},
        {"profile": "haxm-legacy", "mode": "nested", "simulated_seconds": 40.0},
    ]
    r = ratios(runs)
    assert r["vs_fastest"] == {
        "native": {"kvm": 1.0, "haxm-legacy": 2.0},
        "nested": {"kvm": 1.0, "haxm-legacy": 10.0},
    }
    assert r["vs_native"] == {"kvm": {"nested": 4.0}, "haxm-legacy": {"nested": 20.0}}


def test_a_source_that_fails_at_once_fails_before_any_call() -> None:
    """The first batch is read before the Replay stream starts (``ReplayFeed.prime``): a trace
    that is damaged from its start raises its own error, and no call is started to be cancelled
    (the server's grpc printed a traceback for a call cancelled while it started the handler).
    Nothing listens on the address: a started call would end UNAVAILABLE instead."""
    from vmxsim_client.client import Client

    class Broken:
        def batches(self, size: int) -> Any:
            raise ValueError("damaged at byte 0")
            yield  # a generator

    with Client("127.0.0.1:9", timeout=2) as client, pytest.raises(ValueError, match="byte 0"):
        client.replay(Broken())
