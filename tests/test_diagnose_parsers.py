"""The VMCS dump parsers: every format, every kernel era we write fixtures for, and the mangling
of logs, mail archives and issue trackers (tests/fixtures/dumps/ holds our own dumps written in
the published formats)."""

from __future__ import annotations

import json
import quopri
import re
from pathlib import Path

import pytest

from vmxsim_server.vmx.capabilities import Capabilities
from vmxsim_server.vmx.capability_file import (
    MAXPHYADDR,
    CapabilityFileError,
    parse_capability_file,
)
from vmxsim_server.vmx.capability_msrs import with_msrs
from vmxsim_server.vmx.dumps import MAX_DUMP_BYTES, DumpError, DumpTooLarge, read_dumps
from vmxsim_server.vmx.dumps.qemu import qemu_access_rights

DUMPS = Path(__file__).parent / "fixtures" / "dumps"


def values_of(name: str, index: int = 0) -> dict[str, int]:
    return read_dumps((DUMPS / name).read_bytes())[index].values


BASE = "kvm-6x-passes.log"
_STAMPED = re.compile(r"^\[[^\]]*\] kvm_intel: ")


def kvm_body() -> list[str]:
    """The 6.x fixture's dump lines without their dmesg decoration."""
    return [_STAMPED.sub("", line) for line in (DUMPS / BASE).read_text().splitlines()]


# --- each format -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "format", "fields"),
    [
        ("kvm-6x-passes.log", "kvm-dump_vmcs", 111),
        ("kvm-4x-syslog-efer-lma.log", "kvm-dump_vmcs", 105),
        ("kvm-5x-quoted-wrapped-cr0.eml", "kvm-dump_vmcs", 110),
        ("xen-ia32e-pae.log", "xen-vmcs_dump", 109),
        ("xen-quoted-cr3-noflush.eml", "xen-vmcs_dump", 109),
        ("haxm-linux-cr4-vmxe.log", "haxm-dump_vmcs", 127),
        ("haxm-debugview-passes.log", "haxm-dump_vmcs", 127),
        ("haxm-netbsd-sti-if.log", "haxm-dump_vmcs", 127),
        ("kvm-6x-tr-unusable.log", "kvm-dump_vmcs", 111),
        ("qemu-tr-unusable.txt", "qemu-cpu_dump", 44),
        ("qemu-tr-ti.txt", "qemu-cpu_dump", 44),
        ("plain-host-selector.txt", "plain", 19),
    ],
)
def test_each_fixture_is_detected_and_read_in_full(name: str, format: str, fields: int) -> None:
    (dump,) = read_dumps((DUMPS / name).read_bytes())
    assert dump.format == format
    assert len(dump.values) == fields


def test_kvm_6x_values_map_to_the_field_table() -> None:
    values = values_of(BASE)
    assert values["GUEST_CR0"] == 0x80050033
    assert values["CR4_GUEST_HOST_MASK"] == 0xFFFF_FFFF_FFFE_F871
    assert values["GUEST_CS_AR_BYTES"] == 0xA09B and values["GUEST_DS_AR_BYTES"] == 0x1C000
    assert values["GUEST_TR_LIMIT"] == 0x4087 and values["GUEST_GDTR_BASE"] == 0xFFFFFE000000C000
    assert values["GUEST_SYSENTER_CS"] == 0x10 and values["GUEST_RIP"] == 0xFFFFFFFFA1C4B9E4
    assert values["HOST_TR_SELECTOR"] == 0x40 and values["HOST_IA32_PAT"] == 0x0407050600070106
    assert values["PIN_BASED_VM_EXEC_CONTROL"] == 0xFF and values["VM_EXIT_CONTROLS"] == 0x2BEFFF
    assert values["TERTIARY_VM_EXEC_CONTROL"] == 0 and values["EPT_POINTER"] == 0x10E2A405E
    assert values["VM_EXIT_REASON"] == 0x1E and values["VIRTUAL_PROCESSOR_ID"] == 1


def test_kvm_4x_layout_reads_efer_and_pat_from_one_line() -> None:
    values = values_of("kvm-4x-syslog-efer-lma.log")
    assert values["GUEST_IA32_EFER"] == 0x1 and values["GUEST_IA32_PAT"] == 0x0007040600070406
    assert values["HOST_IA32_EFER"] == 0xD01
    assert values["PIN_BASED_VM_EXEC_CONTROL"] == 0x3F
    assert values["SECONDARY_VM_EXEC_CONTROL"] == 0xEB
    assert "TERTIARY_VM_EXEC_CONTROL" not in values  # 4.x does not print it


def test_kvm_effective_efer_is_not_the_vmcs_field() -> None:
    text = "\n".join(
        line.replace("EFER= 0x0000000000000d01", "EFER= 0x0000000000000d01 (effective)", 1)
        for line in kvm_body()
    )
    values = read_dumps(text)[0].values
    assert "GUEST_IA32_EFER" not in values
    assert values["HOST_IA32_EFER"] == 0xD01


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "[ 4211.003215] ",
        "kvm_intel: ",
        "kvm: ",
        "[Tue Dec  1 20:31:24 2026] kvm_intel: ",
        "Sep  8 22:52:20 vmhost kernel: [10639.238040] ",
        "2026-12-01T20:31:24.123456+00:00 vmhost kernel: kvm_intel: ",
        "(XEN) ",
    ],
)
def test_log_prefixes_do_not_change_the_values(prefix: str) -> None:
    text = "\n".join(prefix + line for line in kvm_body())
    if prefix.startswith("(XEN)"):
        (dump,) = read_dumps(text, format="kvm-dump_vmcs")
    else:
        (dump,) = read_dumps(text)
    assert dump.values == values_of(BASE)


def test_wrapped_and_quoted_mail_reads_the_same_values() -> None:
    quoted = values_of("kvm-5x-quoted-wrapped-cr0.eml")
    base = values_of(BASE)
    changed = {"GUEST_CR0", "CR0_READ_SHADOW"}
    assert set(quoted) == set(base) - {"TERTIARY_VM_EXEC_CONTROL"}
    assert {k: v for k, v in quoted.items() if k not in changed} == {
        k: base[k] for k in quoted if k not in changed
    }
    assert quoted["GUEST_CR0"] == 0x80050013


def test_wrapping_at_72_columns_with_three_quote_levels() -> None:
    lines = []
    for line in kvm_body():
        while len(line) > 60:  # hard wrap at a space, as mail clients do
            cut = line.rfind(" ", 0, 60)
            lines.append("> > > " + line[:cut])
            line = line[cut + 1 :]
        lines.append("> > > " + line)
    assert read_dumps("\n".join(lines))[0].values == values_of(BASE)


def test_quoted_printable_and_html_escaping_are_undone() -> None:
    text = (DUMPS / BASE).read_bytes()
    encoded = quopri.encodestring(text)
    assert b"=3D" in encoded
    assert read_dumps(encoded)[0].values == values_of(BASE)
    escaped = "\n".join("&gt; " + line for line in kvm_body())
    assert read_dumps(escaped)[0].values == values_of(BASE)


def test_two_dumps_in_one_log_are_read_in_turn() -> None:
    first, second = read_dumps((DUMPS / "kvm-6x-two-dumps.log").read_bytes())
    assert (first.line, second.line) == (1, 51)
    assert first.values["EPT_POINTER"] == 0x10E2A405E
    assert second.values["EPT_POINTER"] == 0x10E2A4056


def test_old_kernels_without_the_vmcs_line_still_split_at_the_guest_header() -> None:
    body = [line for line in kvm_body() if not line.startswith("VMCS ")]
    dumps = read_dumps("\n".join(body + body))
    assert len(dumps) == 2 and dumps[1].values == dumps[0].values


def test_xen_reads_the_segment_table_and_the_reported_reason() -> None:
    (dump,) = read_dumps((DUMPS / "xen-ia32e-pae.log").read_bytes())
    assert dump.reported_exit_reason == 0x80000021
    values = dump.values
    assert values["GUEST_CS_SELECTOR"] == 0x10 and values["GUEST_CS_AR_BYTES"] == 0xA09B
    assert values["GUEST_TR_LIMIT"] == 0x4087 and values["GUEST_IDTR_LIMIT"] == 0xFFF
    assert values["GUEST_RSP"] == 0xFFFFC90000013E98 and values["GUEST_RFLAGS"] == 0x46
    assert values["HOST_RIP"] == 0xFFFF82D04031A2E0 and values["HOST_RSP"] == 0xFFFF83023A4DFF70
    assert values["GUEST_IA32_EFER"] == 0xD01 and values["EPTP_INDEX"] == 0
    assert values["SECONDARY_VM_EXEC_CONTROL"] == 0x14EB


def test_quoted_xen_mail_starts_at_its_failure_line() -> None:
    (dump,) = read_dumps((DUMPS / "xen-quoted-cr3-noflush.eml").read_bytes())
    assert dump.line == 4 and dump.reported_exit_reason == 0x80000021
    assert dump.values["GUEST_CR3"] == 0x800000001C3E4001


def test_a_xen_excerpt_that_kvm_reads_as_well_is_xen() -> None:
    lines = (DUMPS / "xen-ia32e-pae.log").read_text().splitlines()[:6]
    (dump,) = read_dumps("\n".join("> " + line for line in lines))
    assert dump.format == "xen-vmcs_dump" and len(dump.values) == 7


def test_haxm_names_and_encodings_map_to_the_field_table() -> None:
    values = values_of("haxm-linux-cr4-vmxe.log")
    assert values["VMCS_LINK_POINTER"] == 0xFFFF_FFFF_FFFF_FFFF
    assert values["GUEST_TR_AR_BYTES"] == 0x8B and values["GUEST_LDTR_AR_BYTES"] == 0x10000
    assert values["HOST_IA32_SYSENTER_CS"] == 0 and values["CR3_TARGET_VALUE0"] == 0
    assert values["GUEST_PENDING_DBG_EXCEPTIONS"] == 0 and values["VM_EXIT_REASON"] == 0x80000021
    assert values_of("haxm-debugview-passes.log")["GUEST_CR4"] == 0x26D0


@pytest.mark.parametrize(
    "prefix",
    ["haxm_warning: ", "haxm_warning:", "haxm_error: ", "[ 2804,119878] haxm_warning: ",
     "2019-01-11 13:29:19.100933+0800  localhost kernel[0]: (intelhaxm) haxm_warn: ",
     "00000047\t10.16327953\thaxm_warning: ", "Jun 16 15:07:09 localhost /netbsd: [ 1776.34] "],
)  # fmt: skip
def test_haxm_lines_behind_every_platform_prefix(prefix: str) -> None:
    body = [line.split("haxm_warning: ", 1)[1]
            for line in (DUMPS / "haxm-debugview-passes.log").read_text().splitlines()]  # fmt: skip
    (dump,) = read_dumps("\n".join(prefix + line for line in body))
    assert dump.values == values_of("haxm-debugview-passes.log")


def test_haxm_name_not_in_the_table_is_found_by_its_encoding() -> None:
    (dump,) = read_dumps(
        "haxm_warning: 4000 VMX_PIN_CONTROLS: 1f\nhaxm_warning: 2812 GUEST_BNDCFGS_X: 5\n"
    )
    assert dump.values == {"PIN_BASED_VM_EXEC_CONTROL": 0x1F, "GUEST_BNDCFGS": 5}


@pytest.mark.parametrize(
    ("flags", "access_rights"),
    [(0x00C09300, 0xC093), (0x00A09B00, 0xA09B), (0x00008B00, 0x8B), (0x00C00000, 0x10000),
     (0x0000F300, 0xF3), (0x00000000, 0x10000)],
)  # fmt: skip
def test_qemu_segment_flags_become_vmcs_access_rights(flags: int, access_rights: int) -> None:
    assert qemu_access_rights(flags) == access_rights


def test_qemu_dump_is_guest_state_only() -> None:
    (dump,) = read_dumps((DUMPS / "qemu-tr-ti.txt").read_bytes())
    assert dump.reported_exit_reason == 0x80000021
    values = dump.values
    assert values["GUEST_TR_SELECTOR"] == 0x44 and values["GUEST_TR_AR_BYTES"] == 0x8B
    assert values["GUEST_GS_AR_BYTES"] == 0x10000 and values["GUEST_GS_BASE"] == 0xFFFF88807DC00000
    assert values["CR0_READ_SHADOW"] == 0x80050033 and "GUEST_CR0" not in values
    assert values["GUEST_RIP"] == 0xFFFFFFFF81C4B9E4 and values["GUEST_RSP"] == 0xFFFFFFFF82A03E08
    assert values["GUEST_GDTR_LIMIT"] == 0x7F and values["GUEST_IA32_EFER"] == 0xD01
    assert not any(name.startswith(("HOST_", "VM_")) for name in values)


def test_plain_list_names_encodings_numbers_and_dumps() -> None:
    values = values_of("plain-host-selector.txt")
    assert values["HOST_CR0"] == 0x80050033 and values["HOST_RSP"] == 0xFFFFC90000000000
    (dump,) = read_dumps("guest_rip: 4096\n@launch_state = 1\n")
    assert dump.values == {"GUEST_RIP": 4096} and dump.pseudo == {"@launch_state": 1}
    dumps = read_dumps("GUEST_RIP=1\nGUEST_RSP=2\n---\nGUEST_RIP=3\nGUEST_RIP=4\n", "plain")
    assert [d.values for d in dumps] == [{"GUEST_RIP": 1, "GUEST_RSP": 2}, {"GUEST_RIP": 3},
                                         {"GUEST_RIP": 4}]  # fmt: skip
    assert read_dumps(json.dumps({"GUEST_RIP": "0x10", "guest_rsp": 8}))[0].values == {
        "GUEST_RIP": 16,
        "GUEST_RSP": 8,
    }


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "format", "problem"),
    [
        ("hello world\n", None, "no VMCS dump found"),
        ("kvm_intel: set kvm_intel.dump_invalid_vmcs=1 to dump internal KVM state.\n", None,
         "dump_invalid_vmcs=1"),
        ("GUEST_RIP=1\nthis is not a field\n", "plain", "line 2: expected FIELD=VALUE"),
        ("NO_SUCH_FIELD=1\n", "plain", "line 1: 'NO_SUCH_FIELD' is not a VMCS field"),
        ("GUEST_ES_SELECTOR=0x10000\n", "plain", "does not fit GUEST_ES_SELECTOR (16-bit"),
        ("GUEST_RIP=1\n", "qemu-cpu_dump", "no qemu-cpu_dump dump found"),
        ("GUEST_RIP=1\n", "windbg", "unknown dump format 'windbg'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_the_problem(
    text: str, format: str | None, problem: str
) -> None:
    with pytest.raises(DumpError) as raised:
        read_dumps(text, format)
    assert problem in str(raised.value) and "\n" not in str(raised.value)


def test_a_dump_over_1_mib_is_refused() -> None:
    text = ("GUEST_RIP=1\n" * (MAX_DUMP_BYTES // 12 + 1)).encode()
    with pytest.raises(DumpTooLarge, match="at most 1,048,576 bytes"):
        read_dumps(text)


# --- capabilities files ----------------------------------------------------------------------


def test_rdmsr_session_names_and_values() -> None:
    msrs = parse_capability_file(
        "$ sudo rdmsr 0x480\nda040000000012\n# rdmsr -a 0x48b\n"
        "0000133e00000000\n0000133e00000000\n"
        "IA32_VMX_EPT_VPID_CAP = 0xf0106734141\nVMX_MISC: 7004c1e7\nMAXPHYADDR = 39\n"
    )
    assert msrs == {0x480: 0xDA040000000012, 0x48B: 0x133E00000000, 0x48C: 0xF0106734141,
                    0x485: 0x7004C1E7, MAXPHYADDR: 39}  # fmt: skip
    assert with_msrs(Capabilities(), msrs).maxphyaddr == 39


def test_toml_and_json_capabilities() -> None:
    toml = parse_capability_file("[x]\nIA32_VMX_BASIC = 0xda040000000012\n".replace("[x]\n", ""))
    assert toml == {0x480: 0xDA040000000012}
    assert parse_capability_file('{"0x48b": "0x133e00000000"}') == {0x48B: 0x133E00000000}


@pytest.mark.parametrize(
    ("text", "problem"),
    [("IA32_VMX_NONSENSE = 1\n", "not an IA32_VMX_* MSR name"), ("0x10 = 5\n", "MSR 0x10"),
     ("IA32_VMX_BASIC = zz\n", "'zz' is not a number"), ("", "names no IA32_VMX_* MSR")],
)  # fmt: skip
def test_bad_capability_files(text: str, problem: str) -> None:
    with pytest.raises(CapabilityFileError, match=re.escape(problem)):
        parse_capability_file(text)
