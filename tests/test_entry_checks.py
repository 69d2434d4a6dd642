"""The VM-entry check table: one example per check (evaluate and a real VMLAUNCH/VMRESUME give
that check's outcome and nothing else fails), the table's own invariants, and the order of the
stages."""

from __future__ import annotations

import pytest
from conftest import VMCS_REGION, make_root_vcpu
from entry_check_examples import EXAMPLES, Example

from vmxsim_server.vmx import Mode, PhysicalMemory, Vcpu
from vmxsim_server.vmx.capabilities import DEFAULT_CAPABILITIES, Capabilities
from vmxsim_server.vmx.entry_checks import (
    BY_ID,
    CHECKS,
    Failure,
    Report,
    Stage,
    UnknownField,
    Values,
    evaluate,
    valid_state,
)
from vmxsim_server.vmx.fields import BY_NAME
from vmxsim_server.vmx.records import ExitRecord


def _pseudo(example: Example) -> dict[str, int]:
    base = {
        "@current_vmcs": 1,
        "@current_vmcs_pointer": VMCS_REGION,
        "@shadow_indicator": 0,
        "@mov_ss_blocking": 0,
        "@launch_state": int(example.resume),
        "@vmxon_epoch_ok": 1,
    }
    return base | example.vcpu


def state_of(example: Example) -> dict[str, int]:
    return valid_state(example.caps, **example.change(valid_state(example.caps)))


def memory_of(example: Example) -> PhysicalMemory:
    memory = PhysicalMemory(example.caps.maxphyaddr)
    memory.write32(VMCS_REGION, example.caps.revision_id)
    for address, word in example.memory.items():
        memory.write32(address, word)
    return memory


def accessor(state: dict[str, int], pseudo: dict[str, int], read: set[str] | None = None) -> Values:
    """A Values accessor over a whole VMCS: fields not in ``state`` are 0, as in a VMCS region."""

    def value(name: str) -> int:
        if read is not None:
            read.add(name)
        if name.startswith("@"):
            if name not in pseudo:
                raise UnknownField(name)
            return pseudo[name]
        BY_NAME[name]  # a typo in a check is a KeyError, not a silent 0
        return state.get(name, 0)

    return value


def run(example: Example, read: set[str] | None = None) -> Report:
    return evaluate(
        accessor(state_of(example), _pseudo(example), read),
        example.caps,
        memory_of(example),
        launch=not example.resume,
    )


def test_every_check_has_an_example() -> None:
    assert set(EXAMPLES) == set(BY_ID), set(BY_ID) ^ set(EXAMPLES)


def test_ids_are_unique_and_the_stages_come_in_sdm_order() -> None:
    assert len(BY_ID) == len(CHECKS)
    order = list(Stage)
    stages = [order.index(check.stage) for check in CHECKS]
    assert stages == sorted(stages)
    assert all(check.section.startswith(("27.", "31.")) for check in CHECKS)


@pytest.mark.parametrize("caps", [DEFAULT_CAPABILITIES, Capabilities(true_controls=False),
                                  Capabilities(vmcs_shadowing=True, maxphyaddr=39)])  # fmt: skip
def test_valid_state_passes_every_check(caps: Capabilities) -> None:
    report = evaluate(accessor(valid_state(caps), _pseudo(Example(dict))), caps, memory_of(
        Example(dict, caps=caps)))  # fmt: skip
    assert report.failures == () and report.not_checked == ()
    assert len(report.passed) == len(CHECKS)


@pytest.mark.parametrize("check_id", list(EXAMPLES))
def test_example_breaks_exactly_its_check(check_id: str) -> None:
    report = run(EXAMPLES[check_id])
    assert [f.check.id for f in report.failures] == [check_id], [f.message for f in report.failures]
    assert report.not_checked == ()
    failure = report.failures[0]
    assert failure.outcome == BY_ID[check_id].outcome
    assert failure.message and "{" not in failure.message


@pytest.mark.parametrize("check_id", list(EXAMPLES))
def test_a_check_reads_only_its_declared_fields(check_id: str) -> None:
    read: set[str] = set()
    run(EXAMPLES[check_id], read)
    check = BY_ID[check_id]
    read_by_check: set[str] = set()
    example = EXAMPLES[check_id]
    value = accessor(state_of(example), _pseudo(example), read_by_check)
    evaluate(value, example.caps, memory_of(example), launch=not example.resume, checks=(check,))
    fields = {name for name in read_by_check if not name.startswith("@")}
    assert fields <= set(check.fields), fields - set(check.fields)


# --- the same examples through a real vCPU's VMLAUNCH / VMRESUME ---------------------------------


def _launched_then_exited(vcpu: Vcpu) -> None:
    assert vcpu.vmlaunch().ok
    vcpu.vm_exit(ExitRecord(reason=10))


def _vcpu_for(example: Example, check_id: str) -> tuple[Vcpu, bool]:
    """A vCPU in VMX root operation set up as the example says; returns it and VMLAUNCH?"""
    vcpu = make_root_vcpu(example.caps)
    for name, value in state_of(example).items():
        assert vcpu.vmwrite(BY_NAME[name].encoding, value).ok, name
    for address, word in example.memory.items():
        vcpu.memory.write32(address, word)
    if check_id == "basic.current_vmcs":
        assert vcpu.vmclear(VMCS_REGION).ok
    elif check_id == "basic.shadow_vmcs":
        vcpu.memory.write32(VMCS_REGION, example.caps.revision_id | 1 << 31)
        assert vcpu.vmptrld(VMCS_REGION).ok
    elif check_id == "basic.mov_ss_blocking":
        vcpu.mov_ss_blocking = True
    elif check_id == "basic.launch_state.clear":
        _launched_then_exited(vcpu)
    elif check_id == "basic.vmxoff_since_launch":
        _launched_then_exited(vcpu)
        assert vcpu.vmxoff().ok and vcpu.vmxon(0x1000).ok and vcpu.vmptrld(VMCS_REGION).ok
    return vcpu, not example.resume


def _assert_outcome(vcpu: Vcpu, failure: Failure, result: object) -> None:
    kind, _, number = failure.outcome.partition(" ")
    assert result.result.value == kind, (result, failure.message)  # type: ignore[attr-defined]
    assert result.message == failure.message  # type: ignore[attr-defined]
    if kind == "VMfailValid":
        assert result.error == int(number)  # type: ignore[attr-defined]
        assert vcpu.vmread(BY_NAME["VM_INSTRUCTION_ERROR"].encoding).value == int(number)
    if kind == "entry-failed":
        assert result.exit_reason == int(number, 16)  # type: ignore[attr-defined]
        assert vcpu.vmread(BY_NAME["VM_EXIT_REASON"].encoding).value == int(number, 16)
        qualification = vcpu.vmread(BY_NAME["EXIT_QUALIFICATION"].encoding).value
        assert qualification == failure.qualification
    assert vcpu.mode is Mode.ROOT


@pytest.mark.parametrize("check_id", list(EXAMPLES))
def test_vmlaunch_gives_the_check_outcome(check_id: str) -> None:
    example = EXAMPLES[check_id]
    expected = run(example).failures[0]
    vcpu, launch = _vcpu_for(example, check_id)
    result = vcpu.vmlaunch() if launch else vcpu.vmresume()
    _assert_outcome(vcpu, expected, result)


def test_msr_load_failure_names_the_entry_in_the_exit_qualification() -> None:
    failure = run(EXAMPLES["msr_load.entry"]).failures[0]
    assert failure.outcome == "entry-failed 0x80000022"
    assert failure.qualification == 2
    assert "entry 2" in failure.message and "0xc0000100" in failure.message


def test_guest_failures_carry_the_sdm_exit_qualification() -> None:
    assert run(EXAMPLES["guest.pdpte.fields"]).failures[0].qualification == 2
    assert run(EXAMPLES["guest.interruptibility.nmi_sti"]).failures[0].qualification == 3
    assert run(EXAMPLES["guest.link_pointer.address"]).failures[0].qualification == 4
    assert run(EXAMPLES["guest.tr.unusable"]).failures[0].qualification == 0


def test_stop_at_first_stops_at_the_processor_first_failure() -> None:
    example = EXAMPLES["control.cr3_target_count"]
    state = state_of(example) | {"GUEST_TR_AR_BYTES": 0x1_008B}
    full = evaluate(accessor(state, _pseudo(example)), example.caps, memory_of(example))
    first = evaluate(
        accessor(state, _pseudo(example)), example.caps, memory_of(example), stop_at_first=True
    )
    assert [f.check.id for f in full.failures] == ["control.cr3_target_count", "guest.tr.unusable"]
    assert [f.check.id for f in first.failures] == ["control.cr3_target_count"]


def test_unknown_values_make_a_check_not_checked_never_passed() -> None:
    state = valid_state(DEFAULT_CAPABILITIES)
    del state["GUEST_TR_AR_BYTES"]

    def value(name: str) -> int:
        if name in state:
            return state[name]
        raise UnknownField(name)

    report = evaluate(value, DEFAULT_CAPABILITIES)
    not_checked = {n.check.id: n.missing for n in report.not_checked}
    assert not_checked["guest.tr.unusable"] == ("GUEST_TR_AR_BYTES",)
    assert not_checked["basic.current_vmcs"] == ("@current_vmcs",)
    assert not_checked["guest.pdpte.memory"] == ("@memory",)  # no memory given
    assert "guest.tr.unusable" not in {c.id for c in report.passed}
    assert report.failures == ()


def test_a_vcpu_answers_every_value_the_checks_read() -> None:
    vcpu = make_root_vcpu()
    for name, value in valid_state(vcpu.capabilities).items():
        assert vcpu.vmwrite(BY_NAME[name].encoding, value).ok
    report = evaluate(vcpu.entry_values(), vcpu.capabilities, vcpu.memory)
    assert report.not_checked == () and report.failures == ()


def test_valid_state_overrides_are_checked_names_and_kept() -> None:
    with pytest.raises(KeyError, match="GUEST_NOPE"):
        valid_state(DEFAULT_CAPABILITIES, GUEST_NOPE=1)
    state = valid_state(DEFAULT_CAPABILITIES, GUEST_IA32_PKRS=1, GUEST_RIP=0x1234)
    assert state["GUEST_RIP"] == 0x1234 and state["GUEST_IA32_PKRS"] == 1
    assert "EPT_POINTER" not in valid_state(Capabilities(secondary_allowed1=0))
