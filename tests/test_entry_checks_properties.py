"""Hypothesis properties of the VM-entry check table: valid variations of ``valid_state`` pass
every check (and VMLAUNCH succeeds), and the stages keep the processor's order."""

from __future__ import annotations

from conftest import make_root_vcpu
from entry_check_examples import EXAMPLES, D
from hypothesis import given, settings
from hypothesis import strategies as st
from test_entry_checks import Example, run, state_of

from vmxsim_server.vmx import ExitRecord, Mode, Result
from vmxsim_server.vmx.entry_checks import BY_ID, Stage, evaluate, valid_state
from vmxsim_server.vmx.fields import BY_NAME, Kind

CANONICAL = st.one_of(
    st.integers(0, (1 << 47) - 1), st.integers(0xFFFF_8000_0000_0000, (1 << 64) - 1)
)
LOW32 = st.integers(0, 0xFFFF_FFFF)


@st.composite
def limit_and_granularity(draw: st.DrawFn) -> tuple[int, int]:
    """A segment limit and the G bit that matches it (27.3.1.2)."""
    if draw(st.booleans()):  # byte granularity: any limit below 1 MiB
        return draw(st.integers(0, 0xF_FFFF)), 0
    return draw(st.integers(0, 0xF_FFFF)) << 12 | 0xFFF, 1 << 15  # 4 KiB granularity


@st.composite
def valid_variations(draw: st.DrawFn) -> dict[str, int]:
    """Changes a hypervisor may make to a 64-bit guest that keep it valid."""
    changes: dict[str, int] = {}
    for seg in ("DS", "ES", "SS"):
        limit, g = draw(limit_and_granularity())
        dpl = draw(st.integers(0, 3)) if seg != "SS" else 0
        rpl = draw(st.integers(0, dpl)) if seg != "SS" else 0
        kind = draw(st.sampled_from([3, 7] if seg == "SS" else [1, 3, 5, 7, 11, 15]))
        changes |= {
            f"GUEST_{seg}_BASE": draw(LOW32),
            f"GUEST_{seg}_LIMIT": limit,
            f"GUEST_{seg}_SELECTOR": draw(st.integers(0, 0x1FFF)) << 3 | rpl,
            f"GUEST_{seg}_AR_BYTES": g | 1 << 14 | 1 << 7 | dpl << 5 | 1 << 4 | kind,
        }
    for seg in ("FS", "GS"):
        changes[f"GUEST_{seg}_BASE"] = draw(CANONICAL)
    tr_limit, tr_g = draw(limit_and_granularity())
    changes |= {
        "GUEST_TR_BASE": draw(CANONICAL),
        "GUEST_TR_LIMIT": tr_limit,
        "GUEST_TR_AR_BYTES": tr_g | 0x8B,
        "GUEST_GDTR_BASE": draw(CANONICAL),
        "GUEST_GDTR_LIMIT": draw(st.integers(0, 0xFFFF)),
        "GUEST_IDTR_BASE": draw(CANONICAL),
        "GUEST_IDTR_LIMIT": draw(st.integers(0, 0xFFFF)),
        "GUEST_RIP": draw(CANONICAL),
        "GUEST_RSP": draw(st.integers(0, (1 << 64) - 1)),
        # IF, DF, OF, the arithmetic flags, IOPL, NT, RF, AC, VIF, VIP, ID (no TF, no VM)
        "GUEST_RFLAGS": 2 | draw(st.integers(0, 0x3F7FD7)) & 0x3D7ED5,
        "GUEST_CR3": draw(st.integers(0, (1 << 46) - 1)) & ~0xFFF,
        "GUEST_SYSENTER_ESP": draw(CANONICAL),
        "GUEST_SYSENTER_EIP": draw(CANONICAL),
        "HOST_FS_BASE": draw(CANONICAL),
        "HOST_GS_BASE": draw(CANONICAL),
        "HOST_RIP": draw(CANONICAL),
        "HOST_CR3": draw(st.integers(0, (1 << 46) - 1)) & ~0xFFF,
        "CR3_TARGET_COUNT": draw(st.integers(0, D.cr3_target_count)),
    }
    if draw(st.booleans()):  # an unusable data segment instead
        changes["GUEST_ES_AR_BYTES"] = 1 << 16
    return changes


@settings(max_examples=150, deadline=None)
@given(changes=valid_variations())
def test_valid_variations_pass_every_check_and_enter(changes: dict[str, int]) -> None:
    example = Example(lambda s: changes)
    report = run(example)
    assert report.failures == (), [f.message for f in report.failures]
    vcpu = make_root_vcpu()
    for name, value in state_of(example).items():
        assert vcpu.vmwrite(BY_NAME[name].encoding, value).ok
    assert vcpu.vmlaunch().ok
    assert vcpu.mode is Mode.NON_ROOT


def _ids(stage: Stage) -> list[str]:
    """The stage's examples that need only fields (default capabilities, no memory, no vCPU)."""

    def plain(check_id: str) -> bool:
        example = EXAMPLES[check_id]
        if example.caps != D or example.memory or example.vcpu:
            return False
        # a guest-state example must not touch controls (it could repair the broken control)
        touched = example.change(valid_state(D))
        return stage is not Stage.GUEST or all(BY_NAME[n].kind is not Kind.CONTROL for n in touched)

    return [i for i in EXAMPLES if BY_ID[i].stage is stage and plain(i)]


@settings(max_examples=60, deadline=None)
@given(control=st.sampled_from(_ids(Stage.CONTROL)), guest=st.sampled_from(_ids(Stage.GUEST)))
def test_a_broken_control_fails_before_broken_guest_state(control: str, guest: str) -> None:
    base = valid_state(D)
    control_changes = EXAMPLES[control].change(base)
    guest_changes = EXAMPLES[guest].change(base)
    changes = guest_changes | control_changes
    vcpu = make_root_vcpu()
    for name, value in valid_state(D, **changes).items():
        assert vcpu.vmwrite(BY_NAME[name].encoding, value).ok
    outcome = vcpu.vmlaunch()
    assert outcome.result is Result.VMFAIL_VALID and outcome.error == 7, outcome
    assert vcpu.mode is Mode.ROOT


@settings(max_examples=40, deadline=None)
@given(host=st.sampled_from(_ids(Stage.HOST)), guest=st.sampled_from(_ids(Stage.GUEST)))
def test_broken_host_state_fails_before_broken_guest_state(host: str, guest: str) -> None:
    base = valid_state(D)
    changes = EXAMPLES[guest].change(base) | EXAMPLES[host].change(base)
    vcpu = make_root_vcpu()
    for name, value in valid_state(D, **changes).items():
        assert vcpu.vmwrite(BY_NAME[name].encoding, value).ok
    outcome = vcpu.vmlaunch()
    assert outcome.result is Result.VMFAIL_VALID and outcome.error == 8, outcome


STEP_IDS = [i for stage in (Stage.CONTROL, Stage.HOST, Stage.GUEST) for i in _ids(stage)]


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.sampled_from([None, *STEP_IDS]), min_size=1, max_size=6))
def test_re_entry_checks_only_what_changed_and_still_finds_every_failure(
    steps: list[str | None],
) -> None:
    """VMRESUME after a passing entry runs only the checks whose fields changed (incremental);
    its outcome must equal a full evaluation of the same VMCS every time."""
    vcpu = make_root_vcpu()
    base = valid_state(D)
    for name, value in base.items():
        assert vcpu.vmwrite(BY_NAME[name].encoding, value).ok
    assert vcpu.vmlaunch().ok
    for step in steps:
        if vcpu.mode is Mode.NON_ROOT:
            vcpu.vm_exit(ExitRecord(reason=10, rip=0x1000))
        changes = EXAMPLES[step].change(base) if step else {}
        for name, value in valid_state(D, **changes).items():
            assert vcpu.vmwrite(BY_NAME[name].encoding, value).ok
        full = evaluate(vcpu.entry_values(), D, vcpu.memory, launch=False, stop_at_first=True)
        outcome = vcpu.vmresume()
        if full.failures:
            assert outcome.message == full.failures[0].message
            assert not outcome.ok
        else:
            assert outcome.ok, outcome
