"""CLI conventions (issue 16.4) with the real ``vmxsim`` and real servers on loopback ports:
--version, shell completion, --json and --format json everywhere, exec --fail-on-failure, one
exit status per RPC status class, the vcpu-create warning, help without reST markup, and the
perf-kvm-stat-style exit table with its per-vCPU split."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmxsim_client.cli import build_parser, main
from vmxsim_client.cli.status import STATUSES
from vmxsim_server.app import start_background
from vmxsim_server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
VMXSIM = str(Path(sys.executable).with_name("vmxsim"))


def vmxsim(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    return subprocess.run(
        [VMXSIM, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path
    for sub in subs:
        for name, child in sub.choices.items():
            yield from leaves(child, (*path, name))


def options(path: tuple[str, ...]) -> dict[str, argparse.Action]:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return {o: a for a in parser._actions for o in a.option_strings}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with start_background(ServerConfig(listen="127.0.0.1:0", metrics_listen=None)) as background:
        yield background.address


# --- version, completion, help -------------------------------------------------------------------


def test_version_is_the_installed_distributions() -> None:
    done = vmxsim("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"vmxsim {importlib.metadata.version('vmxsim')}"


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_completion_scripts_name_every_command(shell: str) -> None:
    done = vmxsim("completion", shell)
    assert done.returncode == 0, done.stderr
    for command in ("replay", "compare", "fields", "exit-reasons", "completion", "vcpu"):
        assert command in done.stdout
    if shell != "tcsh":  # shtab's tcsh script completes commands and choices only
        assert "--fail-on-failure" in done.stdout  # options too, not only commands
    if shell == "bash" and shutil.which("bash"):
        syntax = subprocess.run(["bash", "-n"], input=done.stdout, text=True, check=False)
        assert syntax.returncode == 0


def test_bash_completion_completes_a_subcommand() -> None:
    if not shutil.which("bash"):
        pytest.skip("bash is not installed")
    script = vmxsim("completion", "bash").stdout
    probe = script + textwrap_probe("vmxsim exit-r", 1)
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=False)
    assert done.stdout.split() == ["exit-reasons"], done.stderr


def textwrap_probe(line: str, word: int) -> str:
    """Bash lines that run the registered completion function on ``line``."""
    words = line.split()
    return (
        f"\nCOMP_WORDS=({' '.join(words)}); COMP_CWORD={word}; COMP_LINE='{line}';"
        f" COMP_POINT=${{#COMP_LINE}}\n"
        "$(complete -p vmxsim | sed 's/.*-F \\([^ ]*\\) .*/\\1/') vmxsim\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )


def test_help_shows_the_exit_statuses_and_no_rest_markup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for status in STATUSES:
        assert re.search(rf"^\s+{status.code}\s+{re.escape(status.meaning[:30])}", text, re.M)
    for path in leaves(build_parser()):
        assert main([*path, "--help"]) == 0
        shown = capsys.readouterr().out
        assert "``" not in shown and ":class:" not in shown and ":meth:" not in shown, path


def test_the_documented_exit_status_table_is_the_codes_table() -> None:
    text = (ROOT / "docs" / "client.md").read_text()
    documented = re.findall(r"^\| (\d+) \| ", text, re.M)
    assert [int(code) for code in documented] == [s.code for s in STATUSES]


# --- --json and --format json --------------------------------------------------------------------


def test_every_data_command_takes_both_json_spellings() -> None:
    checked = 0
    for path in leaves(build_parser()):
        found = options(path)
        trace_format = "--format" in found and "json" not in (found["--format"].choices or ())
        if "--json" not in found and ("--format" not in found or trace_format):
            continue  # prints no data (convert writes a trace, serve serves)
        assert "--json" in found and "--format" in found, path
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize(
    "argv", [["fields"], ["exit-reasons"], ["model", "counts"], ["fields", "decode", "0x681e"]]
)
def test_table_commands_take_json(argv: list[str]) -> None:
    by_flag = vmxsim(*argv, "--json")
    by_format = vmxsim(*argv, "--format", "json")
    assert by_flag.returncode == by_format.returncode == 0, by_flag.stderr
    assert json.loads(by_flag.stdout) == json.loads(by_format.stdout)


def test_json_commands_take_format_json(server: str) -> None:
    created = json.loads(vmxsim("vcpu", "create", "--server", server, "--json").stdout)
    listed = json.loads(vmxsim("vcpu", "list", "--server", server, "--format", "json").stdout)
    assert created["vcpu_id"] in {v["vcpu_id"] for v in listed}
    shown = vmxsim("vcpu", "show", created["vcpu_id"], "--server", server, "--format", "json")
    assert json.loads(shown.stdout)["vcpu_id"] == created["vcpu_id"]
    table = vmxsim("vcpu", "list", "--server", server, "--format", "table")
    assert table.stdout.startswith("vcpu_id")


def test_format_json_on_a_trace_command_says_to_use_json() -> None:
    done = vmxsim("replay", "mix:linux-boot:10", "--format", "json")
    assert done.returncode == 2
    assert "--format names the trace format here" in done.stderr and "use --json" in done.stderr
    assert done.stderr.count("\n") == 1


# --- exec --fail-on-failure and exit statuses ----------------------------------------------------


def test_exec_fail_on_failure_gates_on_failed_instructions(tmp_path: Path, server: str) -> None:
    failing = tmp_path / "failing.vmx"
    failing.write_text("VMXOFF\nREVID 0x1000\nVMXON 0x1000\nVMREAD GUEST_RIP\n")
    clean = tmp_path / "clean.vmx"
    clean.write_text("REVID 0x1000\nVMXON 0x1000\n")
    remote = ("--server", server)
    assert vmxsim("exec", str(failing), *remote).returncode == 0  # results, not errors
    gated = vmxsim("exec", str(failing), "--fail-on-failure", *remote, "--json")
    assert gated.returncode == 1
    results = [json.loads(line)["result"] for line in gated.stdout.splitlines()]
    assert results == ["fault", "VMsucceed", "VMsucceed", "VMfailInvalid"]
    assert "2 instruction(s) failed" in gated.stderr
    assert vmxsim("exec", str(clean), "--fail-on-failure", *remote).returncode == 0


def test_each_rpc_status_class_has_its_exit_status(server: str, tmp_path: Path) -> None:
    remote = ("--server", server)
    assert vmxsim("vcpu", "show", "vcpu-999999", *remote).returncode == 3  # NOT_FOUND
    bad = vmxsim("vcpu", "create", "--maxphyaddr", "60", *remote)
    assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr
    down = vmxsim("vcpu", "list", "--server", "127.0.0.1:1", "--timeout", "2")
    assert down.returncode == 6 and "UNAVAILABLE" in down.stderr
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-token-0123456789\n")
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen=None, auth_token_file=str(tokens))
    with start_background(config) as guarded:
        denied = vmxsim("vcpu", "list", "--server", guarded.address)
        assert denied.returncode == 7 and "UNAUTHENTICATED" in denied.stderr
    with start_background(
        ServerConfig(listen="127.0.0.1:0", metrics_listen=None, max_vcpus=1)
    ) as small:
        assert vmxsim("vcpu", "create", "--server", small.address).returncode == 0
        full = vmxsim("vcpu", "create", "--server", small.address)
        assert full.returncode == 5 and "RESOURCE_EXHAUSTED" in full.stderr


def test_vcpu_create_without_server_warns_that_the_vcpu_dies(server: str) -> None:
    alone = vmxsim("vcpu", "create", "--json")
    assert alone.returncode == 0 and json.loads(alone.stdout)["vcpu_id"]
    assert "warning: no --server" in alone.stderr and "dies with it" in alone.stderr
    assert "warning" not in vmxsim("vcpu", "create", "--server", server).stderr


# --- the perf-kvm-stat-style exit table ----------------------------------------------------------


@pytest.fixture(scope="module")
def two_vcpu_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL trace of two vCPUs: vCPU 0 makes CPUID and HLT exits, vCPU 1 CPUID and EPT."""
    path = tmp_path_factory.mktemp("traces") / "two-vcpus.jsonl"
    lines = [json.dumps({"vmxsim_trace": 1})]
    for i in range(400):
        vcpu = i % 2
        reason = "CPUID" if i % 4 < 2 else ("HLT" if vcpu == 0 else "EPT_VIOLATION")
        lines.append(json.dumps({"reason": reason, "rip": 0x1000 + i, "insn_len": 2, "vcpu": vcpu}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _table(text: str, heading: str) -> list[list[str]]:
    block = text.split(f"Analyze events for {heading}:\n\n", 1)[1].split("\n\n", 1)[0]
    return [line.split() for line in block.splitlines()]


def test_replay_prints_the_perf_table_split_per_vcpu(two_vcpu_trace: Path, server: str) -> None:
    done = vmxsim("replay", str(two_vcpu_trace), "--profile", "kvm", "--mode", "nested",
                  "--server", server)  # fmt: skip
    assert done.returncode == 0, done.stderr
    overall = _table(done.stdout, "all VMs, all vCPUs")
    assert overall[0] == ["VM-EXIT", "Samples", "Samples%", "Time%", "Min", "Time", "Max",
                          "Time", "Avg", "time", "VMREAD/exit", "VMWRITE/exit"]  # fmt: skip
    samples = {row[0]: int(row[1]) for row in overall[1:]}
    assert samples == {"CPUID": 200, "HLT": 100, "EPT_VIOLATION": 100}
    assert overall[1][0] == "CPUID"  # sorted by samples
    assert all(
        re.fullmatch(r"[\d.]+(ns|us|ms|s)", cell) for row in overall[1:] for cell in row[4:7]
    )
    vcpu0 = {row[0]: int(row[1]) for row in _table(done.stdout, "vCPU 0")[1:]}
    vcpu1 = {row[0]: int(row[1]) for row in _table(done.stdout, "vCPU 1")[1:]}
    assert vcpu0 == {"CPUID": 100, "HLT": 100} and vcpu1 == {"CPUID": 100, "EPT_VIOLATION": 100}
    assert "Total Samples:400" in done.stdout


@pytest.mark.parametrize(("key", "order"), [
    ("name", ["CPUID", "EPT_VIOLATION", "HLT"]),
    ("time", None),
    ("vmread", None),
])  # fmt: skip
def test_replay_table_sorts(two_vcpu_trace: Path, key: str, order: list[str] | None) -> None:
    done = vmxsim("replay", str(two_vcpu_trace), "--profile", "kvm", "--sort", key)
    assert done.returncode == 0, done.stderr
    rows = _table(done.stdout, "all VMs, all vCPUs")[1:]
    if order is not None:
        assert [row[0] for row in rows] == order
    elif key == "time":
        shares = [float(row[3].rstrip("%")) for row in rows]
        assert shares == sorted(shares, reverse=True)
    else:
        means = [float(row[7]) for row in rows]
        assert means == sorted(means, reverse=True)


def test_replay_json_exit_table_and_compare_tables(two_vcpu_trace: Path, server: str) -> None:
    done = vmxsim("replay", str(two_vcpu_trace), "--json", "--exit-table", "--server", server)
    table = json.loads(done.stdout)["exit_table"]
    assert set(table["by_vcpu"]) == {"0/0", "0/1"}
    assert sum(t["samples"] for t in table["by_vcpu"]["0/1"].values()) == 200
    cpuid = table["all"]["CPUID"]
    assert cpuid["min_seconds"] <= cpuid["avg_seconds"] <= cpuid["max_seconds"]
    assert cpuid["samples"] * cpuid["avg_seconds"] == pytest.approx(cpuid["seconds"])
    plain = json.loads(vmxsim("replay", str(two_vcpu_trace), "--json", "--server", server).stdout)
    assert "exit_table" not in plain  # the JSON contract stays as it was unless asked
    compared = vmxsim("compare", str(two_vcpu_trace), "--profiles", "kvm,haxm-legacy",
                      "--modes", "native", "--server", server)  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    assert (
        "=== kvm / native ===" in compared.stdout
        and "=== haxm-legacy / native ===" in compared.stdout
    )
    assert compared.stdout.count("Analyze events for vCPU 1:") == 2


def test_printed_latencies_carry_units(server: str) -> None:
    load = vmxsim("load", "--server", server, "--clients", "1", "--vcpus-per-client", "1",
                  "--exits", "2000", "--mix", "linux-boot", "--batch-size", "500")  # fmt: skip
    assert load.returncode == 0, load.stderr
    lines = load.stdout.split("batch round trip:\n", 1)[1].splitlines()
    header, values = lines[0].split(), re.split(r"\s{2,}", lines[1].strip())
    assert {"p50", "p99", "max"} <= set(header) and len(values) == len(header)
    assert all(re.fullmatch(r"[\d,.]+ us", value) for value in values), values
    replay = vmxsim("replay", "mix:linux-boot:500", "--server", server)
    assert re.search(r"simulated time [\d.]+ s", replay.stdout)
    assert "Total time: " in replay.stdout and re.search(
        r"Total time: [\d.]+(ns|us|ms|s)\n", replay.stdout
    )
