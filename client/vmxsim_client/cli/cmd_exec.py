"""``vmxsim exec``: run a script of VMX instructions on a vCPU and print each architectural result.

The whole script is parsed (ops, operand counts, field and exit-reason names, 64-bit ranges)
before anything is sent; a problem is reported as ``file:line: problem`` with exit status 2.
Failing instructions are results, not errors: the exit status is 0 unless an RPC fails (its
class's status, see ``vmxsim --help``), or, with ``--fail-on-failure``, 1 when any instruction
answered VMfailInvalid, VMfailValid or a fault (a CI gate).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import CliError
from ..instructions import OPS, Instruction, InstructionResult, usage
from . import status
from .common import (
    add_server_options,
    add_vcpu_options,
    client_from_args,
    create_vcpu_from_args,
    rpc_command,
)

__all__ = ["parse_script", "register"]

GATED = frozenset(("VMfailInvalid", "VMfailValid", "fault"))
"""The results ``--fail-on-failure`` turns into exit status 1."""

MAX_BATCH = 4096
"""Instructions per Execute call (a script longer than this is sent in several calls)."""

_EXAMPLE = """\
example:
  REVID 0x1000              # the revision identifier at the VMXON region
  VMXON 0x1000
  REVID 0x2000
  VMPTRLD 0x2000
  VMWRITE GUEST_RIP 0x1000
  VMREAD 0x681e
"""


def _epilog() -> str:
    """The script syntax, from the OPS table."""
    lines = [
        "script syntax: one instruction per line; '#' starts a comment; ops and names in any",
        "case; numbers hex (0x...) or decimal, at most 64 bits; fields by name or encoding;",
        "exit reasons by name or number:",
    ]
    lines += [f"  {usage(op):<36}{spec.help}".rstrip() for op, spec in OPS.items()]
    return "\n".join(lines) + "\n" + _EXAMPLE


def parse_script(text: str, source: str) -> list[tuple[Instruction, str]]:
    """Each instruction with its source text; CliError ``source:line: problem`` on the first
    bad line. Operands are separated by blanks or commas."""
    parsed = []
    for number, raw in enumerate(text.splitlines(), 1):
        code = raw.split("#", 1)[0].replace(",", " ").split()
        if not code:
            continue
        op, *operands = code
        try:
            instruction = Instruction(op, tuple(operands), line=number)
        except ValueError as exc:
            raise CliError(f"{source}:{number}: {exc}") from None
        parsed.append((instruction, " ".join([instruction.op, *operands])))
    return parsed


def _read_script(path: str | None) -> tuple[str, str]:
    if path in (None, "-"):
        return sys.stdin.read(), "<stdin>"
    assert path is not None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a UTF-8 text file") from None


def describe(result: InstructionResult) -> str:
    """The details of a result for people: ``value=0x1000``, ``error=13 (...)``, ..."""
    parts = []
    if result.value is not None:
        parts.append(f"value={result.value:#x}")
    if result.result == "VMfailValid" or result.error:
        name = f" ({result.error_name})" if result.error_name else ""
        parts.append(f"error={result.error}{name}")
    if result.fault:
        parts.append(f"fault={result.fault}")
    if result.exit_reason is not None:
        parts.append(f"exit_reason={result.exit_reason:#x}")
    if result.message:
        parts.append(result.message)
    return "  ".join(parts)


@rpc_command
def _exec(args: argparse.Namespace) -> int:
    text, source = _read_script(args.script)
    script = parse_script(text, source)
    listing = {instruction.line: shown for instruction, shown in script}
    instructions = [instruction for instruction, _ in script]
    width = len(str(max(listing, default=0)))
    text_width = max((len(shown) for shown in listing.values()), default=0)
    failed = 0
    with client_from_args(args) as client:
        vcpu = client.vcpu(args.vcpu) if args.vcpu else create_vcpu_from_args(client, args)
        try:
            for start in range(0, len(instructions), MAX_BATCH):
                results = vcpu.execute(
                    instructions[start : start + MAX_BATCH], stop_on_failure=args.stop_on_failure
                )
                failed += sum(r.result in GATED for r in results)
                for result in results:
                    if args.json:
                        print(json.dumps(result.to_json()))
                    else:
                        shown = listing.get(result.line, result.op)
                        line = f"{result.line:>{width}}  {shown:<{text_width}}  {result.result:<13}"
                        print(f"{line}  {describe(result)}".rstrip())
                if args.stop_on_failure and any(not r.ok for r in results):
                    break
        finally:
            if not args.vcpu and not args.keep:
                vcpu.delete()
    if args.keep and not args.vcpu:
        print(f"vmxsim: kept vCPU {vcpu.id}", file=sys.stderr)
    if args.fail_on_failure and failed:
        print(f"vmxsim: {failed} instruction(s) failed (--fail-on-failure)", file=sys.stderr)
        return status.FAILED
    return status.OK


def register(sub: Any) -> None:
    """Add ``exec`` to the CLI."""
    p = sub.add_parser(
        "exec",
        help="run a script of VMX instructions on a vCPU",
        description=__doc__.splitlines()[0]
        + " Without --vcpu a new vCPU is created with the vCPU options (and deleted after).",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("script", nargs="?", metavar="SCRIPT", help="script file; - or none: stdin")
    p.add_argument("--vcpu", metavar="ID", help="run on this existing vCPU")
    add_vcpu_options(p)
    p.add_argument(
        "--keep", action="store_true", help="keep the new vCPU (without --vcpu) and print its id"
    )
    p.add_argument(
        "--stop-on-failure", action="store_true", help="stop after the first failing instruction"
    )
    p.add_argument(
        "--fail-on-failure",
        action="store_true",
        help="exit with status 1 when any instruction answers VMfailInvalid, VMfailValid or a"
        " fault",
    )
    add_server_options(p)
    p.set_defaults(func=_exec)
