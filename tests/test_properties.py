"""Hypothesis properties of the VMCS and the VMX instruction state machine."""

from __future__ import annotations

from conftest import VMCS_REGION, VMXON_REGION, load_valid_state, make_root_vcpu
from hypothesis import given, settings
from hypothesis import strategies as st

from vmxsim_server.vmx import (
    ALL_FIELDS,
    Access,
    ExitRecord,
    Kind,
    LaunchState,
    Mode,
    Result,
    StateError,
    Vcpu,
)
from vmxsim_server.vmx.capabilities import EVERY_FEATURE
from vmxsim_server.vmx.fields import BY_NAME

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
PERMISSIVE = EVERY_FEATURE.with_changes(vmx_misc_bit29=True)  # every field exists


@given(field=st.sampled_from(ALL_FIELDS), value=U64)
def test_write_then_read_truncates_to_width(field, value: int) -> None:
    vcpu = make_root_vcpu(PERMISSIVE)
    assert vcpu.vmwrite(field.encoding, value).ok
    width_bits = 32 if field.access is Access.HIGH else field.width.bits
    assert vcpu.vmread(field.encoding).value == value & ((1 << width_bits) - 1)


@given(
    field=st.sampled_from([f for f in ALL_FIELDS if f.access is Access.HIGH]), full=U64, high=U64
)
def test_high_and_full_halves_agree(field, full: int, high: int) -> None:
    vcpu = make_root_vcpu(PERMISSIVE)
    full_encoding = field.encoding & ~1
    vcpu.vmwrite(full_encoding, full)
    assert vcpu.vmread(field.encoding).value == full >> 32
    vcpu.vmwrite(field.encoding, high)
    combined = vcpu.vmread(full_encoding).value
    assert combined == (full & 0xFFFF_FFFF) | ((high & 0xFFFF_FFFF) << 32)


ADDRESSES = st.sampled_from([VMXON_REGION, VMCS_REGION, 0x3000, 0x3001, 1 << 46])
ENCODINGS = st.sampled_from(
    [BY_NAME[n].encoding for n in ("GUEST_RIP", "VM_EXIT_REASON", "TSC_OFFSET_HIGH", "HOST_CR0")]
    + [0x681F, 0x7FFE]
)
OPS = st.one_of(
    st.tuples(st.just("vmxon"), ADDRESSES),
    st.tuples(st.just("vmxoff")),
    st.tuples(st.just("vmclear"), ADDRESSES),
    st.tuples(st.just("vmptrld"), ADDRESSES),
    st.tuples(st.just("vmptrst")),
    st.tuples(st.just("vmread"), ENCODINGS),
    st.tuples(st.just("vmwrite"), ENCODINGS, U64),
    st.tuples(st.just("vmlaunch")),
    st.tuples(st.just("vmresume")),
    st.tuples(st.just("exit"), st.integers(min_value=0, max_value=77)),
    st.tuples(st.just("setup")),
)


def _launch_states(vcpu: Vcpu) -> dict[int, LaunchState]:
    return {a: r.launch_state for a, r in vcpu.memory.regions().items()}


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, max_size=40))
def test_random_instruction_sequences_keep_the_invariants(ops) -> None:
    vcpu = Vcpu()
    for address in (VMXON_REGION, VMCS_REGION, 0x3000):
        vcpu.memory.write32(address, vcpu.capabilities.revision_id)
    error_bit = BY_NAME["VM_INSTRUCTION_ERROR"].bit
    for name, *operands in ops:
        before_states = _launch_states(vcpu)
        before_errors = {a: r.values[error_bit] for a, r in vcpu.memory.regions().items()}
        current_before = vcpu.current
        outcome = None
        if name == "exit":
            try:
                vcpu.vm_exit(ExitRecord(reason=operands[0]))
            except StateError:
                assert vcpu.mode is not Mode.NON_ROOT
        elif name == "setup":
            if vcpu.mode is Mode.ROOT and vcpu.current is not None:
                load_valid_state(vcpu)
        else:
            outcome = getattr(vcpu, name)(*operands)
        # at most one current VMCS, and it is the region at the current pointer
        if vcpu.current is not None:
            assert vcpu.memory.region(vcpu.current_pointer) is vcpu.current
            assert vcpu.mode is not Mode.OFF
        # launch state changes only through VMLAUNCH and VMCLEAR
        if _launch_states(vcpu) != {
            a: before_states.get(a, LaunchState.CLEAR) for a in _launch_states(vcpu)
        }:
            assert name in ("vmlaunch", "vmclear")
        # VM_INSTRUCTION_ERROR is written exactly on VMfailValid
        after_errors = {a: r.values[error_bit] for a, r in vcpu.memory.regions().items()}
        if outcome is not None and outcome.result is Result.VMFAIL_VALID:
            assert current_before is not None
            assert current_before.values[error_bit] == outcome.error
        else:
            assert all(after_errors[a] == before_errors.get(a, 0) for a in after_errors)
        if outcome is not None and outcome.result is Result.VMFAIL_VALID:
            assert outcome.error is not None
        assert outcome is None or outcome.result in set(Result)


def test_vm_instruction_error_is_read_only_data() -> None:
    vcpu = make_root_vcpu()
    field = BY_NAME["VM_INSTRUCTION_ERROR"]
    assert field.kind is Kind.READ_ONLY
    assert vcpu.vmwrite(field.encoding, 5).error == 13
