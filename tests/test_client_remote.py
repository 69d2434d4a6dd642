"""The typed client against a real server on a loopback socket: vCPU management, instructions
with architectural outcomes as values, drive/replay streams, stats, snapshots and typed errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from vmxsim_client.client import Client, RemoteVcpu
from vmxsim_client.instructions import Instruction
from vmxsim_client.rpc_errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from vmxsim_server.vmx.entry_checks import valid_state
from vmxsim_server.vmx.mixes import load_mix, synthesize
from vmxsim_server.vmx.records import ExitRecord

SUMMARY_KEYS = {
    "profile", "mode", "exits", "skipped", "unknown_reasons", "instructions", "per_exit",
    "cache", "simulated_seconds", "by_reason", "panics", "l0",
}  # fmt: skip
INSTRUCTION_KEYS = {"vmread", "vmwrite", "vmptrld", "vmclear", "vmxon", "vmxoff", "other"}


@pytest.fixture
def client(vmxsim_address: str) -> Iterator[Client]:
    with Client(vmxsim_address, timeout=10.0) as c:
        yield c


SETUP = (("REVID", 0x1000), ("VMXON", 0x1000), ("REVID", 0x2000), ("VMCLEAR", 0x2000),
         ("VMPTRLD", 0x2000))  # fmt: skip


def _root(v: RemoteVcpu) -> None:
    """VMXON at 0x1000 and a current VMCS at 0x2000."""
    results = v.execute([Instruction(op, (address,)) for op, address in SETUP])
    assert all(r.result == "VMsucceed" for r in results), results


def assert_run_summary(summary: dict[str, Any]) -> None:
    """The DESIGN.md "Machine-readable output" run-summary shape."""
    assert set(summary) >= SUMMARY_KEYS
    assert set(summary["instructions"]) == INSTRUCTION_KEYS
    for name in ("vmread", "vmwrite"):
        assert set(summary["per_exit"][name]) == {"mean", "p50", "p99"}
    assert set(summary["cache"]) == {"hits", "misses"}
    for totals in summary["by_reason"].values():
        assert {"exits", "vmread", "vmwrite"} <= set(totals)


def test_vcpu_lifecycle_and_listing(client: Client) -> None:
    v = client.create_vcpu(profile="haxm-cache", mode="nested-shadow", revision_id=0x1234)
    assert (v.info.profile, v.info.mode, v.info.vcpu_mode) == ("haxm-cache", "nested-shadow", "off")
    assert v.info.capabilities["revision_id"] == 0x1234
    assert v.id in {i.vcpu_id for i in client.list_vcpus()}
    assert [i.vcpu_id for i in client.list_vcpus(vm=v.info.vm_id)] == [v.id]
    assert v.info.vm_id in {vm.vm_id for vm in client.list_vms()}
    v.delete()
    with pytest.raises(NotFoundError, match="NOT_FOUND"):
        client.get_vcpu(v.id)


def test_vcpus_share_a_vm(client: Client) -> None:
    vm = client.create_vm()
    a = client.create_vcpu(vm=vm.vm_id)
    b = client.create_vcpu(vm=vm.vm_id)
    assert client.list_vms()[-1].vm_id == vm.vm_id
    assert {i.vcpu_id for i in client.list_vcpus(vm=vm.vm_id)} == {a.id, b.id}
    client.delete_vm(vm.vm_id)
    with pytest.raises(NotFoundError):
        client.get_vcpu(a.id)


def test_vmwrite_then_vmread_returns_the_value(client: Client) -> None:
    v = client.create_vcpu()
    _root(v)
    assert v.vmwrite("GUEST_RIP", 0x1000).result == "VMsucceed"
    read = v.vmread(0x681E)
    assert (read.result, read.value) == ("VMsucceed", 0x1000)
    assert v.vmptrst().value == 0x2000
    assert v.refresh().vcpu_mode == "root" and v.info.current_vmcs_pointer == 0x2000


def test_architectural_failures_are_values(client: Client) -> None:
    v = client.create_vcpu()
    off = v.vmxoff()
    assert (off.result, off.fault) == ("fault", "#UD")
    v.revid(0x1000)
    v.vmxon(0x1000)
    no_vmcs = v.vmread("GUEST_RIP")
    assert no_vmcs.result == "VMfailInvalid" and no_vmcs.value is None
    v.revid(0x2000)
    v.vmptrld(0x2000)
    read_only = v.vmwrite("VM_EXIT_REASON", 1)
    assert (read_only.result, read_only.error) == ("VMfailValid", 13)
    assert read_only.error_name
    assert v.vmresume().error == 5  # VMRESUME with a clear VMCS


def test_failed_entry_then_exit_injection(client: Client) -> None:
    v = client.create_vcpu()
    _root(v)
    state = [Instruction("VMWRITE", (name, value)) for name, value in valid_state_items()]
    assert all(r.ok for r in v.execute(state))
    v.vmwrite("GUEST_RFLAGS", 0)  # bit 1 must be set: invalid guest state
    failed = v.vmlaunch()
    assert failed.result == "entry-failed" and failed.exit_reason == 0x8000_0021
    v.vmwrite("GUEST_RFLAGS", 2)
    assert v.vmlaunch().result == "VMsucceed"
    assert v.refresh().vcpu_mode == "non-root"
    assert v.exit("CPUID", rip=0x4000, instruction_len=2).result in ("VMsucceed", "vm-exit")
    assert v.vmread("VM_EXIT_REASON").value == 10


def valid_state_items() -> list[tuple[str, int]]:
    from vmxsim_server.vmx import DEFAULT_CAPABILITIES

    return list(valid_state(DEFAULT_CAPABILITIES).items())


def test_execute_batch_keeps_lines_and_can_stop_on_failure(client: Client) -> None:
    v = client.create_vcpu()
    batch = [
        Instruction("VMXOFF", line=7),
        Instruction("REVID", (0x1000,), line=8),
    ]
    results = v.execute(batch, stop_on_failure=True)
    assert [(r.line, r.result) for r in results] == [(7, "fault")]
    assert [r.line for r in v.execute(batch)] == [7, 8]


def test_replay_returns_the_run_summary(client: Client) -> None:
    records = list(synthesize(load_mix("linux-boot"), 3000, seed=1))
    progress: list[dict[str, Any]] = []
    summary = client.replay(
        records, profile="haxm-legacy", mode="nested", batch_size=1000, on_progress=progress.append,
        skipped=2, unknown_reasons={"FOO": 3},
    )  # fmt: skip
    assert_run_summary(summary)
    exits = summary["exits"] + sum(summary["panics"].values())  # HAXM panics on some reasons
    assert (summary["profile"], summary["mode"], exits) == ("haxm-legacy", "nested", 3000)
    assert (summary["skipped"], summary["unknown_reasons"]) == (2, {"FOO": 3})
    assert [p["acked_sequence"] for p in progress] == [1, 2, 3]
    assert progress[-1]["exits"] == 3000
    assert 30 <= summary["per_exit"]["vmread"]["mean"] <= 40  # the seed's HAXM: 32-33 per exit


def test_replay_is_deterministic_and_orders_profiles(client: Client) -> None:
    records = list(synthesize(load_mix("linux-boot"), 2000, seed=2))
    kvm = client.replay(records, profile="kvm", mode="nested")
    assert client.replay(iter(records), profile="kvm", mode="nested") == kvm
    rebatched = client.replay(records, profile="kvm", mode="nested", batch_size=333)
    assert rebatched["instructions"] == kvm["instructions"]  # sums of floats may differ in ulps
    assert rebatched["per_exit"] == kvm["per_exit"]
    haxm = client.replay(records, profile="haxm-legacy", mode="nested")
    assert haxm["simulated_seconds"] > kvm["simulated_seconds"]


def test_drive_sums_batches_and_stats_agree(client: Client) -> None:
    v = client.create_vcpu(profile="kvm", mode="native")
    records = list(synthesize(load_mix("linux-boot"), 2500, seed=3))
    seen: list[int] = []
    totals = v.drive(
        records, batch_size=1000, per_exit=True, on_batch=lambda b: seen.append(b["exits"])
    )
    assert seen == [1000, 1000, 500] and totals["batches"] == 3
    stats = v.stats()
    assert_run_summary(stats)
    for key in ("exits", "instructions", "cache", "per_exit"):
        assert totals[key] == stats[key], key
    assert v.refresh().exits == 2500
    # the exit information of the last exit is readable between batches
    assert v.vmread("VM_EXIT_REASON").value == records[-1].reason


def test_snapshot_restores_a_copy(client: Client) -> None:
    v = client.create_vcpu(profile="kvm")
    _root(v)
    v.vmwrite("GUEST_RSP", 0xABC)
    copy = client.restore(v.snapshot())
    assert copy.id != v.id and copy.info.vcpu_mode == "root"
    assert copy.vmread("GUEST_RSP").value == 0xABC


def test_typed_errors_carry_the_servers_message(client: Client) -> None:
    with pytest.raises(NotFoundError) as not_found:
        client.vcpu("no-such-vcpu")
    assert "no-such-vcpu" in not_found.value.details
    v = client.create_vcpu()
    with pytest.raises(InvalidArgumentError, match=r"INVALID_ARGUMENT: .*NOPE"):
        client.valid_state(v.id, NOPE=1)


def test_a_vcpu_is_driven_by_one_stream_at_a_time(client: Client) -> None:
    v = client.create_vcpu()
    records = [ExitRecord(10, instruction_len=2)] * 10

    def busy_source() -> Iterator[ExitRecord]:
        # while this stream holds the vCPU, a second stream on it must be refused
        with pytest.raises(FailedPreconditionError):
            v.drive(records)
        yield from records

    assert v.drive(busy_source())["exits"] == 10


def test_an_unreachable_server_is_unavailable() -> None:
    with Client("127.0.0.1:1", timeout=2.0) as c, pytest.raises(UnavailableError):
        c.list_vms()
