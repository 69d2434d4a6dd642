"""VMX instructions and pseudo-ops as client-side values, and their architectural results.

``OPS`` is the one table of operations: each row names the operands an operation takes and how
it becomes a wire ``Instruction``. ``Instruction`` validates against it (operand count, names,
64-bit ranges), so the typed client and ``vmxsim exec`` accept exactly the same things::

    Instruction("VMWRITE", ("GUEST_RIP", 0x1000), line=3)
    Instruction("exit", ("cpuid",))          # ops and names in any case; numbers may be text

Results are values, never exceptions (SDM Vol. 3C 31.2): ``InstructionResult.result`` is one of
``RESULTS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim_server.vmx.exit_reasons import lookup_reason
from vmxsim_server.vmx.fields import lookup as lookup_field

__all__ = ["OPS", "RESULTS", "Instruction", "InstructionResult", "OpSpec", "Operand", "usage"]

Value = int | str


def _field_name(text: str) -> str | None:
    field = lookup_field(text)
    return field.name if field is not None else None


def _reason_number(text: str) -> int | None:
    reason = lookup_reason(text)
    return reason.number if reason is not None else None


class Operand(NamedTuple):
    """One operand: its name, its width in bits, and how a name (not a number) resolves."""

    name: str
    bits: int = 64
    resolve: Callable[[str], Value | None] | None = None


ADDRESS = Operand("address")
VALUE = Operand("value")
FIELD = Operand("field", 64, _field_name)
REASON = Operand("reason", 32, _reason_number)


class OpSpec(NamedTuple):
    """An operation: operands (the last ``optional`` may be left out) and its wire form."""

    operands: tuple[Operand, ...]
    build: Callable[[tuple[Any, ...]], pb.Instruction]
    optional: int = 0
    help: str = ""


def _field_ref(value: Value) -> pb.FieldRef:
    return pb.FieldRef(name=value) if isinstance(value, str) else pb.FieldRef(encoding=value)


def _inject_exit(a: tuple[Any, ...]) -> pb.Instruction:
    names = [o.name for o in OPS["EXIT"].operands]
    record = pb.ExitRecord(**dict(zip(names, a, strict=False)))
    return pb.Instruction(exit=pb.InjectExit(record=record))


OPS: dict[str, OpSpec] = {
    # VMX instructions (SDM Vol. 3C chapter 31)
    "VMXON": OpSpec((ADDRESS,), lambda a: pb.Instruction(vmxon=pb.Vmxon(address=a[0]))),
    "VMXOFF": OpSpec((), lambda a: pb.Instruction(vmxoff=pb.Vmxoff())),
    "VMCLEAR": OpSpec((ADDRESS,), lambda a: pb.Instruction(vmclear=pb.Vmclear(address=a[0]))),
    "VMPTRLD": OpSpec((ADDRESS,), lambda a: pb.Instruction(vmptrld=pb.Vmptrld(address=a[0]))),
    "VMPTRST": OpSpec((), lambda a: pb.Instruction(vmptrst=pb.Vmptrst())),
    "VMREAD": OpSpec((FIELD,), lambda a: pb.Instruction(vmread=pb.Vmread(field=_field_ref(a[0])))),
    "VMWRITE": OpSpec(
        (FIELD, VALUE),
        lambda a: pb.Instruction(vmwrite=pb.Vmwrite(field=_field_ref(a[0]), value=a[1])),
    ),
    "VMLAUNCH": OpSpec((), lambda a: pb.Instruction(vmlaunch=pb.Vmlaunch())),
    "VMRESUME": OpSpec((), lambda a: pb.Instruction(vmresume=pb.Vmresume())),
    # pseudo-ops: set up what real software would have set up before VMXON
    "MEM32": OpSpec(
        (ADDRESS, Operand("value", 32)),
        lambda a: pb.Instruction(mem32=pb.WriteMemory32(address=a[0], value=a[1])),
        help="write 32 bits of guest-physical memory",
    ),
    "REVID": OpSpec(
        (ADDRESS,),
        lambda a: pb.Instruction(revid=pb.WriteRevisionId(address=a[0])),
        help="write the vCPU's VMCS revision identifier at an address",
    ),
    "CR0": OpSpec((VALUE,), lambda a: pb.Instruction(cr0=pb.SetCr0(value=a[0])), help="set CR0"),
    "CR4": OpSpec((VALUE,), lambda a: pb.Instruction(cr4=pb.SetCr4(value=a[0])), help="set CR4"),
    "WRMSR": OpSpec(
        (Operand("index", 32), VALUE),
        lambda a: pb.Instruction(wrmsr=pb.Wrmsr(index=a[0], value=a[1])),
        help="write an MSR",
    ),
    "EXIT": OpSpec(
        (
            REASON,
            Operand("qualification"),
            Operand("rip"),
            Operand("info2"),
            Operand("intr_info", 32),
            Operand("error_code", 32),
            Operand("guest_physical_address"),
            Operand("instruction_len", 32),
        ),
        _inject_exit,
        optional=7,
        help="deliver a VM exit (reason by name or number)",
    ),
}

RESULTS = {
    pb.OUTCOME_RESULT_VMSUCCEED: "VMsucceed",
    pb.OUTCOME_RESULT_VMFAIL_INVALID: "VMfailInvalid",
    pb.OUTCOME_RESULT_VMFAIL_VALID: "VMfailValid",
    pb.OUTCOME_RESULT_FAULT: "fault",
    pb.OUTCOME_RESULT_ENTRY_FAILED: "entry-failed",
    pb.OUTCOME_RESULT_VM_EXIT: "vm-exit",
}
"""Wire outcome -> the result spelling of DESIGN.md "Machine-readable output"."""


def usage(op: str) -> str:
    """An operation's syntax, e.g. ``EXIT REASON [QUALIFICATION] ...``."""
    spec = OPS[op]
    required = len(spec.operands) - spec.optional
    names = [o.name.upper() if i < required else f"[{o.name.upper()}]"
             for i, o in enumerate(spec.operands)]  # fmt: skip
    return " ".join([op, *names])


def _operand_value(operand: Operand, value: object) -> Value:
    """An operand as an int in range, or a resolved name; ValueError with the problem."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text, 0)
        except ValueError:
            resolved = operand.resolve(text) if operand.resolve and text else None
            if resolved is None:
                kind = f"{operand.name} name or number" if operand.resolve else "number"
                raise ValueError(f"{operand.name}: {value!r} is not a known {kind}") from None
            return resolved
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise ValueError(f"{operand.name}: {value!r} is not a number")
    if not 0 <= number < 1 << operand.bits:
        raise ValueError(f"{operand.name}: {value} does not fit {operand.bits} unsigned bits")
    return number


@dataclass(frozen=True, slots=True)
class Instruction:
    """One VMX instruction or pseudo-op; ``line`` is echoed in its result (0 = none).

    Raises ValueError for an unknown op, a wrong operand count, an unknown field or exit-reason
    name, or a number that does not fit the operand (64 bits for addresses and values).
    """

    op: str
    operands: tuple[Value, ...] = ()
    line: int = 0

    def __post_init__(self) -> None:
        op = self.op.upper()
        spec = OPS.get(op)
        if spec is None:
            raise ValueError(f"unknown instruction {self.op!r} (known: {', '.join(OPS)})")
        most, least = len(spec.operands), len(spec.operands) - spec.optional
        if not least <= len(self.operands) <= most:
            count = str(most) if least == most else f"{least} to {most}"
            raise ValueError(f"{op} takes {count} operands: {usage(op)}")
        values = tuple(
            _operand_value(o, v) for o, v in zip(spec.operands, self.operands, strict=False)
        )
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "operands", values)

    def to_pb(self) -> pb.Instruction:
        """The wire form."""
        message = OPS[self.op].build(self.operands)
        message.line = self.line
        return message


@dataclass(frozen=True, slots=True)
class InstructionResult:
    """What one instruction did. ``result`` is one of VMsucceed, VMfailInvalid, VMfailValid,
    fault, entry-failed, vm-exit; the other members are set only where they apply."""

    op: str
    result: str
    line: int = 0
    error: int = 0
    error_name: str = ""
    fault: str = ""
    value: int | None = None
    exit_reason: int | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the instruction completed (VMsucceed, or a VM exit it was meant to cause)."""
        return self.result in ("VMsucceed", "vm-exit")

    @classmethod
    def from_pb(cls, message: pb.InstructionResult) -> InstructionResult:
        """From the wire form."""
        return cls(
            op=message.op,
            result=RESULTS.get(message.result, "unspecified"),
            line=message.line,
            error=message.error,
            error_name=message.error_name,
            fault=message.fault,
            value=message.value if message.HasField("value") else None,
            exit_reason=message.exit_reason if message.HasField("exit_reason") else None,
            message=message.message,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``vmxsim exec --json`` object: keys only where they apply."""
        out: dict[str, Any] = {"line": self.line} if self.line else {}
        out["op"] = self.op
        out["result"] = self.result
        if self.value is not None:
            out["value"] = self.value
        if self.result == "VMfailValid" or self.error:
            out["error"] = self.error
        if self.error_name:
            out["error_name"] = self.error_name
        if self.fault:
            out["fault"] = self.fault
        if self.exit_reason is not None:
            out["exit_reason"] = self.exit_reason
        if self.message:
            out["message"] = self.message
        return out
