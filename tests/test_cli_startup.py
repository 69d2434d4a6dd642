"""Start-up (issue 15.4): a command imports what it uses. ``vmxsim fields`` and ``vmxsim
exit-reasons`` run in a fresh interpreter without importing grpc, tqdm, numpy, matplotlib or
the report stack; the lazy command table names every command the full parser has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from vmxsim_client.cli import entry, status

TRACE = Path(__file__).parent / "fixtures" / "traces" / "ftrace_mid.txt"

HEAVY = ("grpc", "tqdm", "numpy", "matplotlib", "vmxsim_client.reports", "vmxsim_client.client")
_PROBE = f"""
import contextlib, io, json, sys
from vmxsim_client.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(sys.argv[1:])
print(json.dumps({{"code": code, "lines": len(out.getvalue().splitlines()),
                  "modules": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


@pytest.mark.parametrize("argv", [["fields"], ["exit-reasons"], ["fields", "decode", "0x681e"]])
def test_table_commands_import_no_grpc_tqdm_numpy_or_reports(argv: list[str]) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=True
    )
    result = json.loads(child.stdout.splitlines()[-1])
    assert result["code"] == 0
    assert result["lines"] > 3  # it printed its table
    assert result["modules"] == []


@pytest.mark.parametrize("output", [["--json"], []], ids=["json", "exit-table"])
def test_replay_reads_its_trace_before_grpc_loads(output: list[str]) -> None:
    """A replay's parser imports no grpc, and the trace's read-ahead thread starts before grpc
    (and the in-process server) load: the reading overlaps their imports, with --json and with
    the per-exit results the default exit table needs. The probe also shows that it sees an
    import: by the end of the replay grpc is loaded."""
    help_child = subprocess.run(
        [sys.executable, "-c", _PROBE, "replay", "--help"], capture_output=True, text=True
    )
    assert "grpc" not in json.loads(help_child.stdout.splitlines()[-1])["modules"]
    probe = (
        "import json, sys\n"
        "from vmxsim_client.cli import main\n"
        "from vmxsim_client.traces import readahead\n"
        "seen = []\n"
        "start = readahead.ReadAhead.__init__\n"
        "def spy(self, *args, **kwargs):\n"
        "    seen.append(('grpc' in sys.modules, 'vmxsim_server.app' in sys.modules))\n"
        "    start(self, *args, **kwargs)\n"
        "readahead.ReadAhead.__init__ = spy\n"
        f"code = main(['replay', {str(TRACE)!r}, *{output!r}])\n"
        "print(json.dumps({'code': code, 'seen': seen, 'grpc': 'grpc' in sys.modules}))\n"
    )
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.splitlines()[-1])
    assert result["code"] == 0
    assert result["seen"] == [[False, False]]
    assert result["grpc"]


def test_command_table_equals_the_full_parser() -> None:
    parser = entry.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == list(entry.COMMANDS)  # type: ignore[attr-defined]
    for command in entry.COMMANDS:
        alone = entry.build_parser(command)
        alone_sub = next(a for a in alone._actions if a.dest == "command")
        assert command in alone_sub.choices  # type: ignore[attr-defined]


def test_exit_status_code_names_are_grpc_codes() -> None:
    names = {code.name for code in grpc.StatusCode}
    for exit_status in status.STATUSES:
        assert set(exit_status.rpc_codes) <= names, exit_status
    assert status.for_rpc_code(grpc.StatusCode.NOT_FOUND) == 3
    assert status.for_rpc_code(grpc.StatusCode.UNIMPLEMENTED) == 8


def test_a_remote_replay_does_not_load_the_core_engine_or_the_reports() -> None:
    """``vmxsim replay --server`` needs grpc and the reader, not the engine, numpy or the dump
    readers (they load with the in-process server, when there is one), nor tqdm (only for a
    bar on a terminal) or the comparison and chart reports."""
    probe = (
        "import sys, vmxsim_client.cli.cmd_replay\n"
        "core = ('vmxsim_server.vmx.engine', 'numpy', 'vmxsim_server.vmx.dumps', 'tqdm',\n"
        "        'vmxsim_client.reports.comparison', 'vmxsim_client.reports.write')\n"
        "print([m for m in core if m in sys.modules])"
    )
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "[]"


def test_the_in_process_server_does_not_load_the_dump_readers() -> None:
    """The embedded server reads no VMCS dumps: their readers load when a dump is diagnosed."""
    probe = "import sys, vmxsim_server.app\nprint('vmxsim_server.vmx.dumps' in sys.modules)"
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "False"
