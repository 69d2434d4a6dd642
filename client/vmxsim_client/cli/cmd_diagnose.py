"""``vmxsim diagnose DUMP|-``: a VMCS dump from a bug report through the VM-entry checks.

The dump (KVM, Xen, HAXM, QEMU, a vmxsim snapshot or a plain field list; detected, or
``--format``) goes to the Diagnose RPC (an in-process server without ``--server``); each dump in
the file gets its verdict, failing checks most important first. Exit status: 0 when no dump
fails, 1 when one does (or the server cannot be reached), 2 for input that is no dump.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from vmxsim_server.vmx.dumps import FORMATS

from ..errors import CliError
from ..rpc_errors import InvalidArgumentError, ResourceExhaustedError
from .common import add_server_options, client_from_args, read_input, rpc_command
from .output import emit_json

__all__ = ["read_input", "register", "render"]

FAILS = 1


def _value(value: int) -> str:
    return f"{value:#x}"


def render(docs: Sequence[Mapping[str, Any]], out: TextIO | None = None) -> None:
    """The diagnoses for people: per dump its verdict, each failure, what was not checked."""
    stream = out if out is not None else sys.stdout
    for number, doc in enumerate(docs, 1):
        where = f"dump {number} of {len(docs)}" if len(docs) > 1 else "dump"
        stream.write(
            f"{where}: {doc['format']} at line {doc['line']}, {doc['fields_read']} fields read,"
            f" {doc['capabilities']} capabilities\n"
        )
        reported = doc["reported_exit_reason"]
        if reported is not None:
            stream.write(f"  the log reports exit reason {reported:#x}\n")
        failures = doc["failures"]
        if failures:
            first = failures[0]
            stream.write(
                f"verdict: fails - VM entry gives {first['outcome']} first ({first['check']})\n"
            )
        else:
            stream.write(f"verdict: {doc['verdict']} - no check fails\n")
        for index, failure in enumerate(failures, 1):
            stream.write(
                f"  {index}. {failure['check']}  SDM {failure['section']}"
                f"  -> {failure['outcome']}\n     {failure['message']}\n"
            )
            shown = "  ".join(f"{k}={_value(v)}" for k, v in failure["values"].items())
            if shown:
                stream.write(f"     {shown}\n")
            if failure["capability_dependent"]:
                stream.write(
                    f"     fails only with the {doc['capabilities']} capabilities: a processor"
                    " with other IA32_VMX_* MSRs may accept it (--capabilities FILE)\n"
                )
        _render_not_checked(doc["not_checked"], stream)
        stream.write(f"  ({doc['sdm']})\n" if number == len(docs) else "\n")


def _render_not_checked(not_checked: list[Mapping[str, Any]], stream: TextIO) -> None:
    if not not_checked:
        return
    by_missing: dict[str, list[str]] = defaultdict(list)
    for entry in not_checked:
        by_missing[", ".join(entry["missing"])].append(entry["check"])
    stream.write(f"  not checked ({len(not_checked)}, the dump does not show what they read):\n")
    for missing, checks in by_missing.items():
        stream.write(f"    {missing}: {', '.join(checks)}\n")


@rpc_command
def _cmd_diagnose(args: argparse.Namespace) -> int:
    data = read_input(args.dump)
    capabilities = read_input(args.capabilities, "capabilities") if args.capabilities else None
    try:
        with client_from_args(args) as client:
            docs = client.diagnose(
                text=data,
                format=args.format,
                capabilities=capabilities.decode("utf-8", "replace") if capabilities else None,
            )
    except (InvalidArgumentError, ResourceExhaustedError) as exc:
        raise CliError(f"{args.dump}: {exc.details}") from None
    if args.json:
        for doc in docs:
            emit_json(doc)
    else:
        render(docs)
    return FAILS if any(doc["verdict"] == "fails" for doc in docs) else 0


def register(sub: Any) -> None:
    """Add ``diagnose`` to the CLI."""
    p = sub.add_parser(
        "diagnose",
        help="run the VM-entry checks on a VMCS dump (KVM, Xen, HAXM, QEMU, snapshot, list)",
        description="Read a VMCS dump as pasted into a bug report, run every VM-entry check on "
        "what it shows and print each failing check, most important first. Exit status 0: no "
        "dump fails; 1: one does; 2: the input is no dump.",
    )
    p.add_argument("dump", metavar="DUMP", help="the dump file, or - for standard input")
    p.add_argument("--format", choices=FORMATS, help="the dump's format (default: detected)")
    p.add_argument(
        "--capabilities",
        metavar="FILE",
        help="the IA32_VMX_* MSR values of the processor (rdmsr output, NAME = VALUE lines, "
        "TOML or JSON); default: the dump's own (snapshots) or vmxsim's defaults",
    )
    add_server_options(p)
    p.set_defaults(func=_cmd_diagnose)
