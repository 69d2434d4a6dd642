"""Every component of the SDM's Appendix B is in the field table and in ``vmxsim fields``, and
exists exactly when the vCPU's capabilities offer the control behind it (else VMfailValid 12)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest
from conftest import make_root_vcpu

from vmxsim_server.vmx import FIELDS, Result
from vmxsim_server.vmx.capabilities import EVERY_FEATURE, FEATURES, Capabilities
from vmxsim_server.vmx.fields import Width


def _span(first: int, last: int, *missing: int) -> list[int]:
    return [e for e in range(first, last + 1, 2) if e not in missing]


# Appendix B, table by table (B-1 .. B-14), written out independently of fields.py.
APPENDIX_B = {
    "16-bit control": _span(0x0000, 0x0008),
    "16-bit guest": _span(0x0800, 0x0814),
    "16-bit host": _span(0x0C00, 0x0C0C),
    "64-bit control": [*_span(0x2000, 0x2044), 0x204A, 0x204C, 0x2052],
    "64-bit read-only": [0x2400, 0x2404],
    "64-bit guest": _span(0x2800, 0x2828),
    "64-bit host": _span(0x2C00, 0x2C16),
    "32-bit control": _span(0x4000, 0x4024),
    "32-bit read-only": _span(0x4400, 0x440E),
    "32-bit guest": _span(0x4800, 0x482E, 0x482C),
    "32-bit host": [0x4C00],
    "natural control": _span(0x6000, 0x600E),
    "natural read-only": _span(0x6400, 0x640A),
    "natural guest": _span(0x6800, 0x682C),
    "natural host": _span(0x6C00, 0x6C1C),
}
NEWEST = {  # the fields issue 12 names, by their SDM names
    "HLAT prefix size": 0x0006, "HLAT pointer": 0x2040, "SPPTP": 0x2030,
    "low PASID directory": 0x2038, "high PASID directory": 0x203A, "shared EPTP": 0x203C,
    "PCONFIG-exiting bitmap": 0x203E, "secondary VM-exit controls": 0x2044,
    "IA32_SPEC_CTRL mask": 0x204A, "IA32_SPEC_CTRL shadow": 0x204C, "tertiary controls": 0x2034,
    "ENCLV-exiting bitmap": 0x2036, "guest IA32_PKRS": 0x2818, "host IA32_PKRS": 0x2C06,
    "guest IA32_S_CET": 0x6828, "guest SSP": 0x682A, "guest interrupt SSP table": 0x682C,
    "guest IA32_LBR_CTL": 0x2816, "guest IA32_PERF_GLOBAL_CTRL": 0x2808,
    "instruction-timeout control": 0x4024,
}  # fmt: skip
MINIMAL = Capabilities(pin_allowed1=0x16, proc_allowed1=0x0401_E172, secondary_allowed1=0,
                       exit_allowed1=0x3_6DFF, entry_allowed1=0x11FF, vmfunc=0)  # fmt: skip


def _encodings() -> set[int]:
    every = {e for group in APPENDIX_B.values() for e in group}
    return every | {e | 1 for e in every if (e >> 13) & 3 == Width.BITS64.value}


def test_fields_csv_lists_every_appendix_b_encoding_and_no_other() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from vmxsim_client.cli import run; run()", "fields", "--format",
         "csv"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = {int(row["encoding"], 16) for row in csv.DictReader(io.StringIO(result.stdout))}
    assert listed == _encodings(), sorted(hex(e) for e in listed ^ _encodings())
    assert set(NEWEST.values()) <= listed


def test_minimal_capabilities_offer_no_feature() -> None:
    assert not [name for name, f in FEATURES.items() if f.offered(MINIMAL)]
    assert all(f.offered(EVERY_FEATURE) for f in FEATURES.values())


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_a_field_exists_exactly_when_its_feature_is_offered(field) -> None:  # type: ignore[no-untyped-def]
    with_every = make_root_vcpu(EVERY_FEATURE)
    assert with_every.vmread(field.encoding).result is Result.VMSUCCEED
    without = make_root_vcpu(MINIMAL)
    outcome = without.vmwrite(field.encoding, 0)
    if field.feature is None:
        assert outcome.result is not Result.VMFAIL_VALID or outcome.error == 13
    else:
        assert (outcome.result, outcome.error) == (Result.VMFAIL_VALID, 12)
        assert without.vmread(field.encoding).error == 12
