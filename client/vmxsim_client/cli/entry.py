"""The ``vmxsim`` command: one entry point, one module per group of subcommands; the exit status
of each outcome is in status.py, the conventions every subcommand keeps in conventions.py."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from typing import NoReturn

from vmxsim_server.vmx.exceptions import VmxsimError

from ..errors import CliError
from . import (
    cmd_compare,
    cmd_completion,
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
    conventions,
    status,
)

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2, and whose help shows
    docstrings without reST markup."""

    def error(self, message: str) -> NoReturn:
        self.exit(status.USAGE, f"{self.prog}: error: {message}\n")

    def format_help(self) -> str:
        return conventions.plain(super().format_help())


def _version() -> str:
    try:
        return importlib.metadata.version("vmxsim")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser."""
    parser = _Parser(
        prog="vmxsim",
        description="Emulated VMX vCPUs: count and price every VMREAD/VMWRITE per VM exit.",
        epilog=status.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vmxsim {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in (
        cmd_tables, cmd_convert, cmd_model, cmd_tune,
        cmd_vcpu, cmd_exec, cmd_drive, cmd_replay, cmd_compare, cmd_report, cmd_demo,
        cmd_diagnose, cmd_load, cmd_serve,
    ):  # fmt: skip
        module.register(sub)
    cmd_completion.register(sub, parser)
    conventions.apply(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (status.py: 0 ok, 1 failed run, 2 bad input, 3-8
    a failed RPC by class, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error: their status, returned
        return exc.code if isinstance(exc.code, int) else status.USAGE
    conventions.normalise(args)
    try:
        outcome: int = args.func(args)
    except (CliError, VmxsimError) as exc:
        print(f"vmxsim: error: {exc}", file=sys.stderr)
        return status.USAGE
    except BrokenPipeError:
        return status.OK
    except KeyboardInterrupt:
        print("vmxsim: interrupted", file=sys.stderr)
        return status.INTERRUPTED
    return outcome


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
