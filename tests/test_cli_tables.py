"""``vmxsim fields`` and ``vmxsim exit-reasons`` as a user runs them (the installed script)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from vmxsim_server.vmx import ALL_FIELDS, EXIT_REASONS


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from vmxsim_client.cli import run; run()", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fields_csv_has_exactly_the_contract_columns() -> None:
    result = run("fields", "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["name", "encoding", "width", "type", "access", "requires"]
    assert len(rows) - 1 == len(ALL_FIELDS)
    by_name = {r[0]: r for r in rows[1:]}
    assert by_name["GUEST_RIP"] == ["GUEST_RIP", "0x0000681e", "natural", "guest", "full", ""]
    assert by_name["TSC_OFFSET_HIGH"] == [
        "TSC_OFFSET_HIGH",
        "0x00002011",
        "64",
        "control",
        "high",
        "",
    ]
    assert by_name["EPT_POINTER"][5] == "IA32_VMX_PROCBASED_CTLS2 bit 1 (enable EPT)"
    assert by_name["GUEST_IA32_PAT"][5] == (
        "IA32_VMX_ENTRY_CTLS bit 14 (load IA32_PAT) or IA32_VMX_EXIT_CTLS bit 18 (save IA32_PAT)"
    )
    assert {r[2] for r in rows[1:]} == {"16", "32", "64", "natural"}
    assert {r[3] for r in rows[1:]} == {"control", "read-only", "guest", "host"}


def test_fields_filters_by_type_and_width_as_json() -> None:
    result = run("fields", "--format", "json", "--type", "host", "--width", "16")
    rows = json.loads(result.stdout)
    assert rows and all(r["type"] == "host" and r["width"] == "16" for r in rows)
    assert "HOST_CS_SELECTOR" in {r["name"] for r in rows}


def test_fields_decode_explains_an_encoding() -> None:
    result = run("fields", "decode", "0x681e")
    assert result.returncode == 0
    assert "GUEST_RIP" in result.stdout and "natural" in result.stdout and "guest" in result.stdout
    unknown = run("fields", "decode", "0x681f", "--format", "json")
    assert json.loads(unknown.stdout)["name"] is None


def test_exit_reasons_table() -> None:
    result = run("exit-reasons", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == len(EXIT_REASONS)
    assert {r["name"]: r["number"] for r in rows}["EPT_VIOLATION"] == "48"


@pytest.mark.parametrize(
    "args",
    [
        ("fields", "--format", "yaml"),
        ("fields", "--type", "nope"),
        ("fields", "decode", "xyz"),
        ("fields", "decode", "0x1ffffffff"),
        ("fields", "decode"),
        ("no-such-command",),
    ],
)
def test_invalid_arguments_give_one_line_and_status_2(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "error" in result.stderr
