"""Profile and latency files: shipped ones load and cite sources; bad ones are named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmxsim_server.vmx import InvalidArgument, ProfileError
from vmxsim_server.vmx.latency import MODES, LatencyModel, load_parameters
from vmxsim_server.vmx.mixes import apportion, load_mix, synthesize
from vmxsim_server.vmx.profiles import available_profiles, load_profile, parse_profile

MINIMAL = """
schema = 1
name = "mini"
[[sources]]
repo = "example/hv"
commit = "0123456789abcdef0123456789abcdef01234567"
path = "vmx.c"
functions = ["handle_exit"]
[run]
reload_vmcs = false
[cache]
read = ["EXIT_QUALIFICATION"]
[after_exit]
read = ["VM_EXIT_REASON"]
[handlers.CPUID]
read = ["VM_EXIT_INSTRUCTION_LEN", "GUEST_RIP"]
write = ["GUEST_RIP"]
"""


@pytest.mark.parametrize("name", available_profiles())
def test_shipped_profiles_load_and_cite_their_sources(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.sources, "every profile cites what it was read from"
    for source in profile.sources:
        assert source.repo and source.commit and source.path


def test_a_profile_loads_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mini.toml"
    path.write_text(MINIMAL)
    profile = load_profile(str(path))
    assert profile.handler(10).writes[0].name == "GUEST_RIP"
    assert profile.handler(12) is profile.default


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (('write = ["GUEST_RIP"]', 'write = ["NOPE"]'), "handlers.CPUID.write[0]", "unknown"),
        (("[handlers.CPUID]", "[handlers.NOT_A_REASON]"), "handlers.NOT_A_REASON", "unknown exit"),
        (("schema = 1", "schema = 2"), "schema", "must be 1"),
        (('name = "mini"', 'name = "other"'), "name", "does not match"),
        (("reload_vmcs = false", "reload_vmcs = 3"), "run.reload_vmcs", "true or false"),
        (("[cache]", "[cache]\nbogus = 1"), "cache", "unknown keys"),
        (
            ('write = ["GUEST_RIP"]', 'write = ["VM_EXIT_REASON"]'),
            "handlers.CPUID.write[0]",
            "read-only",
        ),
        (("schema = 1", "schema = = 1"), "-", "not valid TOML"),
    ],
)
def test_validation_errors_name_file_key_and_problem(tmp_path: Path, change, key, problem) -> None:
    path = tmp_path / "mini.toml"
    path.write_text(MINIMAL.replace(*change))
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    assert caught.value.path == str(path)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(InvalidArgument, match="haxm-legacy"):
        load_profile("no-such-profile")


def test_missing_profile_file_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(str(tmp_path / "absent.toml"))


def test_parse_without_toml_suffix_skips_the_name_check() -> None:
    assert parse_profile(MINIMAL, "<string>").name == "mini"


def test_latency_parameters_carry_status_and_source() -> None:
    params = load_parameters()
    for name, param in params.params.items():
        assert param.status in ("sourced", "derived", "assumption"), name
        assert param.source
    assert "clock_hz" in LatencyModel("native").assumptions()


def test_unknown_mode_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="nested-shadow"):
        LatencyModel("fast")


def test_latency_prices_each_l0_exit_of_a_nested_access() -> None:
    from vmxsim_server.vmx.fields import BY_NAME
    from vmxsim_server.vmx.l0 import L0Exit

    nested = LatencyModel("nested")
    model = nested.l0_for(load_profile("kvm"))
    assert model is not None and model.name == load_profile("kvm").default_l0
    rip = BY_NAME["GUEST_RIP"]
    one, two, shadowed = L0Exit(model, False), L0Exit(model, False), L0Exit(model, True)
    one.vmread(rip)
    for walk in (two, shadowed):
        walk.vmread(rip)
        walk.vmread(rip)
    trap = model.base["l1_exit_roundtrip_cycles"].value + model.rule("VMREAD").price("cost_cycles")
    assert nested.exit_cycles(10, 2, 0, 0, 0, 0, two) - nested.exit_cycles(
        10, 1, 0, 0, 0, 0, one
    ) == pytest.approx(trap)
    shadow = LatencyModel("nested-shadow")
    assert shadowed.exits == 0 and shadowed.native_reads == 2  # shadowed: native VMREADs
    native_reads = 2 * shadow.unit_cycles[0]
    assert shadow.exit_cycles(10, 2, 0, 0, 0, 0, shadowed) == pytest.approx(
        model.base_cycles(True) + shadow.handler_cycles(10) + native_reads
    )
    assert set(MODES) == {"native", "nested", "nested-shadow"}
    assert LatencyModel("nested").l0_for(load_profile("kvm")) is LatencyModel(
        "nested", l0=model.name
    ).l0_for(load_profile("kvm"))
    with pytest.raises(InvalidArgument, match="native"):
        LatencyModel("native", l0="kvm-4.17")


def test_bad_latency_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "lat.toml"
    path.write_text("schema = 1\n[params.clock_hz]\nvalue = -1\nstatus = 'sourced'\nsource = 'x'\n")
    with pytest.raises(ProfileError, match=r"params\.clock_hz\.value"):
        load_parameters(path)


def test_mixes_apportion_exactly_and_synthesize_reproducibly() -> None:
    counts = apportion({1: 1.0, 2: 1.0, 3: 1.0}, 10)
    assert sum(counts.values()) == 10 and max(counts.values()) - min(counts.values()) == 1
    mix = load_mix("linux-boot")
    assert list(synthesize(mix, 500, seed=4)) == list(synthesize(mix, 500, seed=4))
    assert list(synthesize(mix, 500, seed=4)) != list(synthesize(mix, 500, seed=5))
    with pytest.raises(InvalidArgument):
        load_mix("no-such-mix")
