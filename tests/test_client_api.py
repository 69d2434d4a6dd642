"""The Python client as harness authors use it (issue 16.1), against real servers on loopback
ports: the package's public names, typed modes/profiles/summaries (mypy and runtime), the
helpers that reach VM entry, the asyncio client, counts that agree, and a replay resumed from
another process."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mypy import api as mypy_api

import vmxsim_client
from vmxsim_client import (
    AsyncClient,
    Client,
    InvalidArgumentError,
    Mode,
    NotFoundError,
    Profile,
    RunSummary,
    VmxSetupError,
)
from vmxsim_client.summaries import InstructionCounts
from vmxsim_client.traces import write_jsonl
from vmxsim_server.app import start_background
from vmxsim_server.config import ServerConfig
from vmxsim_server.vmx.latency import MODES
from vmxsim_server.vmx.mixes import load_mix, synthesize
from vmxsim_server.vmx.profiles import available_profiles
from vmxsim_server.vmx.summary import INSTRUCTIONS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def client(vmxsim_address: str) -> Iterator[Client]:
    with Client(vmxsim_address, timeout=10.0) as c:
        yield c


# --- the package's names and types ---------------------------------------------------------------


def test_the_package_exports_the_clients_and_the_error_types() -> None:
    for name in vmxsim_client.__all__:
        assert getattr(vmxsim_client, name) is not None, name
    assert {"Client", "AsyncClient", "VmxsimRpcError", "NotFoundError", "VmxSetupError"} <= set(
        vmxsim_client.__all__
    )
    from vmxsim_client.client import Client as Documented  # README's older path still works

    assert Documented is Client


def test_the_literal_types_spell_the_tables() -> None:
    assert typing.get_args(Mode) == MODES
    assert sorted(typing.get_args(Profile)) == available_profiles()
    assert tuple(InstructionCounts.__annotations__) == (*INSTRUCTIONS, "other")


def test_a_misspelt_mode_fails_in_mypy(tmp_path: Path) -> None:
    harness = tmp_path / "harness.py"
    harness.write_text(
        textwrap.dedent(
            """
            from vmxsim_client import Client, RunSummary

            def run(client: Client) -> int:
                client.create_vcpu(profile="kvm", mode="nested")
                summary: RunSummary = client.replay([], profile="haxm-legacy", mode="nestd")
                return summary["exits"] + summary["instructions"]["vmread"]
            """
        )
    )
    out, _, status = mypy_api.run(["--strict", str(harness)])
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1 and len(errors) == 1, out
    assert 'harness.py:6: error: Argument "mode"' in errors[0], out
    assert (
        "Literal['nestd']" in errors[0]
        and "Literal['native', 'nested', 'nested-shadow']" in errors[0]
    )


def test_a_misspelt_mode_or_profile_fails_at_the_call_before_any_rpc() -> None:
    unreachable = Client("127.0.0.1:1", timeout=0.5)  # nothing listens: an RPC would fail
    with pytest.raises(ValueError, match=r"unknown mode 'nestd' \(known: native, nested"):
        unreachable.create_vcpu(mode="nestd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown profile 'kvmm' \(known: haxm-cache"):
        unreachable.replay([], profile="kvmm")  # type: ignore[arg-type]
    unreachable.close()

    async def asynchronous() -> None:
        async with AsyncClient("127.0.0.1:1", timeout=0.5) as c:
            with pytest.raises(ValueError, match="unknown mode 'nestd'"):
                await c.replay([], mode="nestd")  # type: ignore[arg-type]

    asyncio.run(asynchronous())


def test_summaries_carry_exactly_the_typed_keys(client: Client) -> None:
    records = list(synthesize(load_mix("linux-boot"), 500, seed=1))
    summary = client.replay(records, profile="kvm", mode="nested")
    assert set(summary) == set(RunSummary.__annotations__)
    assert set(summary["instructions"]) == set(InstructionCounts.__annotations__)
    assert summary["exits"] == 500


# --- helpers and counts --------------------------------------------------------------------------


def test_helpers_reach_vm_entry_and_an_injected_exit_counts_once(client: Client) -> None:
    v = client.create_vcpu(profile="kvm", mode="nested", revision_id=0x1234)
    assert [r.op for r in v.enter_vmx()] == ["REVID", "VMXON", "REVID", "VMCLEAR", "VMPTRLD"]
    assert v.refresh().vcpu_mode == "root" and v.info.current_vmcs_pointer == 0x2000
    state = v.write_valid_state(GUEST_RIP=0x4000)
    assert state["GUEST_RIP"] == 0x4000 and len(state) > 20
    assert v.vmread("GUEST_RIP").value == 0x4000
    assert v.vmlaunch().result == "VMsucceed"
    exit_result = v.inject_exit("CPUID", instruction_len=2)
    assert (exit_result.result, exit_result.exit_reason) == ("vm-exit", 10)
    assert v.vmread("VM_EXIT_REASON").value == 10
    assert v.refresh().exits == v.stats()["exits"] == 1
    assert v.stats()["by_reason"]["CPUID"]["exits"] == 1
    assert v.vmresume().result == "VMsucceed"
    v.inject_exit(30, qualification=0x60)  # IO_INSTRUCTION by number
    v.drive(synthesize(load_mix("linux-boot"), 100, seed=2))
    assert v.refresh().exits == v.stats()["exits"] == 102


def test_helper_failures_say_which_step_failed(client: Client) -> None:
    v = client.create_vcpu()
    with pytest.raises(VmxSetupError, match="inject_exit: EXIT answered fault"):
        v.inject_exit("CPUID")
    v.enter_vmx()
    with pytest.raises(VmxSetupError, match=r"enter_vmx: VMXON answered VMfailValid \(15\)"):
        v.enter_vmx()
    with pytest.raises(ValueError, match="unknown exit field 'ripp'"):
        v.inject_exit("CPUID", ripp=1)
    with pytest.raises(InvalidArgumentError, match="NO_SUCH_FIELD"):
        v.write_valid_state(NO_SUCH_FIELD=1)


def test_an_override_can_make_the_valid_state_fail_entry(client: Client) -> None:
    v = client.create_vcpu()
    v.enter_vmx()
    v.write_valid_state(GUEST_RFLAGS=0)  # bit 1 must be set: invalid guest state
    failed = v.vmlaunch()
    assert failed.result == "entry-failed" and failed.exit_reason == 0x8000_0021


# --- the asyncio client --------------------------------------------------------------------------


def test_the_async_client_does_what_the_sync_one_does(vmxsim_address: str) -> None:
    records = list(synthesize(load_mix("linux-boot"), 3000, seed=4))
    with Client(vmxsim_address) as sync:
        expected = sync.replay(records, profile="haxm-legacy", mode="nested", batch_size=700)

    async def run() -> tuple[RunSummary, Any, int, int, list[int]]:
        async with AsyncClient(vmxsim_address, timeout=10.0) as c:
            acked: list[int] = []
            summary = await c.replay(
                records, profile="haxm-legacy", mode="nested", batch_size=700,
                on_progress=lambda p: acked.append(p["acked_sequence"]),
            )  # fmt: skip
            v = await c.create_vcpu(profile="kvm")
            await v.enter_vmx()
            await v.write_valid_state()
            launched = await v.vmlaunch()
            await v.inject_exit("CPUID", instruction_len=2)
            counts = ((await v.refresh()).exits, (await v.stats())["exits"])
            drive = await v.drive(records[:1000], batch_size=250, per_exit=True)
            with pytest.raises(NotFoundError):
                await c.get_vcpu("vcpu-999999")
            await v.delete()
            assert launched.result == "VMsucceed" and drive["batches"] == 4
            return summary, drive, *counts, acked

    summary, drive, vcpu_exits, stats_exits, acked = asyncio.run(run())
    assert summary == expected
    assert acked == [1, 2, 3, 4, 5]
    assert vcpu_exits == stats_exits == 1
    assert drive["exits"] == 1000 and drive["per_exit"]["vmread"]["p50"] > 0


def test_an_async_replay_raises_the_readers_own_error(vmxsim_address: str) -> None:
    def broken() -> Iterator[Any]:
        yield from synthesize(load_mix("linux-boot"), 10, seed=1)
        raise OSError("disk went away")

    async def run() -> None:
        async with AsyncClient(vmxsim_address) as c:
            await c.replay(broken(), batch_size=5)

    with pytest.raises(OSError, match="disk went away"):
        asyncio.run(run())


# --- a replay resumed from another process -------------------------------------------------------

_RESUME = """
import json, sys
from vmxsim_client import Client
from vmxsim_client.traces import open_trace
address, path, token = sys.argv[1:]
with Client(address) as client, open_trace(path) as reader:
    summary = client.replay(reader, profile="kvm", mode="native", batch_size=1000,
                            resume_token=token, resume=True)
print(json.dumps(summary))
"""


class _Stop(Exception):
    pass


def test_a_replay_resumes_in_another_process_with_its_token(tmp_path: Path) -> None:
    # native mode: a replay checkpoint does not carry L0 totals yet (nested l0_exits restart)
    from vmxsim_client.traces import open_trace

    trace = tmp_path / "exits.jsonl"
    with trace.open("w") as out:
        write_jsonl(synthesize(load_mix("linux-boot"), 8000, seed=5), out)
    config = ServerConfig(
        listen="127.0.0.1:0", metrics_listen=None, grace_seconds=0.2, state_dir=str(tmp_path / "s")
    )
    with start_background(config) as server, Client(server.address) as client:
        with open_trace(str(trace)) as reader:
            expected = client.replay(reader, profile="kvm", mode="native", batch_size=1000)
        tokens: list[str] = []

        def stop_after_three(progress: Any) -> None:
            tokens.append(progress["resume_token"])
            if len(tokens) == 3:
                raise _Stop  # this process gives up after three durable batches

        with open_trace(str(trace)) as reader, pytest.raises(_Stop):
            client.replay(
                reader, profile="kvm", mode="native", batch_size=1000,
                on_progress=stop_after_three,
            )  # fmt: skip
        assert tokens[-1]
        done = subprocess.run(
            [sys.executable, "-c", _RESUME, server.address, str(trace), tokens[-1]],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    resumed = json.loads(done.stdout)
    assert resumed["exits"] == expected["exits"] == 8000
    assert resumed["instructions"] == expected["instructions"]
    counts = ("exits", "vmread", "vmwrite", "l0_exits")
    for name, totals in expected["by_reason"].items():
        again = resumed["by_reason"][name]
        assert {k: again[k] for k in counts} == {k: totals[k] for k in counts}, name
        assert again["simulated_seconds"] == pytest.approx(totals["simulated_seconds"])


# --- the documented examples run -----------------------------------------------------------------


def _python_blocks(path: Path) -> list[str]:
    text = path.read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


@pytest.mark.parametrize("doc", ["README.md", "docs/client.md"])
def test_the_documented_python_examples_run(doc: str, vmxsim_address: str) -> None:
    blocks = _python_blocks(ROOT / doc)
    assert blocks, doc
    for block in blocks:
        code = block.replace('"127.0.0.1:50051"', "ADDRESS")
        exec(compile(code, doc, "exec"), {"ADDRESS": vmxsim_address, "__name__": "example"})


# --- what the server offers ----------------------------------------------------------------------


def test_the_clients_list_what_the_server_offers(vmxsim_address: str) -> None:
    """``list_profiles``/``list_mixes``/``list_l0_models`` (sync and async) name exactly the
    server's shipped profiles, mixes and L0 models, each with its title or source, and a listed
    name works where it is used (a profile and an L0 model for a nested vCPU)."""
    from vmxsim_server.vmx.l0 import available_l0_models
    from vmxsim_server.vmx.mixes import available_mixes

    with Client(vmxsim_address) as client:
        profiles, mixes, l0 = client.list_profiles(), client.list_mixes(), client.list_l0_models()
        vcpu = client.create_vcpu(profile=profiles[-1].name, mode="nested", l0=l0[0].name)
        assert vcpu.info.profile == profiles[-1].name
        vcpu.delete()
    assert sorted(p.name for p in profiles) == sorted(available_profiles())
    assert sorted(m.name for m in mixes) == sorted(available_mixes())
    assert sorted(m.name for m in l0) == sorted(available_l0_models())
    assert all(p.title and p.description and p.sources for p in profiles)
    assert all(m.source and math.isclose(sum(m.weights.values()), 1.0) for m in mixes)
    assert all(m.title for m in l0)

    async def run() -> tuple[Any, Any, Any]:
        async with AsyncClient(vmxsim_address) as c:
            return await c.list_profiles(), await c.list_mixes(), await c.list_l0_models()

    assert asyncio.run(run()) == (profiles, mixes, l0)
