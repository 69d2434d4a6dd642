"""Every remote CLI command, against a shared server (``--server``) and against its own
in-process server (no ``--server``): output shapes, exit statuses and one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vmxsim_client.cli import main
from vmxsim_client.traces import write_jsonl
from vmxsim_server.vmx.mixes import load_mix, synthesize

SUMMARY_KEYS = {
    "profile", "mode", "exits", "skipped", "unknown_reasons", "instructions", "per_exit",
    "cache", "simulated_seconds", "by_reason", "panics", "l0",
}  # fmt: skip

SCRIPT = """\
# enter VMX root operation with a current VMCS
REVID 0x1000
VMXON 0x1000
VMREAD GUEST_RIP          # line 4: no current VMCS yet
REVID 0x2000
VMPTRLD 0x2000
VMWRITE GUEST_RIP 0x1000
VMREAD 0x681e
VMWRITE VM_EXIT_REASON 1  # read-only
VMXON 0x1000              # already in VMX root operation
VMRESUME                  # the VMCS is clear
"""


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(args)
    out, err = capsys.readouterr()
    return status, out, err


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    status, out, err = run([*args, "--json"], capsys)
    assert status == 0, err
    return json.loads(out)


@pytest.fixture(params=["remote", "in-process"])
def server(request: pytest.FixtureRequest, vmxsim_address: str) -> list[str]:
    """The --server arguments: the shared server, or none (an in-process server)."""
    return ["--server", vmxsim_address] if request.param == "remote" else []


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traces") / "boot.jsonl"
    with path.open("w") as out:
        write_jsonl(synthesize(load_mix("linux-boot"), 3000, seed=5), out)
        out.write("this line is not JSON\n")
    return path


# --- vcpu ------------------------------------------------------------------------------------


def test_vcpu_create_list_show_delete(
    vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = ["--server", vmxsim_address]
    created = run_json(["vcpu", "create", "--profile", "haxm-legacy", "--mode", "nested",
                        "--revision-id", "0x42", "--vmcs-shadowing", *remote], capsys)  # fmt: skip
    assert (created["profile"], created["mode"], created["vcpu_mode"]) == (
        "haxm-legacy", "nested", "off",
    )  # fmt: skip
    assert created["capabilities"]["revision_id"] == 0x42
    assert created["capabilities"]["vmcs_shadowing"] is True
    listed = run_json(["vcpu", "list", "--vm", created["vm_id"], *remote], capsys)
    assert [v["vcpu_id"] for v in listed] == [created["vcpu_id"]]
    status, out, _ = run(["vcpu", "list", *remote], capsys)
    assert status == 0 and out.startswith("vcpu_id") and created["vcpu_id"] in out
    status, out, _ = run(["vcpu", "show", created["vcpu_id"], *remote], capsys)
    assert status == 0 and "haxm-legacy" in out and "revision_id" in out
    assert run(["vcpu", "delete", created["vcpu_id"], *remote], capsys)[0] == 0
    status, _, err = run(["vcpu", "show", created["vcpu_id"], *remote], capsys)
    assert status == 3 and err.startswith("vmxsim: error: NOT_FOUND: ") and err.count("\n") == 1


def test_vcpu_commands_without_server(capsys: pytest.CaptureFixture[str]) -> None:
    created = run_json(["vcpu", "create", "--maxphyaddr", "40"], capsys)
    assert created["capabilities"]["maxphyaddr"] == 40
    assert run_json(["vcpu", "list"], capsys) == []  # the in-process server was a new one


def test_server_comes_from_the_environment(
    vmxsim_address: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMXSIM_SERVER", vmxsim_address)
    created = run_json(["vcpu", "create"], capsys)
    assert created["vcpu_id"] in {v["vcpu_id"] for v in run_json(["vcpu", "list"], capsys)}


def test_an_unreachable_server_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["vcpu", "list", "--server", "127.0.0.1:1", "--timeout", "2"], capsys)
    assert status == 6 and err.startswith("vmxsim: error: UNAVAILABLE: ")
    assert err.count("\n") == 1


# --- exec ------------------------------------------------------------------------------------


def test_exec_json_reports_each_line(
    server: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "setup.vmx"
    script.write_text(SCRIPT)
    status, out, err = run(["exec", str(script), "--json", *server], capsys)
    assert status == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[:3] == [
        {"line": 2, "op": "REVID", "result": "VMsucceed"},
        {"line": 3, "op": "VMXON", "result": "VMsucceed"},
        {"line": 4, "op": "VMREAD", "result": "VMfailInvalid"},
    ]
    by_line = {line["line"]: line for line in lines}
    assert by_line[8] == {"line": 8, "op": "VMREAD", "result": "VMsucceed", "value": 4096}
    assert by_line[9]["result"] == "VMfailValid" and by_line[9]["error"] == 13
    assert by_line[10]["error"] == 15 and by_line[11]["error"] == 5
    allowed = {"line", "op", "result", "value", "error", "fault", "exit_reason", "error_name",
               "message"}  # fmt: skip
    assert all(set(line) <= allowed for line in lines)


def test_exec_human_output_from_stdin(
    vmxsim_address: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("vmxoff\nREVID 4096\n"))
    status, out, _ = run(["exec", "-", "--server", vmxsim_address], capsys)
    assert status == 0
    first, second = out.splitlines()
    assert first.split() == ["1", "VMXOFF", "fault", "fault=#UD"]
    assert second.split() == ["2", "REVID", "4096", "VMsucceed"]


def test_exec_on_an_existing_vcpu(
    vmxsim_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = ["--server", vmxsim_address]
    vcpu = run_json(["vcpu", "create", *remote], capsys)["vcpu_id"]
    script = tmp_path / "s.vmx"
    script.write_text(SCRIPT)
    assert run(["exec", str(script), "--vcpu", vcpu, *remote], capsys)[0] == 0
    script.write_text("VMREAD GUEST_RIP\nVMPTRST\n")
    status, out, _ = run(["exec", str(script), "--vcpu", vcpu, *remote], capsys)
    assert status == 0
    assert "value=0x1000" in out.splitlines()[0] and "value=0x2000" in out.splitlines()[1]


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ("VMXON 0x1000\nVMWRITE GUEST_RIP\n", ":2: VMWRITE takes 2 operands"),
        ("\n\nCR4 0x10000000000000000\n", ":3: value: 0x10000000000000000 does not fit 64"),
        ("VMREAD NOT_A_FIELD\n", ":1: field: 'NOT_A_FIELD' is not a known field"),
        ("JUMP 1\n", ":1: unknown instruction 'JUMP'"),
        ("EXIT NO_SUCH_REASON\n", ":1: reason: 'NO_SUCH_REASON'"),
    ],
)
def test_exec_syntax_errors_exit_2_before_sending(
    script: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.vmx"
    path.write_text(script)
    # an unreachable server proves nothing was sent: the parse fails first
    status, out, err = run(["exec", str(path), "--server", "127.0.0.1:1"], capsys)
    assert status == 2 and out == ""
    assert err.startswith(f"vmxsim: error: {path}{problem}"), err


# --- drive -----------------------------------------------------------------------------------


def test_drive_a_mix(server: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    totals = run_json(["drive", "--mix", "linux-boot", "--exits", "2000", "--seed", "3",
                       "--profile", "haxm-cache", "--mode", "nested", "--batch-size", "500",
                       *server], capsys)  # fmt: skip
    assert set(totals) >= SUMMARY_KEYS and totals["batches"] == 4
    exits = totals["exits"] + sum(totals["panics"].values())  # HAXM panics on some reasons
    assert (totals["profile"], totals["mode"], exits) == ("haxm-cache", "nested", 2000)
    assert set(totals["per_exit"]["vmread"]) == {"mean", "p50", "p99"}


def test_drive_a_trace_on_an_existing_vcpu(
    vmxsim_address: str, trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = ["--server", vmxsim_address]
    vcpu = run_json(["vcpu", "create", *remote], capsys)["vcpu_id"]
    status, out, err = run(["drive", str(trace), "--vcpu", vcpu, *remote], capsys)
    assert status == 0 and "exits 3,000" in out and "skipped 1" in err
    assert run_json(["vcpu", "show", vcpu, *remote], capsys)["exits"] == 3000


@pytest.mark.parametrize(
    "args",
    [
        ["drive"],
        ["drive", "trace.jsonl", "--mix", "linux-boot"],
        ["drive", "--mix", "linux-boot", "--vcpu", "x", "--profile", "kvm"],
        ["drive", "trace.jsonl", "--exits", "10"],
        ["drive", "--mix", "linux-boot", "--batch-size", "0"],
    ],
)
def test_drive_bad_options_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(args, capsys)
    assert status == 2 and err.startswith("vmxsim: error: ")


# --- replay ----------------------------------------------------------------------------------


def test_replay_json_is_the_run_summary(
    server: list[str], trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = run_json(["replay", str(trace), "--profile", "kvm", "--mode", "nested-shadow",
                        "--batch-size", "1000", *server], capsys)  # fmt: skip
    assert set(summary) == SUMMARY_KEYS
    assert (summary["mode"], summary["exits"], summary["skipped"]) == ("nested-shadow", 3000, 1)
    l0 = summary["l0"]  # through the wire: the L0 model's view, by cause
    assert l0["model"] == "kvm-4.17" and l0["exits"] == sum(l0["by_cause"].values()) > 0
    assert l0["by_cause"]["VMRESUME"] == 3000 and set(l0["per_exit"]) == {"mean", "p50", "p99"}
    other = run_json(["replay", str(trace), "--profile", "kvm", "--mode", "nested",
                      "--l0", "kvm-modern", *server], capsys)  # fmt: skip
    assert other["l0"]["model"] == "kvm-modern"
    native = run_json(["replay", str(trace), "--profile", "kvm", *server], capsys)
    assert native["l0"] is None and "other" in native["instructions"]
    status, _, err = run(
        ["replay", str(trace), "--mode", "nested", "--l0", "nope", *server], capsys
    )
    assert status != 0 and "unknown L0 model 'nope'" in err and err.count("\n") == 1


def test_replay_human_table_and_strict(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["replay", str(trace), "--profile", "haxm-legacy"], capsys)
    assert status == 0 and "VMREAD" in out and "IO_INSTRUCTION" in out
    status, _, err = run(["replay", str(trace), "--strict"], capsys)
    assert status == 2 and ":3002: " in err and err.count("\n") == 1


def test_replay_of_a_missing_file_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["replay", "/no/such/trace.jsonl"], capsys)
    assert status == 2 and "cannot read /no/such/trace.jsonl" in err


# --- compare and demo ------------------------------------------------------------------------


def test_compare_two_profiles_two_modes(
    server: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_json(["compare", "mix:linux-boot:2000", "--profiles", "haxm-legacy,kvm",
                       "--modes", "native,nested", *server], capsys)  # fmt: skip
    assert result["trace"] == "mix:linux-boot:2000"
    assert [(r["profile"], r["mode"]) for r in result["runs"]] == [
        ("haxm-legacy", "native"), ("haxm-legacy", "nested"), ("kvm", "native"), ("kvm", "nested"),
    ]  # fmt: skip
    assert all(set(r) == SUMMARY_KEYS for r in result["runs"])
    ratios = result["ratios"]
    assert ratios["vs_fastest"]["nested"]["kvm"] == 1.0
    assert ratios["vs_fastest"]["nested"]["haxm-legacy"] > 1.0
    assert ratios["vs_native"]["kvm"]["nested"] > 1.0


def test_compare_human_tables(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["compare", str(trace), "--profiles", "haxm-cache,kvm"], capsys)
    assert status == 0
    assert "vs fastest" in out and "vmread/exit" in out and "kvm rd/wr" in out
    status, _, err = run(["compare", str(trace), "--modes", "warp"], capsys)
    assert status == 2 and "unknown mode 'warp'" in err


def test_demo_prints_the_comparison(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["demo"], capsys)
    assert status == 0
    for text in ("haxm-legacy", "haxm-cache", "kvm", "vs fastest", "VMREADs/VMWRITEs per exit"):
        assert text in out
    assert "532.5 s / 45.4 s" in out
    # the nested takeaways come from the run summaries: L0 interceptions and HAXM's panics
    assert "L1 instructions L0 intercepts per exit: haxm-legacy" in out
    assert re.search(r"nested HAXM is \d+\.\d% (slower|faster) per exit", out)
    assert re.search(r"not priced: haxm-legacy [\d,]+", out)


def test_demo_json_against_a_server(
    vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_json(["demo", "--server", vmxsim_address], capsys)
    runs = result["runs"]  # a panicking handler's exits are not counted as exits
    assert len(runs) == 6 and all(r["exits"] + sum(r["panics"].values()) == 5000 for r in runs)


def test_console_script_runs_exec(vmxsim_address: str, tmp_path: Path) -> None:
    script = tmp_path / "s.vmx"
    script.write_text("REVID 0x1000\nVMXON 0x1000\n")
    vmxsim = Path(sys.executable).parent / "vmxsim"
    done = subprocess.run(
        [str(vmxsim), "exec", str(script), "--json"],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "VMXSIM_SERVER": vmxsim_address},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["result"] for line in done.stdout.splitlines()] == ["VMsucceed"] * 2


def test_the_sample_trace_is_installed_and_reproducible(tmp_path: Path) -> None:
    from importlib import resources

    from vmxsim_client.cli.cmd_demo import SAMPLE_TRACE

    shipped = resources.files("vmxsim_client").joinpath("data", SAMPLE_TRACE).read_bytes()
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_sample_trace"
    fresh = tmp_path / SAMPLE_TRACE
    subprocess.run([sys.executable, str(script), str(fresh)], check=True, capture_output=True)
    assert fresh.read_bytes() == shipped
