"""Execute over gRPC: architectural outcomes are normal responses; malformed requests are
INVALID_ARGUMENT and run nothing."""

from __future__ import annotations

import grpc
from conftest_service import VMCS_REGION, ins, named, root_setup, rpc_error, valid_writes

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc

OK = pb.OUTCOME_RESULT_VMSUCCEED


def run(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str, *instructions: pb.Instruction, stop: bool = False
) -> list[pb.InstructionResult]:
    request = pb.ExecuteRequest(vcpu_id=vcpu_id, instructions=instructions, stop_on_failure=stop)
    return list(stub.Execute(request).results)


def test_launch_exit_and_read_the_exit_information(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    results = run(stub, vcpu_id, *root_setup(), *valid_writes(), ins("vmlaunch", line=7))
    assert {r.result for r in results} == {OK}
    assert results[-1].op == "VMLAUNCH" and results[-1].line == 7
    vcpu = stub.GetVcpu(pb.GetVcpuRequest(vcpu_id=vcpu_id)).vcpu
    assert vcpu.vcpu_mode == pb.VCPU_MODE_NON_ROOT and vcpu.current_vmcs_pointer == VMCS_REGION
    record = pb.ExitRecord(reason=10, rip=0x4000, instruction_len=2)
    exited, reason, stored = run(
        stub,
        vcpu_id,
        ins("exit", record=record),
        ins("vmread", field=named("vm_exit_reason")),
        ins("vmptrst"),
    )
    assert (exited.op, exited.result, exited.exit_reason) == ("EXIT", pb.OUTCOME_RESULT_VM_EXIT, 10)
    assert (reason.result, reason.value) == (OK, 10)
    assert stored.value == VMCS_REGION
    assert stub.GetVcpu(pb.GetVcpuRequest(vcpu_id=vcpu_id)).vcpu.exits == 1


def test_vmfail_invalid_without_a_current_vmcs(stub: pb_grpc.VcpuServiceStub, vcpu_id: str) -> None:
    read = run(stub, vcpu_id, *root_setup()[:2], ins("vmread", field=named("GUEST_RIP")))[-1]
    assert read.result == pb.OUTCOME_RESULT_VMFAIL_INVALID
    assert not read.HasField("value") and read.error == 0


def test_vmfail_valid_carries_the_error_number_and_name(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    write = run(stub, vcpu_id, *root_setup(), ins("vmwrite", field=named("VM_EXIT_REASON")))[-1]
    assert (write.result, write.error) == (pb.OUTCOME_RESULT_VMFAIL_VALID, 13)
    assert write.error_name == "VMWRITE to read-only VMCS component"
    error = run(stub, vcpu_id, ins("vmread", field=named("VM_INSTRUCTION_ERROR")))[0]
    assert error.value == 13


def test_an_encoding_that_is_no_component_is_vmfail_valid_12(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    run(stub, vcpu_id, *root_setup())
    for encoding in (0x7FFE, 0x1_0000_681E):  # no such field; bits 63:32 set
        read = run(stub, vcpu_id, ins("vmread", field=pb.FieldRef(encoding=encoding)))[0]
        assert (read.result, read.error) == (pb.OUTCOME_RESULT_VMFAIL_VALID, 12)
        assert "unsupported VMCS component" in read.error_name
    by_encoding = run(stub, vcpu_id, ins("vmread", field=pb.FieldRef(encoding=0x681E)))[0]
    assert by_encoding.result == OK


def test_vmx_instruction_outside_vmx_operation_faults_ud(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    fault = run(stub, vcpu_id, ins("vmxoff", line=3))[0]
    assert (fault.line, fault.op, fault.result, fault.fault) == (
        3,
        "VMXOFF",
        pb.OUTCOME_RESULT_FAULT,
        "#UD",
    )


def test_entry_with_bad_guest_state_fails_as_an_exit(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    bad_rflags = ins("vmwrite", field=named("GUEST_RFLAGS"), value=0)  # bit 1 must be set
    results = run(stub, vcpu_id, *root_setup(), *valid_writes(), bad_rflags, ins("vmlaunch"))
    failed = results[-1]
    assert failed.result == pb.OUTCOME_RESULT_ENTRY_FAILED
    assert failed.exit_reason == 0x8000_0021 and "RFLAGS" in failed.message


def test_unknown_field_name_is_invalid_argument_and_nothing_runs(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    request = pb.ExecuteRequest(
        vcpu_id=vcpu_id,
        instructions=[*root_setup(), ins("vmread", field=named("NOT_A_FIELD"))],
    )
    error = rpc_error(stub.Execute, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NOT_A_FIELD" in error.details()
    assert stub.GetVcpu(pb.GetVcpuRequest(vcpu_id=vcpu_id)).vcpu.vcpu_mode == pb.VCPU_MODE_OFF


def test_an_instruction_without_an_operation_is_invalid_argument(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    request = pb.ExecuteRequest(vcpu_id=vcpu_id, instructions=[pb.Instruction(line=12)])
    error = rpc_error(stub.Execute, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "line 12" in error.details()


def test_pseudo_op_failures_are_faults_with_a_message(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    exit_, misaligned, msr, cr0, cr4 = run(
        stub,
        vcpu_id,
        ins("exit", record=pb.ExitRecord(reason=10)),
        ins("mem32", address=0x1002, value=1),
        ins("wrmsr", index=0x3A, value=5),
        ins("cr0", value=0x8005_0033),
        ins("cr4", value=0x2020),
    )
    assert exit_.result == pb.OUTCOME_RESULT_FAULT and "running guest" in exit_.message
    assert misaligned.result == pb.OUTCOME_RESULT_FAULT and "aligned" in misaligned.message
    assert [r.result for r in (msr, cr0, cr4)] == [OK] * 3
    assert [r.op for r in (exit_, misaligned, msr, cr0, cr4)] == [
        "EXIT", "MEM32", "WRMSR", "CR0", "CR4",
    ]  # fmt: skip


def test_stop_on_failure_ends_with_the_failing_instruction(
    stub: pb_grpc.VcpuServiceStub, vcpu_id: str
) -> None:
    results = run(stub, vcpu_id, ins("cr4", value=0x2020), ins("vmxoff"), ins("vmptrst"), stop=True)
    assert [r.op for r in results] == ["CR4", "VMXOFF"]
    assert len(run(stub, vcpu_id, ins("vmxoff"), ins("vmptrst"))) == 2


def test_vmcs_memory_is_shared_by_the_vcpus_of_a_vm(stub: pb_grpc.VcpuServiceStub) -> None:
    vm = stub.CreateVm(pb.CreateVmRequest()).vm
    first, second = (
        stub.CreateVcpu(pb.CreateVcpuRequest(vm_id=vm.vm_id)).vcpu.vcpu_id for _ in range(2)
    )
    write = ins("vmwrite", field=named("GUEST_RIP"), value=0xABC)
    run(stub, first, *root_setup(), write, ins("vmclear", address=VMCS_REGION))
    setup = [i for i in root_setup() if i.WhichOneof("op") != "vmclear"]
    read = run(stub, second, *setup, ins("vmread", field=named("GUEST_RIP")))[-1]
    assert read.value == 0xABC
    stub.DeleteVm(pb.DeleteVmRequest(vm_id=vm.vm_id))
