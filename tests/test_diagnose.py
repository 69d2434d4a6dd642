"""``vmxsim diagnose``: dumps through the entry-check table, the verdicts, the CLI (embedded and
against a real server on a loopback port), the Diagnose RPC and the client method."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import load_valid_state, make_root_vcpu

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_client.cli import main
from vmxsim_client.client import Client
from vmxsim_server.vmx import snapshot
from vmxsim_server.vmx.diagnosis import diagnose, diagnose_input
from vmxsim_server.vmx.dumps import MAX_DUMP_BYTES, read_dumps
from vmxsim_server.vmx.entry_checks import BY_ID
from vmxsim_server.vmx.fields import BY_NAME

DUMPS = Path(__file__).parent / "fixtures" / "dumps"
SHARED = Path(__file__).resolve().parents[2] / "shared"

EXPECTED: dict[str, list[list[str]]] = {
    # fixture -> per dump: the checks that fail, in SDM order ([] for a dump that enters fine)
    "kvm-6x-passes.log": [[]],
    "kvm-4x-syslog-efer-lma.log": [["guest.efer.lma"]],
    "kvm-5x-quoted-wrapped-cr0.eml": [["guest.cr0.fixed"]],
    "kvm-6x-two-dumps.log": [[], ["control.eptp.walk_length"]],
    "kvm-6x-tr-unusable.log": [["guest.tr.unusable"]],
    "xen-ia32e-pae.log": [["guest.ia32e.paging"]],
    "xen-quoted-cr3-noflush.eml": [["guest.cr3.width"]],
    "haxm-linux-cr4-vmxe.log": [["guest.cr4.fixed"]],
    "haxm-netbsd-sti-if.log": [["guest.interruptibility.sti_if"]],
    "haxm-debugview-passes.log": [[]],
    "qemu-tr-ti.txt": [["guest.tr.ti"]],
    "qemu-tr-unusable.txt": [["guest.tr.type", "guest.tr.present", "guest.tr.unusable"]],
    "qemu-passes.txt": [[]],
    "plain-host-selector.txt": [["host.selectors.rpl_ti"]],
}


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in DUMPS.iterdir())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_dump_fails_exactly_its_checks_or_none(name: str) -> None:
    results = diagnose_input((DUMPS / name).read_bytes())
    assert [[f.check.id for f in r.failures] for r in results] == EXPECTED[name]
    for result, checks in zip(results, EXPECTED[name], strict=True):
        assert result.verdict == ("fails" if checks else "incomplete")
        if checks:
            assert result.to_doc()["first_outcome"] == BY_ID[checks[0]].outcome


def test_failure_document_names_the_fields_and_values() -> None:
    (result,) = diagnose_input((DUMPS / "kvm-5x-quoted-wrapped-cr0.eml").read_bytes())
    doc = result.to_doc()
    assert doc["format"] == "kvm-dump_vmcs" and doc["fields_read"] == 110
    (failure,) = doc["failures"]
    assert failure["check"] == "guest.cr0.fixed"
    assert failure["outcome"] == "entry-failed 0x80000021" and failure["stage"] == "guest"
    assert failure["section"] == BY_ID["guest.cr0.fixed"].section
    assert failure["values"]["GUEST_CR0"] == 0x80050013
    assert set(failure["values"]) <= set(failure["fields"])
    assert "0x80050013" in failure["message"] and failure["capability_dependent"] is False


def test_fields_a_dump_does_not_show_are_not_checked() -> None:
    (result,) = diagnose_input((DUMPS / "kvm-6x-passes.log").read_bytes())
    missing = {n["check"]: n["missing"] for n in result.to_doc()["not_checked"]}
    assert ["VMCS_LINK_POINTER"] in missing.values()  # KVM never prints the link pointer
    assert missing["basic.shadow_vmcs"] == ["@shadow_indicator"]
    (partial,) = diagnose_input(b"GUEST_CR4=0x2020\nGUEST_RFLAGS=2\n")
    doc = partial.to_doc()
    assert doc["verdict"] == "incomplete" and doc["failures"] == []
    not_checked = {n["check"]: n["missing"] for n in doc["not_checked"]}
    assert "GUEST_CR0" in not_checked["guest.cr0.pg_pe"]
    assert "guest.rflags.reserved" not in not_checked  # it had what it needs


def snapshot_bytes(**broken: int) -> bytes:
    vcpu = make_root_vcpu()
    load_valid_state(vcpu)
    for name, value in broken.items():
        assert vcpu.vmwrite(BY_NAME[name].encoding, value).ok
    return snapshot.dump(vcpu, "kvm", "native")


def test_a_snapshot_states_everything_and_a_valid_one_passes() -> None:
    (result,) = diagnose_input(snapshot_bytes())
    doc = result.to_doc()
    assert doc["format"] == "vmxsim-snapshot" and doc["capabilities"] == "dump"
    assert doc["verdict"] == "passes" and doc["not_checked"] == []


def test_a_snapshot_document_with_one_broken_field() -> None:
    doc = snapshot.unpack(snapshot_bytes(HOST_TR_SELECTOR=0x43))
    (result,) = diagnose_input(json.dumps(doc).encode())
    assert [f.check.id for f in result.failures] == ["host.selectors.rpl_ti"]
    assert result.verdict == "fails" and result.to_doc()["first_outcome"] == "VMfailValid 8"


SHADOWING = {  # a VMCS whose secondary controls ask for VMCS shadowing (bit 14)
    "CPU_BASED_VM_EXEC_CONTROL": 0x8401E172,
    "SECONDARY_VM_EXEC_CONTROL": 1 << 14,
}


def test_a_failure_due_only_to_the_assumed_capabilities_says_so() -> None:
    (result,) = diagnose_input(values=SHADOWING)
    (failure,) = [
        f for f in result.to_doc()["failures"] if f["check"] == "control.secondary.allowed"
    ]
    assert failure["capability_dependent"] is True


def test_capabilities_that_offer_the_control_make_it_pass(tmp_path: Path) -> None:
    msrs = tmp_path / "msrs.txt"
    msrs.write_text("IA32_VMX_PROCBASED_CTLS2 = 0xffffffff00000000\n")
    status, out, _ = run(
        ["diagnose", "-", "--json", "--capabilities", str(msrs)],
        "CPU_BASED_VM_EXEC_CONTROL=0x8401e172\nSECONDARY_VM_EXEC_CONTROL=0x4000\n",
    )
    doc = json.loads(out)
    assert doc["capabilities"] == "given"
    assert "control.secondary.allowed" not in [f["check"] for f in doc["failures"]]
    assert status == (1 if doc["failures"] else 0)


# --- the CLI ---------------------------------------------------------------------------------


def run(args: list[str], stdin: str | None = None, **_: Any) -> tuple[int, str, str]:
    import contextlib
    import io
    import sys

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(args)
    finally:
        sys.stdin = saved
    return status, out.getvalue(), err.getvalue()


def test_cli_json_lines_one_per_dump_embedded() -> None:
    status, out, err = run(["diagnose", str(DUMPS / "kvm-6x-two-dumps.log"), "--json"])
    first, second = (json.loads(line) for line in out.splitlines())
    assert status == 1 and err == ""
    assert first["verdict"] == "incomplete" and first["failures"] == []
    assert second["failures"][0]["check"] == "control.eptp.walk_length"
    assert set(second) >= {"format", "fields_read", "sdm", "verdict", "failures", "not_checked"}
    assert set(second["failures"][0]) >= {"check", "section", "outcome", "fields", "values",
                                          "message"}  # fmt: skip


def test_cli_text_through_a_real_server(vmxsim_address: str) -> None:
    status, out, _ = run(["diagnose", str(DUMPS / "xen-ia32e-pae.log"), "--server", vmxsim_address])
    assert status == 1
    assert (
        "verdict: fails - VM entry gives entry-failed 0x80000021 first (guest.ia32e.paging)" in out
    )
    assert "the log reports exit reason 0x80000021" in out
    assert "GUEST_CR4=0x26d0" in out


def test_cli_passing_dump_exits_0_and_forced_format(vmxsim_address: str) -> None:
    status, out, _ = run(["diagnose", str(DUMPS / "haxm-debugview-passes.log"),
                          "--format", "haxm-dump_vmcs", "--server", vmxsim_address])  # fmt: skip
    assert status == 0 and "no check fails" in out


@pytest.mark.parametrize(
    ("args", "stdin", "problem"),
    [
        (["diagnose", "-"], "just some text\n", "no VMCS dump found"),
        (["diagnose", "/nonexistent/dump.log"], None, "cannot read dump /nonexistent/dump.log"),
        (["diagnose", "-"], "GUEST_RIP=1\n" * (MAX_DUMP_BYTES // 12 + 1), "larger than 1,048,576"),
        (["diagnose", "-", "--format", "plain"], "GUEST_RIP=\n", "expected FIELD=VALUE"),
        (["diagnose", "-", "--capabilities", "/nonexistent"], "GUEST_RIP=1\n", "capabilities"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    args: list[str], stdin: str | None, problem: str
) -> None:
    status, out, err = run(args, stdin)
    assert status == 2 and out == ""
    assert problem in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_refuses_capabilities_no_processor_reports_as_vcpu_create_does(tmp_path: Path) -> None:
    """``diagnose --capabilities`` runs the same MSR checks as ``vcpu create --capabilities``:
    a CR0 fixed-0 bit that fixed-1 clears, or a must-be-1 control that may not be 1, is refused
    in one line naming the MSR (not diagnosed against an impossible processor)."""
    bad = tmp_path / "caps.txt"
    for text, msr in (
        ("IA32_VMX_CR0_FIXED1 = 0x7fffffff\n", "IA32_VMX_CR0_FIXED"),
        ("IA32_VMX_PINBASED_CTLS = 0x0000001600000017\n", "IA32_VMX_PINBASED_CTLS"),
    ):
        bad.write_text(text)
        status, out, err = run(
            ["diagnose", str(DUMPS / "kvm-6x-passes.log"), "--capabilities", str(bad)]
        )
        assert status == 2 and out == "", err
        assert "capabilities: " in err and msr in err and err.count("\n") == 1, err


def test_cli_bad_capabilities_file_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "caps.txt"
    bad.write_text("IA32_VMX_NONSENSE = 1\n")
    status, _, err = run(["diagnose", str(DUMPS / "kvm-6x-passes.log"), "--capabilities", str(bad)])
    assert status == 2 and "not an IA32_VMX_* MSR name" in err and err.count("\n") == 1


# --- RPC and client --------------------------------------------------------------------------


def test_rpc_diagnoses_values_and_dumps(stub: pb_grpc.VcpuServiceStub) -> None:
    reply = stub.Diagnose(pb.DiagnoseRequest(values={"GUEST_RFLAGS": 0}))
    (found,) = reply.diagnoses
    assert found.format == "plain" and found.fields_read == 1
    assert [f.check for f in found.failures] == ["guest.rflags.reserved"]
    assert found.failures[0].values["GUEST_RFLAGS"] == 0
    reply = stub.Diagnose(pb.DiagnoseRequest(dump=(DUMPS / "xen-ia32e-pae.log").read_bytes()))
    assert reply.diagnoses[0].reported_exit_reason == 0x80000021


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (pb.DiagnoseRequest(dump=b"nothing to see"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.DiagnoseRequest(dump=b"x" * (MAX_DUMP_BYTES + 1)), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (pb.DiagnoseRequest(dump=b"GUEST_RIP=1", format="nope"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.DiagnoseRequest(values={"NOPE": 1}), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.DiagnoseRequest(values={"GUEST_RIP": 1}, capability_msrs={"0x10": 1}),
         grpc.StatusCode.INVALID_ARGUMENT),
    ],
)  # fmt: skip
def test_rpc_bad_requests_get_a_specific_status(
    stub: pb_grpc.VcpuServiceStub, request_: pb.DiagnoseRequest, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Diagnose(request_)
    details = raised.value.details() or ""
    assert raised.value.code() == code
    assert details and "Traceback" not in details


def test_client_method_matches_the_core(vmxsim_address: str) -> None:
    text = (DUMPS / "kvm-4x-syslog-efer-lma.log").read_text()
    with Client(vmxsim_address) as client:
        docs = client.diagnose(text=text)
        by_values = client.diagnose(values=SHADOWING, capabilities={0x48B: 0xFFFF_FFFF << 32})
    assert docs == [diagnose(d).to_doc() for d in read_dumps(text)]
    assert by_values[0]["capabilities"] == "given"
    assert "control.secondary.allowed" not in [f["check"] for f in by_values[0]["failures"]]


# --- dumps found in ../shared ----------------------------------------------------------------

_MARKERS = ("*** Guest State ***", "VMX_PIN_CONTROLS: ", "KVM: entry failed")


def _shared_dumps() -> list[Path]:
    if not SHARED.is_dir():
        return []
    found = []
    for path in sorted(SHARED.rglob("*")):
        if path.is_file() and path.stat().st_size <= MAX_DUMP_BYTES:
            text = path.read_text(errors="replace")
            if any(marker in text for marker in _MARKERS):
                found.append(path)
    return found


@pytest.mark.parametrize("path", _shared_dumps() or [None])
def test_dumps_in_shared_are_diagnosed(path: Path | None) -> None:
    if path is None:
        pytest.skip("../shared holds no VMCS dumps")
    results = diagnose_input(path.read_bytes())
    assert results and all(r.verdict in ("fails", "passes", "incomplete") for r in results)
    assert all(r.to_doc()["fields_read"] > 0 for r in results)


def test_permissive_capabilities_lift_every_processor_dependent_limit() -> None:
    from dataclasses import fields

    from vmxsim_server.vmx.capabilities import DEFAULT_CAPABILITIES, Capabilities
    from vmxsim_server.vmx.diagnosis import permissive

    lenient = permissive(DEFAULT_CAPABILITIES)
    kept = {"revision_id", "feature_control", "cr0_fixed0", "cr4_fixed0", "true_controls",
            "preemption_timer_rate"}  # fmt: skip
    changed = {f.name for f in fields(Capabilities) if getattr(lenient, f.name) != getattr(
        DEFAULT_CAPABILITIES, f.name)}  # fmt: skip
    # every capability that can restrict a VMCS is lifted (a new one must join _PERMISSIVE)
    already = {"store_lma", "zero_length_injection", "activity_states", "cr0_fixed1"}  # at most
    assert changed | kept | already == {f.name for f in fields(Capabilities)}
    assert lenient.proc_must_be1 == 0 and lenient.secondary_allowed1 == 0xFFFF_FFFF


def test_cli_reads_a_binary_snapshot_file(tmp_path: Path) -> None:
    path = tmp_path / "vcpu.snap"
    path.write_bytes(snapshot_bytes())
    status, out, _ = run(["diagnose", str(path)])
    assert status == 0
    assert "dump: vmxsim-snapshot at line 1" in out and "verdict: passes" in out
    assert "not checked" not in out
