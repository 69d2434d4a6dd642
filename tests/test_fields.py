"""The VMCS field table agrees with the SDM's encoding bit layout and with Linux's names."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmxsim_server.vmx import ALL_FIELDS, FIELDS, Access, Kind, Width, decode_encoding, lookup
from vmxsim_server.vmx.fields import BY_ENCODING, BY_NAME

SHARED = Path(os.environ.get("VMXSIM_SHARED", Path(__file__).resolve().parents[1] / "../shared"))


def test_table_holds_at_least_150_encodings() -> None:
    assert len(ALL_FIELDS) >= 150


@pytest.mark.parametrize("field", ALL_FIELDS, ids=lambda f: f.name)
def test_every_encoding_agrees_with_its_declared_group(field) -> None:
    bits = decode_encoding(field.encoding)
    assert bits.width is field.width
    assert bits.kind is field.kind
    assert bits.access is field.access
    assert not bits.reserved_bits_set
    assert bits.well_formed
    assert field.index == (field.encoding >> 1) & 0x1FF


def test_names_and_encodings_are_unique() -> None:
    assert len({f.name for f in ALL_FIELDS}) == len(ALL_FIELDS)
    assert len({f.encoding for f in ALL_FIELDS}) == len(ALL_FIELDS)


def test_every_64_bit_field_has_a_high_half_sharing_its_storage() -> None:
    for field in FIELDS:
        if field.width is Width.BITS64:
            high = BY_NAME[field.name + "_HIGH"]
            assert high.encoding == field.encoding | 1
            assert high.bit == field.bit
            assert high.access is Access.HIGH
        else:
            assert field.name + "_HIGH" not in BY_NAME


def test_linux_names_of_well_known_fields() -> None:
    expected = {
        "GUEST_RIP": 0x681E,
        "VM_EXIT_REASON": 0x4402,
        "EXIT_QUALIFICATION": 0x6400,
        "VM_INSTRUCTION_ERROR": 0x4400,
        "HOST_RIP": 0x6C16,
        "GUEST_PHYSICAL_ADDRESS": 0x2400,
        "CPU_BASED_VM_EXEC_CONTROL": 0x4002,
        "VMCS_LINK_POINTER": 0x2800,
    }
    assert {name: BY_NAME[name].encoding for name in expected} == expected


def test_every_kind_and_width_is_represented() -> None:
    assert {f.kind for f in FIELDS} == set(Kind)
    assert {f.width for f in FIELDS} == set(Width)


@given(st.integers(min_value=0, max_value=0xFFFF_FFFF))
def test_decode_splits_any_32_bit_encoding_back_into_itself(encoding: int) -> None:
    bits = decode_encoding(encoding)
    rebuilt = bits.access.value | bits.index << 1 | bits.kind.value << 10 | bits.width.value << 13
    assert rebuilt | (encoding & 0xFFFF_9000) == encoding
    assert bits.reserved_bits_set == bool(encoding & 0xFFFF_9000)


def test_decode_rejects_values_beyond_32_bits() -> None:
    with pytest.raises(ValueError):
        decode_encoding(1 << 32)


def test_lookup_by_name_encoding_and_text() -> None:
    assert lookup("guest_rip") is BY_NAME["GUEST_RIP"]
    assert lookup(0x681E) is BY_NAME["GUEST_RIP"]
    assert lookup("0x681e") is BY_NAME["GUEST_RIP"]
    assert lookup("26654") is BY_NAME["GUEST_RIP"]
    assert lookup("NO_SUCH_FIELD") is None
    assert lookup(0x681F) is None


@pytest.mark.skipif(not (SHARED / "vmx").is_dir(), reason="../shared/vmx is not beside the project")
def test_seed_cache_table_encodings_match_ours() -> None:
    """The seed's X-macro list (intel/haxm PR #130) names the same encodings as our table."""
    with open(SHARED / "vmx" / "haxm_pr130_cache_fields.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        field = BY_ENCODING[int(row["encoding"], 16)]
        assert field.name == row["sdm_linux_name"]
