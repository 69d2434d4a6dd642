"""The ``vmxsim`` command: one entry point, one module per group of subcommands; the exit status
of each outcome is in status.py, the conventions every subcommand keeps in conventions.py.

Start-up (issue 15.4): ``COMMANDS`` maps each command to the module that registers it, and a
command line naming one command imports that module alone, so ``vmxsim fields`` never imports
grpc, tqdm, numpy or the report stack. ``vmxsim``, ``--help`` and ``completion`` build the
whole parser (every module). tests/test_cli_startup.py keeps the table equal to the parser.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from vmxsim_server.vmx.exceptions import VmxsimError

from ..errors import CliError
from . import conventions, status

__all__ = ["COMMANDS", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2, and whose help shows
    docstrings without reST markup."""

    def error(self, message: str) -> NoReturn:
        self.exit(status.USAGE, f"{self.prog}: error: {message}\n")

    def format_help(self) -> str:
        return conventions.plain(super().format_help())


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked (importing
    importlib.metadata costs ~40 ms of every start-up otherwise)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show the version and exit")
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        import importlib.metadata

        try:
            version = importlib.metadata.version("vmxsim")
        except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
            version = "unknown (not installed)"
        print(f"vmxsim {version}")
        parser.exit()


COMMANDS: dict[str, str] = {
    # command -> the cmd_* module that registers it, in the order ``vmxsim --help`` lists them
    "fields": "cmd_tables",
    "exit-reasons": "cmd_tables",
    "convert": "cmd_convert",
    "model": "cmd_model",
    "tune": "cmd_tune",
    "vcpu": "cmd_vcpu",
    "exec": "cmd_exec",
    "drive": "cmd_drive",
    "replay": "cmd_replay",
    "compare": "cmd_compare",
    "report": "cmd_report",
    "demo": "cmd_demo",
    "diagnose": "cmd_diagnose",
    "load": "cmd_load",
    "serve": "cmd_serve",
    "completion": "cmd_completion",
}
_COMPLETION = "cmd_completion"  # registers last: it completes the whole parser
_MODULES = list(dict.fromkeys(COMMANDS.values()))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser: of ``command`` alone when it is one of ``COMMANDS``, else of
    every command."""
    parser = _Parser(
        prog="vmxsim",
        description="Emulated VMX vCPUs: count and price every VMREAD/VMWRITE per VM exit.",
        epilog=status.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    chosen = COMMANDS.get(command or "")
    modules = [chosen] if chosen is not None and chosen != _COMPLETION else _MODULES
    for name in modules:
        if name != _COMPLETION:
            importlib.import_module(f"{__package__}.{name}").register(sub)
    if _COMPLETION in modules:
        importlib.import_module(f"{__package__}.{_COMPLETION}").register(sub, parser)
    conventions.apply(parser)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command a command line names: its first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (status.py: 0 ok, 1 failed run, 2 bad input, 3-8
    a failed RPC by class, 130 interrupted)."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(words))
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # --help, --version or a usage error: their status, returned
        return exc.code if isinstance(exc.code, int) else status.USAGE
    conventions.normalise(args)
    # what start-up imported lives as long as the process: out of the collector's way (its full
    # collections walked every module's objects again and again, ~10% of a replay)
    gc.freeze()
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
