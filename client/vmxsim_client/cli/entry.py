"""The ``vmxsim`` command: one entry point, one module per group of subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from vmxsim_server.vmx.exceptions import VmxsimError

from ..errors import CliError
from . import (
    cmd_compare,
    cmd_convert,
    cmd_demo,
    cmd_diagnose,
    cmd_drive,
    cmd_exec,
    cmd_load,
    cmd_model,
    cmd_replay,
    cmd_report,
    cmd_serve,
    cmd_tables,
    cmd_tune,
    cmd_vcpu,
)

__all__ = ["main"]

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser."""
    parser = _Parser(
        prog="vmxsim",
        description="Emulated VMX vCPUs: count and price every VMREAD/VMWRITE per VM exit.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in (
        cmd_tables, cmd_convert, cmd_model, cmd_tune,
        cmd_vcpu, cmd_exec, cmd_drive, cmd_replay, cmd_compare, cmd_report, cmd_demo,
        cmd_diagnose, cmd_load, cmd_serve,
    ):  # fmt: skip
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failed run, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error: their status, returned
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    try:
        status: int = args.func(args)
    except (CliError, VmxsimError) as exc:
        print(f"vmxsim: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("vmxsim: interrupted", file=sys.stderr)
        return 130
    return status


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
