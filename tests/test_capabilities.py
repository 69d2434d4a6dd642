"""Capabilities model every IA32_VMX_* MSR (SDM appendix A); VM entry checks the controls against
the TRUE_* MSRs when IA32_VMX_BASIC bit 55 is set."""

from __future__ import annotations

import pytest
from conftest import make_root_vcpu
from hypothesis import given
from hypothesis import strategies as st

from vmxsim_server.vmx import Result
from vmxsim_server.vmx.capabilities import (
    DEFAULT_CAPABILITIES,
    EVERY_FEATURE,
    MSR_NAMES,
    Capabilities,
)
from vmxsim_server.vmx.entry_checks import valid_state
from vmxsim_server.vmx.fields import BY_NAME, FIELDS

CR3_LOAD_STORE_EXITING = 3 << 15


def test_every_ia32_vmx_msr_is_modelled() -> None:
    msrs = DEFAULT_CAPABILITIES.msrs()
    assert set(msrs) == set(MSR_NAMES) == set(range(0x480, 0x494))
    assert msrs[0x480] >> 55 & 1 == 1  # TRUE_* controls
    assert msrs[0x480] & 0x7FFF_FFFF == DEFAULT_CAPABILITIES.revision_id
    assert msrs[0x482] & 0xFFFF_FFFF == 0x0401_E172  # default1 of the plain MSR
    assert msrs[0x48E] & 0xFFFF_FFFF == 0x0400_6172  # CR3-load/store exiting may be 0
    assert msrs[0x485] >> 16 & 0x1FF == 4 and msrs[0x485] >> 29 & 1 == 0
    assert msrs[0x486] == 0x8000_0021 and msrs[0x488] == 0x2000


def test_vmcs_enum_is_the_highest_index_of_an_offered_field() -> None:
    every = EVERY_FEATURE.msrs()[0x48A] >> 1
    assert every == max(f.index for f in FIELDS)
    assert DEFAULT_CAPABILITIES.msrs()[0x48A] >> 1 <= every


OTHERS = [
    DEFAULT_CAPABILITIES,
    EVERY_FEATURE,
    Capabilities(true_controls=False, vmcs_shadowing=True),
]


@pytest.mark.parametrize("caps", OTHERS)
def test_msrs_round_trip_through_from_msrs(caps: Capabilities) -> None:
    rebuilt = Capabilities.from_msrs(caps.msrs(), maxphyaddr=caps.maxphyaddr)
    assert rebuilt.msrs() == caps.msrs()


@given(ctls=st.integers(0, (1 << 64) - 1), misc=st.integers(0, (1 << 64) - 1))
def test_from_msrs_decodes_what_rdmsr_shows(ctls: int, misc: int) -> None:
    caps = Capabilities.from_msrs({0x48E: ctls, 0x485: misc})
    assert caps.true_proc_default1 == ctls & 0xFFFF_FFFF and caps.proc_allowed1 == ctls >> 32
    assert caps.cr3_target_count == misc >> 16 & 0x1FF
    # modelled: timer rate, store LMA, activity states, CR3 targets, MSR-list size, bits 29, 30
    assert caps.vmx_misc == misc & 0x6FFF_01FF


def test_from_msrs_rejects_what_is_not_a_vmx_capability_msr() -> None:
    with pytest.raises(ValueError, match="0x3a"):
        Capabilities.from_msrs({0x3A: 5})
    with pytest.raises(ValueError, match="64 bits"):
        Capabilities.from_msrs({0x480: 1 << 64})


def _launch_without_cr3_exiting(caps: Capabilities) -> tuple[Result, int | None]:
    vcpu = make_root_vcpu(caps)
    state = valid_state(caps)
    state["CPU_BASED_VM_EXEC_CONTROL"] &= ~CR3_LOAD_STORE_EXITING
    for name, value in state.items():
        assert vcpu.vmwrite(BY_NAME[name].encoding, value).ok
    outcome = vcpu.vmlaunch()
    return outcome.result, outcome.error


def test_true_controls_let_an_ept_hypervisor_clear_cr3_exiting() -> None:
    assert _launch_without_cr3_exiting(DEFAULT_CAPABILITIES) == (Result.VMSUCCEED, None)
    without_true = Capabilities(true_controls=False)
    assert _launch_without_cr3_exiting(without_true) == (Result.VMFAIL_VALID, 7)


def test_capability_values_are_validated() -> None:
    with pytest.raises(ValueError, match="linear-address width"):
        Capabilities(linear_address_width=52)
    with pytest.raises(ValueError, match="true_proc_default1"):
        Capabilities(true_proc_default1=1 << 32)
