"""Capabilities as IA32_VMX_* MSRs over the wire: a vCPU created with MSR values (Client and CLI,
a real server on a loopback port) behaves like the processor those values describe, reports
every MSR it has, rejects values no processor reports, and keeps them through snapshot/restore.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmxsim_client.cli import main
from vmxsim_client.client import Client, RemoteVcpu
from vmxsim_client.rpc_errors import InvalidArgumentError
from vmxsim_server.vmx.capabilities import (
    DEFAULT_CAPABILITIES,
    EVERY_FEATURE,
    MSR_NAMES,
    Capabilities,
)
from vmxsim_server.vmx.capability_msrs import check_msrs, readable_msrs, with_msrs
from vmxsim_server.vmx.exceptions import InvalidArgument

DEFAULT_MSRS = DEFAULT_CAPABILITIES.msrs()
BASIC, PROC2 = "IA32_VMX_BASIC", "IA32_VMX_PROCBASED_CTLS2"
NO_TRUE_CONTROLS = {BASIC: DEFAULT_MSRS[0x480] & ~(1 << 55)}
SHADOWING = {PROC2: DEFAULT_MSRS[0x48B] | 1 << (32 + 14)}
CR3_LOAD_EXITING = 1 << 15  # primary processor-based control (SDM table 25-6)


@pytest.fixture
def client(vmxsim_address: str) -> Iterator[Client]:
    with Client(vmxsim_address, timeout=10.0) as c:
        yield c


def _launch_without_cr3_load_exiting(v: RemoteVcpu) -> tuple[str, int]:
    v.enter_vmx()
    state = v.write_valid_state()
    controls = state["CPU_BASED_VM_EXEC_CONTROL"] & ~CR3_LOAD_EXITING
    assert v.vmwrite("CPU_BASED_VM_EXEC_CONTROL", controls).ok
    result = v.vmlaunch()
    return result.result, result.error


# --- over gRPC ------------------------------------------------------------------------------


def test_without_true_controls_clearing_cr3_load_exiting_fails_vmlaunch(client: Client) -> None:
    plain = client.create_vcpu(vmx_msrs=NO_TRUE_CONTROLS)
    assert _launch_without_cr3_load_exiting(plain) == ("VMfailValid", 7)  # invalid control field
    valid = client.create_vcpu(vmx_msrs=NO_TRUE_CONTROLS)  # the same VMCS with the bit set
    valid.enter_vmx()
    valid.write_valid_state()
    assert valid.vmlaunch().result == "VMsucceed"
    default = client.create_vcpu()
    assert _launch_without_cr3_load_exiting(default) == ("VMsucceed", 0)


def test_the_vcpu_reports_the_msrs_it_has(client: Client) -> None:
    default = client.create_vcpu().info.capabilities["vmx_msrs"]
    assert default == {MSR_NAMES[i]: v for i, v in readable_msrs(DEFAULT_CAPABILITIES).items()}
    assert default["IA32_VMX_TRUE_PROCBASED_CTLS"] & CR3_LOAD_EXITING == 0
    assert "IA32_VMX_PROCBASED_CTLS3" not in default  # tertiary controls are not offered
    plain = client.create_vcpu(vmx_msrs=NO_TRUE_CONTROLS)
    got = client.get_vcpu(plain.id).capabilities["vmx_msrs"]
    assert got[BASIC] == NO_TRUE_CONTROLS[BASIC]
    assert not any(name.startswith("IA32_VMX_TRUE_") for name in got)  # SDM A.1: bit 55 clear
    assert got["IA32_VMX_PROCBASED_CTLS"] & CR3_LOAD_EXITING
    listed = [i for i in client.list_vcpus(vm=plain.info.vm_id) if i.vcpu_id == plain.id]
    assert listed[0].capabilities["vmx_msrs"] == got


def test_vmcs_shadowing_offered_through_procbased_ctls2(client: Client) -> None:
    default = client.create_vcpu()
    default.enter_vmx()
    read = default.vmread("VMREAD_BITMAP")
    assert (read.result, read.error) == ("VMfailValid", 12)  # unsupported VMCS component
    shadowing = client.create_vcpu(vmx_msrs=SHADOWING)
    assert shadowing.info.capabilities["vmcs_shadowing"] is True
    shadowing.enter_vmx()
    assert shadowing.vmwrite("VMREAD_BITMAP", 0x5000).ok
    assert shadowing.vmread("VMREAD_BITMAP").value == 0x5000


def test_msrs_apply_on_top_of_the_fields_and_by_index(client: Client) -> None:
    v = client.create_vcpu(
        revision_id=0x1234, cr3_target_count=2, vmx_msrs={0x485: DEFAULT_MSRS[0x485]}
    )
    caps = v.info.capabilities
    assert caps["revision_id"] == 0x1234  # no MSR says otherwise
    assert caps["cr3_target_count"] == 4  # IA32_VMX_MISC given: the MSR wins
    assert caps["vmx_msrs"][BASIC] & 0x7FFF_FFFF == 0x1234
    by_text = client.create_vcpu(vmx_msrs="$ rdmsr 0x48b\n" + f"{SHADOWING[PROC2]:x}\n")
    assert by_text.info.capabilities["vmcs_shadowing"] is True


@pytest.mark.parametrize(
    ("msrs", "named"),
    [
        ({"IA32_VMX_NOPE": 1}, "'IA32_VMX_NOPE' is not an IA32_VMX_* MSR name"),
        ({"0x3b": 1}, "MSR 0x3b is not an IA32_VMX_* capability MSR"),
        ({"IA32_VMX_PINBASED_CTLS": 0x16 | 1 << 8 | 0xFF << 32}, "IA32_VMX_PINBASED_CTLS"),
        ({"IA32_VMX_ENTRY_CTLS": 0xFFFF_0000_01FF}, "default1 bits 0x1000 read as 0"),
        ({"IA32_VMX_TRUE_EXIT_CTLS": DEFAULT_MSRS[0x48F] | 1 << 15}, "outside the default1"),
        ({"IA32_VMX_CR4_FIXED1": 0x1F70FFF}, "IA32_VMX_CR4_FIXED0"),
        ({"IA32_VMX_BASIC": 1 << 31}, "IA32_VMX_BASIC"),
        ({"IA32_VMX_BASIC": 0, "0x480": 0}, "names an MSR given already"),
    ],
)
def test_impossible_msrs_are_invalid_argument_naming_the_msr(
    client: Client, msrs: dict[str, int], named: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_vcpu(vmx_msrs=msrs)
    assert named in caught.value.details


def test_snapshot_and_restore_keep_the_msrs(client: Client) -> None:
    msrs = NO_TRUE_CONTROLS | SHADOWING | {"IA32_VMX_CR4_FIXED1": 0x0037_2FFF}
    v = client.create_vcpu(vmx_msrs=msrs)
    restored = client.restore(v.snapshot())
    assert restored.info.capabilities == v.info.capabilities
    assert restored.info.capabilities["vmx_msrs"]["IA32_VMX_CR4_FIXED1"] == 0x0037_2FFF
    assert _launch_without_cr3_load_exiting(restored) == ("VMfailValid", 7)
    assert restored.vmread("VMREAD_BITMAP").ok


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_vcpu_create_with_a_capabilities_file(
    vmxsim_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    caps = tmp_path / "caps.txt"
    caps.write_text(
        f"$ sudo rdmsr 0x480\n{NO_TRUE_CONTROLS[BASIC]:x}\n{PROC2} = {SHADOWING[PROC2]:#x}\n"
    )
    server = ["--server", vmxsim_address]
    assert main(["vcpu", "create", "--capabilities", str(caps), "--json", *server]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["capabilities"]["vmx_msrs"][BASIC] == NO_TRUE_CONTROLS[BASIC]
    assert created["capabilities"]["vmcs_shadowing"] is True
    assert main(["vcpu", "show", created["vcpu_id"], *server]) == 0
    shown = capsys.readouterr().out
    assert f"  {BASIC:<29}{NO_TRUE_CONTROLS[BASIC]:#018x}\n" in shown
    assert "IA32_VMX_TRUE_PROCBASED_CTLS" not in shown
    # what show prints under vmx_msrs is itself a capabilities file
    listing = shown.split("vmx_msrs", 1)[1].split("\n", 1)[1]
    (tmp_path / "again.txt").write_text(listing)
    assert (
        main(["vcpu", "create", "--capabilities", str(tmp_path / "again.txt"), "--json", *server])
        == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert again["capabilities"] == created["capabilities"]


def test_cli_rejects_a_bad_capabilities_file_in_one_line(
    vmxsim_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ["--server", vmxsim_address]
    bad = tmp_path / "bad.txt"
    bad.write_text("IA32_VMX_CR0_FIXED1 = 0x7fffffff\n")
    assert main(["vcpu", "create", "--capabilities", str(bad), *server]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "INVALID_ARGUMENT" in err and "IA32_VMX_CR0_FIXED1" in err
    bad.write_text("not a capabilities file at all = = =\n")
    assert main(["vcpu", "create", "--capabilities", str(bad), *server]) == 2
    assert "capabilities line 1" in capsys.readouterr().err
    assert main(["vcpu", "create", "--capabilities", str(tmp_path / "none"), *server]) == 2
    assert "cannot read capabilities" in capsys.readouterr().err


# --- the core -------------------------------------------------------------------------------


@pytest.mark.parametrize("caps", [DEFAULT_CAPABILITIES, EVERY_FEATURE], ids=["default", "every"])
def test_msrs_read_back_as_the_same_capabilities(caps: Capabilities) -> None:
    check_msrs(caps)
    assert with_msrs(caps, {}) == caps
    assert with_msrs(caps, caps.msrs()) == caps


def test_what_no_msr_holds_stays_the_bases() -> None:
    base = DEFAULT_CAPABILITIES.with_changes(sgx=True, linear_address_width=57, maxphyaddr=40)
    got = with_msrs(base, {0x485: DEFAULT_MSRS[0x485] & ~(0x1FF << 16)})
    assert (got.sgx, got.linear_address_width, got.maxphyaddr, got.cr3_target_count) == (
        True, 57, 40, 0,
    )  # fmt: skip


def test_a_control_msr_moves_its_true_twins_allowed1_bits() -> None:
    no_secondary = DEFAULT_MSRS[0x482] & ~(1 << 63)
    got = with_msrs(DEFAULT_CAPABILITIES, {0x482: no_secondary})
    assert got.msrs()[0x48E] >> 32 == no_secondary >> 32
    assert 0x48B not in readable_msrs(got)  # SDM A.1: no secondary controls, no CTLS2
    with pytest.raises(InvalidArgument, match=r"IA32_VMX_TRUE_PROCBASED_CTLS .*bits 63:32"):
        with_msrs(DEFAULT_CAPABILITIES, {0x482: no_secondary, 0x48E: DEFAULT_MSRS[0x48E]})
