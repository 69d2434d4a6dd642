"""Every VMX instruction outcome the SDM defines that vmxsim models (DESIGN.md "The core" 3)."""

from __future__ import annotations

import pytest
from conftest import VMCS_REGION, VMXON_REGION, load_valid_state, make_root_vcpu

from vmxsim_server.vmx import (
    INVALID_POINTER,
    Capabilities,
    ExitRecord,
    LaunchState,
    Mode,
    Result,
    Vcpu,
)
from vmxsim_server.vmx.fields import BY_NAME

ENC = {name: f.encoding for name, f in BY_NAME.items()}


def error_field(vcpu: Vcpu) -> int:
    outcome = vcpu.vmread(ENC["VM_INSTRUCTION_ERROR"])
    assert outcome.value is not None
    return outcome.value


def fresh_vcpu(**caps: object) -> Vcpu:
    vcpu = Vcpu(capabilities=Capabilities().with_changes(**caps))
    vcpu.memory.write32(VMXON_REGION, vcpu.capabilities.revision_id)
    vcpu.memory.write32(VMCS_REGION, vcpu.capabilities.revision_id)
    return vcpu


# --- VMXON ---------------------------------------------------------------------------------------


def test_vmxon_succeeds_and_leaves_no_current_vmcs() -> None:
    vcpu = fresh_vcpu()
    assert vcpu.vmxon(VMXON_REGION).result is Result.VMSUCCEED
    assert vcpu.mode is Mode.ROOT
    assert vcpu.vmptrst().value == INVALID_POINTER


def test_vmxon_with_cr4_vmxe_clear_is_ud() -> None:
    vcpu = fresh_vcpu()
    vcpu.set_cr4(0x20)
    outcome = vcpu.vmxon(VMXON_REGION)
    assert (outcome.result, outcome.fault) == (Result.FAULT, "#UD")


def test_vmxon_with_cr0_outside_fixed_bits_is_gp() -> None:
    vcpu = fresh_vcpu()
    vcpu.set_cr0(0x8000_0001)  # NE clear
    outcome = vcpu.vmxon(VMXON_REGION)
    assert (outcome.result, outcome.fault) == (Result.FAULT, "#GP")


def test_vmxon_with_feature_control_unlocked_is_gp() -> None:
    vcpu = fresh_vcpu()
    vcpu.wrmsr(0x3A, 0x4)
    assert vcpu.vmxon(VMXON_REGION).fault == "#GP"


@pytest.mark.parametrize("address", [0x1001, 1 << 46, 0x1800])
def test_vmxon_with_bad_pointer_is_vmfail_invalid(address: int) -> None:
    assert fresh_vcpu().vmxon(address).result is Result.VMFAIL_INVALID


def test_vmxon_with_wrong_revision_is_vmfail_invalid() -> None:
    vcpu = fresh_vcpu()
    vcpu.memory.write32(VMXON_REGION, 0x1234)
    assert vcpu.vmxon(VMXON_REGION).result is Result.VMFAIL_INVALID
    assert vcpu.mode is Mode.OFF


def test_maxphyaddr_is_a_capability() -> None:
    wide = fresh_vcpu()
    wide.memory.write32(1 << 36, wide.capabilities.revision_id)
    assert wide.vmxon(1 << 36).ok
    narrow = fresh_vcpu(maxphyaddr=36)
    assert narrow.vmxon(1 << 36).result is Result.VMFAIL_INVALID


def test_vmxon_in_root_without_current_vmcs_is_vmfail_invalid() -> None:
    vcpu = fresh_vcpu()
    vcpu.vmxon(VMXON_REGION)
    assert vcpu.vmxon(VMXON_REGION).result is Result.VMFAIL_INVALID


def test_vmxon_in_root_with_current_vmcs_is_vmfail_valid_15(root_vcpu: Vcpu) -> None:
    outcome = root_vcpu.vmxon(VMXON_REGION)
    assert (outcome.result, outcome.error) == (Result.VMFAIL_VALID, 15)
    assert error_field(root_vcpu) == 15


# --- VMXOFF --------------------------------------------------------------------------------------


def test_vmxoff_outside_vmx_operation_is_ud() -> None:
    assert fresh_vcpu().vmxoff().fault == "#UD"


def test_vmxoff_leaves_vmx_operation(root_vcpu: Vcpu) -> None:
    assert root_vcpu.vmxoff().ok
    assert root_vcpu.mode is Mode.OFF
    assert root_vcpu.vmread(ENC["GUEST_RIP"]).fault == "#UD"


@pytest.mark.parametrize(
    "call",
    [
        lambda v: v.vmclear(0x2000),
        lambda v: v.vmptrld(0x2000),
        lambda v: v.vmptrst(),
        lambda v: v.vmread(0x681E),
        lambda v: v.vmwrite(0x681E, 1),
        lambda v: v.vmlaunch(),
        lambda v: v.vmresume(),
    ],
)
def test_every_instruction_outside_vmx_operation_is_ud(call) -> None:
    outcome = call(fresh_vcpu())
    assert (outcome.result, outcome.fault) == (Result.FAULT, "#UD")


# --- VMCLEAR -------------------------------------------------------------------------------------


def test_vmclear_bad_address_without_current_is_vmfail_invalid() -> None:
    vcpu = fresh_vcpu()
    vcpu.vmxon(VMXON_REGION)
    assert vcpu.vmclear(0x2001).result is Result.VMFAIL_INVALID


def test_vmclear_bad_address_with_current_is_vmfail_valid_2(root_vcpu: Vcpu) -> None:
    outcome = root_vcpu.vmclear(0x2004)
    assert (outcome.result, outcome.error) == (Result.VMFAIL_VALID, 2)
    assert error_field(root_vcpu) == 2


def test_vmclear_of_vmxon_pointer_is_error_3(root_vcpu: Vcpu) -> None:
    assert root_vcpu.vmclear(VMXON_REGION).error == 3


def test_vmclear_of_current_vmcs_makes_it_not_current_and_clear(ready_vcpu: Vcpu) -> None:
    assert ready_vcpu.vmlaunch().ok
    ready_vcpu.vm_exit(ExitRecord(reason=10))
    region = ready_vcpu.memory.region(VMCS_REGION)
    assert region.launch_state is LaunchState.LAUNCHED
    assert ready_vcpu.vmclear(VMCS_REGION).ok
    assert region.launch_state is LaunchState.CLEAR
    assert ready_vcpu.vmptrst().value == INVALID_POINTER


# --- VMPTRLD / VMPTRST ---------------------------------------------------------------------------


def test_vmptrld_errors_9_10_11(root_vcpu: Vcpu) -> None:
    assert root_vcpu.vmptrld(0x3008).error == 9
    assert root_vcpu.vmptrld(1 << 46).error == 9
    assert root_vcpu.vmptrld(VMXON_REGION).error == 10
    assert root_vcpu.vmptrld(0x5000).error == 11  # no revision id written there
    assert error_field(root_vcpu) == 11


def test_vmptrld_without_current_fails_invalid() -> None:
    vcpu = fresh_vcpu()
    vcpu.vmxon(VMXON_REGION)
    assert vcpu.vmptrld(0x5000).result is Result.VMFAIL_INVALID


def test_vmptrld_shadow_indicator_needs_vmcs_shadowing() -> None:
    for shadowing, expected in ((False, Result.VMFAIL_INVALID), (True, Result.VMSUCCEED)):
        vcpu = fresh_vcpu(vmcs_shadowing=shadowing)
        vcpu.vmxon(VMXON_REGION)
        vcpu.memory.write32(0x3000, vcpu.capabilities.revision_id | 1 << 31)
        assert vcpu.vmptrld(0x3000).result is expected


def test_vmptrst_reports_the_current_pointer(root_vcpu: Vcpu) -> None:
    assert root_vcpu.vmptrst().value == VMCS_REGION


def test_a_vmcs_cleared_on_one_vcpu_loads_on_another_with_its_values(ready_vcpu: Vcpu) -> None:
    assert ready_vcpu.vmwrite(ENC["GUEST_RIP"], 0xABCD).ok
    assert ready_vcpu.vmclear(VMCS_REGION).ok
    other = Vcpu(memory=ready_vcpu.memory)
    other.memory.write32(0x7000, other.capabilities.revision_id)
    assert other.vmxon(0x7000).ok
    assert other.vmptrld(VMCS_REGION).ok
    assert other.vmread(ENC["GUEST_RIP"]).value == 0xABCD


# --- VMREAD / VMWRITE ----------------------------------------------------------------------------


def test_vmread_without_current_vmcs_is_vmfail_invalid() -> None:
    vcpu = fresh_vcpu()
    vcpu.vmxon(VMXON_REGION)
    assert vcpu.vmread(ENC["GUEST_RIP"]).result is Result.VMFAIL_INVALID
    assert vcpu.vmwrite(ENC["GUEST_RIP"], 1).result is Result.VMFAIL_INVALID


@pytest.mark.parametrize("encoding", [0x681F, 0x0001, 0x7FFF, 1 << 32, 0x6C1E])
def test_unsupported_component_is_error_12(root_vcpu: Vcpu, encoding: int) -> None:
    assert root_vcpu.vmread(encoding).error == 12
    assert root_vcpu.vmwrite(encoding, 0).error == 12
    assert error_field(root_vcpu) == 12


def test_shadowing_bitmaps_exist_only_with_vmcs_shadowing() -> None:
    assert make_root_vcpu().vmread(ENC["VMREAD_BITMAP"]).error == 12
    shadowing = make_root_vcpu(Capabilities(vmcs_shadowing=True))
    assert shadowing.vmread(ENC["VMREAD_BITMAP"]).ok


def test_vmwrite_to_read_only_is_error_13_unless_misc_bit_29(root_vcpu: Vcpu) -> None:
    assert root_vcpu.vmwrite(ENC["VM_EXIT_REASON"], 1).error == 13
    assert error_field(root_vcpu) == 13
    permissive = make_root_vcpu(Capabilities(vmx_misc_bit29=True))
    assert permissive.vmwrite(ENC["VM_EXIT_REASON"], 1).ok
    assert permissive.vmread(ENC["VM_EXIT_REASON"]).value == 1


def test_vmwrite_truncates_to_width(root_vcpu: Vcpu) -> None:
    root_vcpu.vmwrite(ENC["GUEST_CS_SELECTOR"], 0x12345)
    assert root_vcpu.vmread(ENC["GUEST_CS_SELECTOR"]).value == 0x2345
    root_vcpu.vmwrite(ENC["GUEST_CS_LIMIT"], 0x1_FFFF_FFFF)
    assert root_vcpu.vmread(ENC["GUEST_CS_LIMIT"]).value == 0xFFFF_FFFF


def test_high_half_reads_and_writes_bits_63_32(root_vcpu: Vcpu) -> None:
    root_vcpu.vmwrite(ENC["TSC_OFFSET"], 0x1122_3344_5566_7788)
    assert root_vcpu.vmread(ENC["TSC_OFFSET_HIGH"]).value == 0x1122_3344
    root_vcpu.vmwrite(ENC["TSC_OFFSET_HIGH"], 0xAABB_CCDD_0000_0001)
    assert root_vcpu.vmread(ENC["TSC_OFFSET"]).value == 0x0000_0001_5566_7788


def test_operands_wider_than_64_bits_are_rejected(root_vcpu: Vcpu) -> None:
    from vmxsim_server.vmx import InvalidArgument

    with pytest.raises(InvalidArgument):
        root_vcpu.vmwrite(ENC["GUEST_RIP"], 1 << 64)
    with pytest.raises(InvalidArgument):
        root_vcpu.vmptrld(-1)


# --- VMLAUNCH / VMRESUME and the entry checks ----------------------------------------------------


def test_vmlaunch_without_current_vmcs_is_vmfail_invalid() -> None:
    vcpu = fresh_vcpu()
    vcpu.vmxon(VMXON_REGION)
    assert vcpu.vmlaunch().result is Result.VMFAIL_INVALID


def test_vmlaunch_with_empty_controls_is_error_7(root_vcpu: Vcpu) -> None:
    outcome = root_vcpu.vmlaunch()
    assert (outcome.result, outcome.error) == (Result.VMFAIL_VALID, 7)
    assert "pin-based" in (outcome.message or "")


def test_vmlaunch_with_bad_host_state_is_error_8(ready_vcpu: Vcpu) -> None:
    ready_vcpu.vmwrite(ENC["HOST_CR0"], 0x21)  # PG clear
    outcome = ready_vcpu.vmlaunch()
    assert (outcome.result, outcome.error) == (Result.VMFAIL_VALID, 8)
    assert error_field(ready_vcpu) == 8


def test_vmlaunch_with_bad_guest_state_fails_as_exit_33_with_bit_31(ready_vcpu: Vcpu) -> None:
    ready_vcpu.vmwrite(ENC["VMCS_LINK_POINTER"], 0)
    outcome = ready_vcpu.vmlaunch()
    assert outcome.result is Result.ENTRY_FAILED
    assert outcome.exit_reason == 0x8000_0021
    assert ready_vcpu.vmread(ENC["VM_EXIT_REASON"]).value == 0x8000_0021
    assert ready_vcpu.mode is Mode.ROOT
    assert ready_vcpu.memory.region(VMCS_REGION).launch_state is LaunchState.CLEAR


def test_launch_exit_resume_cycle(ready_vcpu: Vcpu) -> None:
    assert ready_vcpu.vmlaunch().ok
    assert ready_vcpu.mode is Mode.NON_ROOT
    ready_vcpu.vm_exit(ExitRecord(reason=10, rip=0x1234, instruction_len=2))
    assert ready_vcpu.mode is Mode.ROOT
    assert ready_vcpu.vmread(ENC["VM_EXIT_REASON"]).value == 10
    assert ready_vcpu.vmread(ENC["GUEST_RIP"]).value == 0x1234
    assert ready_vcpu.vmread(ENC["VM_EXIT_INSTRUCTION_LEN"]).value == 2
    assert ready_vcpu.vmresume().ok


def test_vmlaunch_of_launched_vmcs_is_error_4(ready_vcpu: Vcpu) -> None:
    ready_vcpu.vmlaunch()
    ready_vcpu.vm_exit(ExitRecord(reason=12))
    assert ready_vcpu.vmlaunch().error == 4


def test_vmresume_of_clear_vmcs_is_error_5(ready_vcpu: Vcpu) -> None:
    assert ready_vcpu.vmresume().error == 5


def test_vmresume_after_vmxoff_and_vmxon_is_error_6(ready_vcpu: Vcpu) -> None:
    ready_vcpu.vmlaunch()
    ready_vcpu.vm_exit(ExitRecord(reason=12))
    assert ready_vcpu.vmxoff().ok
    assert ready_vcpu.vmxon(VMXON_REGION).ok
    assert ready_vcpu.vmptrld(VMCS_REGION).ok
    assert ready_vcpu.vmresume().error == 6


def test_vmx_instruction_in_non_root_causes_a_vm_exit(ready_vcpu: Vcpu) -> None:
    ready_vcpu.vmlaunch()
    outcome = ready_vcpu.vmread(ENC["GUEST_RIP"])
    assert (outcome.result, outcome.exit_reason) == (Result.VM_EXIT, 23)
    assert ready_vcpu.mode is Mode.ROOT
    assert ready_vcpu.vmread(ENC["VM_EXIT_REASON"]).value == 23


def test_ept_exit_writes_guest_physical_address(ready_vcpu: Vcpu) -> None:
    ready_vcpu.vmlaunch()
    ready_vcpu.vm_exit(
        ExitRecord(reason=48, guest_physical_address=0xFEE0_0000, qualification=0x181)
    )
    assert ready_vcpu.vmread(ENC["GUEST_PHYSICAL_ADDRESS"]).value == 0xFEE0_0000
    assert ready_vcpu.vmread(ENC["EXIT_QUALIFICATION"]).value == 0x181


def test_exit_without_running_guest_is_a_state_error(root_vcpu: Vcpu) -> None:
    from vmxsim_server.vmx import StateError

    with pytest.raises(StateError):
        root_vcpu.vm_exit(ExitRecord(reason=10))


def test_valid_state_passes_every_entry_check() -> None:
    vcpu = make_root_vcpu()
    load_valid_state(vcpu)
    assert vcpu.vmlaunch().ok
