"""Every bad input the service and the CLI can be given, and the answer it gets.

``CASES`` is the catalogue of docs/reliability.md ("Bad input"): each row there has an id
(B1, B2, ...) and each id here is checked against a real server. A test keeps the two lists
equal, so the page cannot promise an answer that is not tested.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest_service import (
    cpuid_batch,
    drive_requests,
    ins,
    named,
    root_setup,
    rpc_error,
    serving,
)

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_client.cli import main

RELIABILITY = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
Code = grpc.StatusCode
Call = Callable[[pb_grpc.VcpuServiceStub, str, grpc.Channel], object]
"""A bad call, given a stub, a fresh vCPU's id and the stub's channel."""


@dataclass(frozen=True)
class Case:
    """A bad request and the status code and message (a fragment) it is answered with."""

    id: str
    call: Call
    code: grpc.StatusCode
    message: str


def _execute(*instructions: pb.Instruction) -> Call:
    return lambda stub, vcpu, channel: stub.Execute(
        pb.ExecuteRequest(vcpu_id=vcpu, instructions=list(instructions))
    )


def _drive(*batches: pb.ExitBatch) -> Call:
    return lambda stub, vcpu, channel: stub.Drive(drive_requests(vcpu, batches))


def _replay(*requests: pb.ReplayRequest) -> Call:
    return lambda stub, vcpu, channel: stub.Replay(iter(requests))


def _raw(method: str, data: bytes) -> Call:
    def call(stub: pb_grpc.VcpuServiceStub, vcpu: str, channel: grpc.Channel) -> object:
        return channel.unary_unary(f"/vmxsim.v1.VcpuService/{method}")(data, timeout=5)

    return call


START = pb.ReplayRequest(start=pb.ReplayStart())
END = pb.ReplayRequest(end=pb.ReplayEnd())
VERSION_9 = b"VMXSNAP\x00\x09\x00\x00\x00\x00" + b"x"

CASES = (
    Case("B1", _raw("Execute", b"\xff\xff\xff"), Code.INVALID_ARGUMENT, "does not parse"),
    Case("B2", _execute(ins("vmread", field=named("NOPE"))), Code.INVALID_ARGUMENT,
         "unknown VMCS field name 'NOPE' in VMREAD"),
    Case("B3", _execute(pb.Instruction(line=3)), Code.INVALID_ARGUMENT,
         "instruction 0 (line 3) sets no operation"),
    Case("B4", _execute(ins("vmwrite", value=1)), Code.INVALID_ARGUMENT,
         "VMWRITE needs a field"),
    Case("B5", lambda s, v, c: s.CreateVcpu(pb.CreateVcpuRequest(profile="nope")),
         Code.INVALID_ARGUMENT, "unknown profile 'nope' (known: "),
    Case("B6", lambda s, v, c: s.CreateVcpu(pb.CreateVcpuRequest(mode=99)),  # type: ignore[arg-type]
         Code.INVALID_ARGUMENT, "unknown latency mode 99"),
    Case("B7", lambda s, v, c: s.CreateVcpu(
        pb.CreateVcpuRequest(capabilities=pb.Capabilities(cr3_target_count=4000))),
        Code.INVALID_ARGUMENT, "CR3-target count 4000 does not fit 9 bits"),
    Case("B8", lambda s, v, c: s.CreateVm(pb.CreateVmRequest(maxphyaddr=99)),
         Code.INVALID_ARGUMENT, "MAXPHYADDR 99 is outside 32..52"),
    Case("B9", lambda s, v, c: s.GetVcpu(pb.GetVcpuRequest(vcpu_id="vcpu-0")), Code.NOT_FOUND,
         "no vCPU 'vcpu-0' on this server"),
    Case("B10", lambda s, v, c: s.Drive(iter([pb.DriveRequest(batch=cpuid_batch(1))])),
         Code.INVALID_ARGUMENT, "the first DriveRequest must name a vcpu_id"),
    Case("B11", _drive(pb.ExitBatch(reason=[10, 10], rip=[1])), Code.INVALID_ARGUMENT,
         "column rip has 1 values for 2 exits"),
    Case("B12", _drive(pb.ExitBatch(reason=[0xFFFFFFFF])), Code.INVALID_ARGUMENT,
         "reason value 4294967295 is outside 0..0xffff"),
    Case("B13", _drive(cpuid_batch(100_001)), Code.RESOURCE_EXHAUSTED,
         "has 100001 exits; the limit is 100000"),
    Case("B14", _replay(pb.ReplayRequest(batch=cpuid_batch(1))), Code.INVALID_ARGUMENT,
         "the first ReplayRequest must be a ReplayStart"),
    Case("B15", _replay(START, pb.ReplayRequest(batch=cpuid_batch(1, 5)),
                        pb.ReplayRequest(batch=cpuid_batch(1, 5)), END),
         Code.INVALID_ARGUMENT, "batch sequence 5 does not follow 5"),
    Case("B16", _replay(START, pb.ReplayRequest(batch=cpuid_batch(1, 1))),
         Code.INVALID_ARGUMENT, "the replay stream closed before its ReplayEnd"),
    Case("B17", _replay(pb.ReplayRequest(start=pb.ReplayStart(resume_token="x" * 22)), END),
         Code.FAILED_PRECONDITION, "this server keeps no replay state"),
    Case("B18", lambda s, v, c: s.Restore(pb.RestoreRequest(data=b"not a snapshot")),
         Code.INVALID_ARGUMENT, "not a vmxsim snapshot"),
    Case("B19", lambda s, v, c: s.Restore(pb.RestoreRequest(data=VERSION_9)),
         Code.INVALID_ARGUMENT, "snapshot format version 9 is not supported"),
    Case("B20", lambda s, v, c: s.Restore(pb.RestoreRequest(
        data=s.Snapshot(pb.SnapshotRequest(vcpu_id=v)).data[:-1] + b"!")),
        Code.INVALID_ARGUMENT, "snapshot is corrupted: its CRC32 does not match"),
)  # fmt: skip


def _documented_ids(section: str) -> list[str]:
    text = RELIABILITY.read_text()
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| (B\d+|C\d+) \|", part, flags=re.MULTILINE)


def test_the_catalogue_in_docs_matches_the_tested_cases() -> None:
    documented = _documented_ids("Bad input")
    assert documented == [case.id for case in CASES] + [f"C{i}" for i in range(1, 6)]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_requests_get_a_clear_status(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str, service_channel: grpc.Channel, case: Case
) -> None:
    error = rpc_error(case.call, stub, vcpu_id, service_channel)
    assert (error.code(), case.message) == (case.code, case.message)
    assert case.message in error.details() and "Traceback" not in error.details()


def test_architectural_answers_are_results_not_errors(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    """An encoding no field has (or bits 63:32 set) is VMfailValid(12); a VMWRITE value wider
    than its field is truncated, as the processor does (docs/reliability.md, A1 and A2)."""
    program = [
        *root_setup(),
        ins("vmread", field=pb.FieldRef(encoding=1 << 40)),
        ins("vmwrite", field=named("VIRTUAL_PROCESSOR_ID"), value=0x1_2345),
        ins("vmread", field=named("VIRTUAL_PROCESSOR_ID")),
    ]
    results = stub.Execute(pb.ExecuteRequest(vcpu_id=vcpu_id, instructions=program)).results
    unsupported, written, read = results[-3:]
    assert (unsupported.result, unsupported.error) == (pb.OUTCOME_RESULT_VMFAIL_VALID, 12)
    assert written.result == pb.OUTCOME_RESULT_VMSUCCEED and read.value == 0x2345


@pytest.mark.parametrize(
    ("case", "files", "argv", "message"),
    [
        ("C1", {"s.vmx": "VMXON 0x1000\nVMWRITE GUEST_RIP 0x1ffffffffffffffff\n"},
         ["exec", "s.vmx"], "s.vmx:2: value: 0x1ffffffffffffffff does not fit 64 unsigned bits"),
        ("C2", {"bad.toml": "[profile]\nname = 3\n"}, ["tune", "--base", "bad.toml",
         "mix:linux-boot:100"], "bad.toml: -: unknown top-level keys ['profile']"),
        ("C3", {"t.jsonl": "garbage\n"}, ["replay", "--format", "jsonl", "--strict", "t.jsonl"],
         "t.jsonl:1: Expecting value"),
        ("C4", {"t.jsonl": '{"reason": "HLT"}\ngarbage\n'}, ["replay", "--format", "jsonl",
         "t.jsonl"], "warning: skipped 1 malformed lines"),
        ("C5", {}, ["replay", "--profile", "nope", "mix:linux-boot:10"],
         "unknown profile 'nope'"),
    ],
)  # fmt: skip
def test_bad_cli_input_is_one_line(
    case: str,
    files: dict[str, str],
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    status = main(argv)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert status == (0 if case == "C4" else 2)


def test_limits_on_vms_restores_and_unary_message_size_are_resource_exhausted() -> None:
    """The gaps next to test_service_*'s vCPU, stream, batch and Drive message-size limits."""
    with serving(max_vcpus=1, max_message_bytes=4096) as (_, stub):
        vcpu_id = stub.CreateVcpu(pb.CreateVcpuRequest()).vcpu.vcpu_id
        error = rpc_error(stub.CreateVm, pb.CreateVmRequest())
        assert error.code() == Code.RESOURCE_EXHAUSTED and "at most 1 VMs" in error.details()
        saved = stub.Snapshot(pb.SnapshotRequest(vcpu_id=vcpu_id)).data
        error = rpc_error(stub.Restore, pb.RestoreRequest(data=saved))
        assert error.code() == Code.RESOURCE_EXHAUSTED and "at most 1 vCPUs" in error.details()
        error = rpc_error(stub.Restore, pb.RestoreRequest(data=b"x" * 5000))
        assert error.code() == Code.RESOURCE_EXHAUSTED
