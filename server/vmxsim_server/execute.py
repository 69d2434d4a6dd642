"""Execute: wire ``Instruction`` messages -> core vCPU calls -> ``InstructionResult`` messages.

One row per ``Instruction.op`` oneof member; the op's name in results is that member's name in
upper case (``vmread`` -> ``VMREAD``, ``mem32`` -> ``MEM32``), as the client spells them.
Requests are checked whole before anything runs (an unknown field name is INVALID_ARGUMENT and
nothing executes), and so are the limits (limits.py): the number of instructions, and the VMCS
regions, memory words and MSRs the request could add to its VM and vCPU. The work of a request
is bounded by its deadline too: past it, the rest is not run (DEADLINE_EXCEEDED).
Architectural outcomes are results, never errors; pseudo-ops answer
VMsucceed or a fault with a message, and so does ``exit`` without a running guest (a harness's
sequencing mistake, reported so that a script can carry on).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from vmxsim.v1 import vmxsim_pb2 as pb

from .limits import limit_error
from .observe import Observer
from .registry import Registry, VcpuEntry
from .vmx.engine import BatchStats, ReasonTotals
from .vmx.exceptions import InvalidArgument, StateError, UnknownField
from .vmx.fields import BY_NAME
from .vmx.instruction_errors import error_message
from .vmx.records import ExitRecord
from .vmx.vcpu import SUCCEED, Outcome, Result

__all__ = ["check_size", "execute"]

_RESULTS = {result: pb.OutcomeResult.Value(f"OUTCOME_RESULT_{result.name}") for result in Result}
_FAILURES = frozenset(
    (Result.VMFAIL_INVALID, Result.VMFAIL_VALID, Result.FAULT, Result.ENTRY_FAILED)
)
_REGION_OPS = ("vmclear", "vmptrld")
"""Ops that may make a VMCS region at their address; ``mem32``/``revid`` write a word."""
_DEADLINE_EVERY = 256
"""Instructions between two looks at the clock (a look costs more than most instructions)."""
_RECORD = ("reason", "rip", "qualification", "info2", "intr_info", "error_code",
           "guest_physical_address", "instruction_len")  # fmt: skip

Op = Callable[[VcpuEntry, Any], Outcome]


def encoding_of(ref: pb.FieldRef, op: str) -> int:
    """The encoding a FieldRef names; ``UnknownField`` for a name not in the field table.

    A raw encoding is passed through: one that is no component is VMfailValid(12) in the core.
    """
    kind = ref.WhichOneof("ref")
    if kind == "encoding":
        return ref.encoding
    if kind is None:
        raise InvalidArgument(f"{op} needs a field, by name or by encoding")
    field = BY_NAME.get(ref.name.strip().upper())
    if field is None:
        raise UnknownField(f"unknown VMCS field name {ref.name!r} in {op}")
    return field.encoding


def _pseudo(action: Callable[[VcpuEntry, Any], object]) -> Op:
    """A pseudo-op: VMsucceed, or a fault whose message says why it could not be done."""

    def run(entry: VcpuEntry, message: Any) -> Outcome:
        try:
            action(entry, message)
        except (InvalidArgument, StateError) as exc:
            return Outcome(Result.FAULT, message=str(exc))
        return SUCCEED

    return run


def _inject_exit(entry: VcpuEntry, message: pb.InjectExit) -> Outcome:
    record = ExitRecord(**{name: getattr(message.record, name) for name in _RECORD})
    try:
        entry.vcpu.vm_exit(record)
    except StateError as exc:
        return Outcome(Result.FAULT, message=str(exc))
    entry.engine.totals.add(_injected(record.reason))
    return Outcome(Result.VM_EXIT, exit_reason=record.reason)


def _injected(reason: int) -> BatchStats:
    """An injected exit in the vCPU's totals: one exit of its reason that ran no profile handler
    (the harness executes its own VMREADs/VMWRITEs), so GetVcpu's ``exits`` and GetStats' agree."""
    return BatchStats(
        exits=1,
        by_reason={reason: ReasonTotals(exits=1)},
        vmread_hist=Counter({0: 1}),
        vmwrite_hist=Counter({0: 1}),
    )


_OPS: dict[str, Op] = {
    # VMX instructions (SDM Vol. 3C chapter 31)
    "vmxon": lambda e, m: e.vcpu.vmxon(m.address),
    "vmxoff": lambda e, m: e.vcpu.vmxoff(),
    "vmclear": lambda e, m: e.vcpu.vmclear(m.address),
    "vmptrld": lambda e, m: e.vcpu.vmptrld(m.address),
    "vmptrst": lambda e, m: e.vcpu.vmptrst(),
    "vmread": lambda e, m: e.vcpu.vmread(encoding_of(m.field, "VMREAD")),
    "vmwrite": lambda e, m: e.vcpu.vmwrite(encoding_of(m.field, "VMWRITE"), m.value),
    "vmlaunch": lambda e, m: e.vcpu.vmlaunch(),
    "vmresume": lambda e, m: e.vcpu.vmresume(),
    # pseudo-ops: the root-mode set-up a hypervisor does before VMXON, and the CPU's exit
    "mem32": _pseudo(lambda e, m: e.vcpu.memory.write32(m.address, m.value)),
    "revid": _pseudo(
        lambda e, m: e.vcpu.memory.write32(m.address, e.vcpu.capabilities.revision_id)
    ),
    "cr0": _pseudo(lambda e, m: e.vcpu.set_cr0(m.value)),
    "cr4": _pseudo(lambda e, m: e.vcpu.set_cr4(m.value)),
    "wrmsr": _pseudo(lambda e, m: e.vcpu.wrmsr(m.index, m.value)),
    "exit": _inject_exit,
}


def _in_time(deadline: float | None, index: int, count: int, what: str) -> None:
    """``TimeoutError`` once past ``deadline`` (looked at every ``_DEADLINE_EVERY``)."""
    if deadline is not None and index % _DEADLINE_EVERY == 0 and time.monotonic() > deadline:
        raise TimeoutError(f"deadline exceeded after {index} of {count} instructions ({what})")


def _checked(
    instructions: Sequence[pb.Instruction], deadline: float | None = None
) -> list[tuple[pb.Instruction, str]]:
    """Each instruction with its op; raises for a request that cannot run as a whole."""
    checked: list[tuple[pb.Instruction, str]] = []
    for index, instruction in enumerate(instructions):
        _in_time(deadline, index, len(instructions), "checked; none ran")
        op = instruction.WhichOneof("op")
        if op is None:
            where = f" (line {instruction.line})" if instruction.line else ""
            raise InvalidArgument(f"instruction {index}{where} sets no operation")
        if op in ("vmread", "vmwrite"):
            encoding_of(getattr(instruction, op).field, op.upper())
        checked.append((instruction, op))
    return checked


def check_size(instructions: Sequence[pb.Instruction], max_instructions: int) -> None:
    """``InvalidArgument`` naming the limit for a request with too many instructions."""
    count = len(instructions)
    if count > max_instructions:
        raise InvalidArgument(
            limit_error("max_instructions", max_instructions, f"this Execute has {count}")
        )


def _check_memory(
    registry: Registry, entry: VcpuEntry, checked: list[tuple[pb.Instruction, str]]
) -> None:
    """What the request could add to the VM's memory and the vCPU's MSRs, against the limits."""
    regions, words, msrs = set(), set(), set()
    for instruction, op in checked:
        if op in _REGION_OPS:
            regions.add(getattr(instruction, op).address)
        elif op in ("mem32", "revid"):
            words.add(getattr(instruction, op).address)
        elif op == "wrmsr":
            msrs.add(instruction.wrmsr.index)
    registry.check_memory(entry, regions, words, msrs)


def _result(line: int, op: str, outcome: Outcome) -> pb.InstructionResult:
    result = pb.InstructionResult(line=line, op=op, result=_RESULTS[outcome.result])
    if outcome.error is not None:
        result.error = outcome.error
        result.error_name = error_message(outcome.error)
    if outcome.fault:
        result.fault = outcome.fault
    if outcome.value is not None:
        result.value = outcome.value
    if outcome.exit_reason is not None:
        result.exit_reason = outcome.exit_reason
    if outcome.message:
        result.message = outcome.message
    return result


def execute(
    entry: VcpuEntry,
    instructions: Sequence[pb.Instruction],
    stop_on_failure: bool,
    registry: Registry,
    deadline: float | None = None,
) -> list[pb.InstructionResult]:
    """Run the instructions in order on one vCPU (the caller holds its locks); stop with
    ``TimeoutError`` once ``time.monotonic()`` passes ``deadline``."""
    observer: Observer = registry.observer
    checked = _checked(instructions, deadline)
    _check_memory(registry, entry, checked)
    results = []
    for index, (instruction, op) in enumerate(checked):
        _in_time(deadline, index, len(checked), "those ran")
        outcome = _OPS[op](entry, getattr(instruction, op))
        name = op.upper()
        observer.on_instruction(name, outcome)
        results.append(_result(instruction.line, name, outcome))
        if stop_on_failure and outcome.result in _FAILURES:
            break
    return results
