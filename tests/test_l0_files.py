"""The L1 instruction rows of profiles and the L0 model files: shipped ones load, every row and
price carries its source, bad ones are named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmxsim_server.vmx import InvalidArgument, ProfileError
from vmxsim_server.vmx.l0 import available_l0_models, load_l0, parse_l0
from vmxsim_server.vmx.l1_instructions import MSRS, OPS, OPS_TABLE, operand_of
from vmxsim_server.vmx.profiles import available_profiles, load_profile, parse_profile

PROFILE = """
schema = 1
name = "mini"
default_l0 = "kvm-modern"
[after_exit]
read = ["VM_EXIT_REASON"]
instructions = [
  { op = "RDMSR", operand = "0xc0000080", source = "vmx.c save_msrs" },
  { op = "MOV_FROM_DR", operand = "dr7", count = 2, source = "vmx.c save_dr" },
]
[vmcs_load]
instructions = [{ op = "MOV_TO_CR", operand = "CR4", source = "cpu.c vmxroot_enter" }]
[handlers.APIC_ACCESS]
panic = true
source = "vcpu.c null_handler"
[handlers.INTERRUPT_WINDOW]
entry_read = ["GUEST_RFLAGS", "GUEST_INTERRUPTIBILITY_INFO"]
"""

L0 = """
schema = 1
name = "mini-l0"
[base]
nested_l2_exit_cycles = { value = 9000, status = "sourced", source = "a paper" }
l1_exit_roundtrip_cycles = { value = 1000, status = "derived", source = "from the paper" }
[shadow]
available = true
read = ["GUEST_RIP"]
write = ["GUEST_RIP"]
[msr]
read_passthrough = ["IA32_FS_BASE"]
[instructions.default]
cost_cycles = { value = 0, status = "assumption", source = "nothing known" }
[instructions.MOV_TO_CR]
operands = { CR3 = "never" }
cost_cycles = { value = 10, status = "assumption", source = "guess" }
"""


def test_instruction_rows_load_normalised_with_their_sources() -> None:
    profile = parse_profile(PROFILE, "<string>")
    rows = profile.after_exit.instructions
    assert [(r.op, r.operand, r.count) for r in rows] == [
        ("RDMSR", "IA32_EFER", 1),
        ("MOV_FROM_DR", "DR7", 2),
    ]
    assert all(r.source for r in rows)
    assert [r.cause for r in rows] == ["RDMSR", "MOV_DR"]
    assert profile.vmcs_load.instructions[0].operand == "CR4"
    assert profile.handler(0x2C).panic and not profile.handler(10).panic
    assert profile.default_l0 == "kvm-modern"
    assert [f.name for f in profile.handler(7).entry.reads] == [
        "GUEST_RFLAGS",
        "GUEST_INTERRUPTIBILITY_INFO",
    ]
    assert profile.handler(0x2C).source == "vcpu.c null_handler"


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        ((', source = "vmx.c save_msrs"', ""), "after_exit.instructions[0].source", "non-empty"),
        (('op = "RDMSR"', 'op = "FROB"'), "after_exit.instructions[0].op", "unknown op"),
        (('op = "RDMSR"', 'op = "VMREAD"'), "after_exit.instructions[0].op", "unknown op"),
        (("0xc0000080", "IA32_NOPE"), "after_exit.instructions[0].operand", "unknown MSR"),
        (('operand = "dr7"', 'operand = "CR0"'), "after_exit.instructions[1].operand", "DR0"),
        (("count = 2", "count = 0"), "after_exit.instructions[1].count", "positive"),
        (("panic = true", "panic = true\nread = ['GUEST_RIP']"), "handlers.APIC_ACCESS", "runs"),
        (("[vmcs_load]", "[vmcs_load]\nread = []"), "vmcs_load", "unknown keys"),
    ],
)
def test_bad_instruction_rows_are_named(change: tuple[str, str], key: str, problem: str) -> None:
    with pytest.raises(ProfileError, match=problem) as info:
        parse_profile(PROFILE.replace(*change), "<string>")
    assert info.value.key == key


def test_operands_are_one_key_per_register() -> None:
    assert operand_of(OPS["WRMSR"], "ia32_lstar") == "IA32_LSTAR"
    assert operand_of(OPS["WRMSR"], hex(MSRS["IA32_LSTAR"])) == "IA32_LSTAR"
    assert operand_of(OPS["WRMSR"], "0x1234") == "0x1234"
    assert operand_of(OPS["CPUID"], None) is None
    with pytest.raises(ValueError, match="no operand"):
        operand_of(OPS["CPUID"], "EAX")
    assert len({op.name for op in OPS_TABLE}) == len(OPS_TABLE)


@pytest.mark.parametrize("name", available_profiles())
def test_every_shipped_instruction_row_cites_a_source(name: str) -> None:
    profile = load_profile(name)
    sections = [profile.after_exit, profile.before_entry, profile.after_user_exit]
    sections += [profile.vmcs_load, profile.vmcs_put, profile.default]
    sections += list(profile.handlers.values())
    for section in sections:
        for row in section.instructions:
            assert row.source.strip(), (name, row)
    load_l0(profile.default_l0)  # its default L0 model exists


def test_shipped_l0_models_load_and_price_every_exiting_op_with_a_source() -> None:
    assert {"kvm-4.17", "kvm-modern"} <= set(available_l0_models())
    for name in available_l0_models():
        model = load_l0(name)
        assert model.name == name and model.sources
        for key, param in model.params.items():
            assert param.status in ("sourced", "derived", "assumption"), key
            assert param.source.strip(), key
        for op, rule in model.rules.items():
            if rule.exits != "never":
                assert "cost_cycles" in rule.prices, (name, op)


def test_an_l0_model_loads_by_path_and_reprices(tmp_path: Path) -> None:
    path = tmp_path / "mini-l0.toml"
    path.write_text(L0)
    model = load_l0(str(path))
    assert model.rule("MOV_TO_CR").operands == {"CR3": "never"}
    assert model.rule("CPUID") is model.rules["default"]
    assert model.msr_read_passthrough == {"IA32_FS_BASE"}
    cheaper = model.with_values(**{"base.l1_exit_roundtrip_cycles": 5})
    assert cheaper.base["l1_exit_roundtrip_cycles"].value == 5
    assert model.base["l1_exit_roundtrip_cycles"].value == 1000
    repriced = model.with_values(**{"instructions.MOV_TO_CR.cost_cycles": 3})
    assert repriced.rule("MOV_TO_CR").price("cost_cycles") == 3
    with pytest.raises(InvalidArgument, match="unknown L0 parameter"):
        model.with_values(nope=1)
    with pytest.raises(InvalidArgument, match="unknown L0 model"):
        load_l0("no-such-l0")


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (("[instructions.default]", "[instructions.other]"), "instructions.other", "unknown op"),
        (('source = "guess"', 'source = ""'), "instructions.MOV_TO_CR.cost_cycles.source", "name"),
        (('CR3 = "never"', 'CR9 = "never"'), "instructions.MOV_TO_CR.operands.CR9", "CR0"),
        (("available = true", "available = 1"), "shadow.available", "true or false"),
        (('read = ["GUEST_RIP"]', 'read = ["NOPE"]'), "shadow.read[0]", "unknown VMCS field"),
        (('name = "mini-l0"', 'name = "other"'), "name", "does not match"),
    ],
)
def test_bad_l0_files_are_named(change: tuple[str, str], key: str, problem: str) -> None:
    with pytest.raises(ProfileError, match=problem) as info:
        parse_l0(L0.replace(*change), "mini-l0.toml")
    assert info.value.key == key
