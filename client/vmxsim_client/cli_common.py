"""What the remote commands share: ``--server``/``--json`` options, vCPU options, number parsing,
RPC-error reporting, exit sources (trace files and shipped mixes), progress lines and the
human rendering of a run summary.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import stat
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TextIO

from tqdm import tqdm

from vmxsim_server.vmx.latency import MODES
from vmxsim_server.vmx.profiles import available_profiles

from .client import DEFAULT_BATCH_SIZE, Client, RemoteVcpu
from .connection import add_connection_options, client_kwargs
from .errors import CliError
from .inprocess import connect
from .output import render_rows
from .rpc_errors import VmxsimRpcError
from .traces import FORMATS, open_trace

__all__ = [
    "Progress",
    "add_batch_size_option",
    "add_profile_options",
    "add_server_options",
    "add_trace_options",
    "add_vcpu_options",
    "check_batch_size",
    "client_from_args",
    "create_vcpu_from_args",
    "exit_opener",
    "exit_source",
    "parse_u64",
    "print_summary",
    "rpc_command",
    "warn_skipped",
]

ENV_SERVER = "VMXSIM_SERVER"
RPC_ERROR = 1


def add_server_options(parser: argparse.ArgumentParser, json_output: bool = True) -> None:
    """``--server``, ``--timeout`` and (when the command prints results) ``--json``."""
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=os.environ.get(ENV_SERVER) or None,
        help=f"the vmxsim server (env {ENV_SERVER}); default: an in-process server that lives "
        "as long as this command",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="deadline of each call"
    )
    if json_output:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_connection_options(parser)


def client_from_args(args: argparse.Namespace) -> AbstractContextManager[Client]:
    """The client the options ask for (remote, or an in-process server)."""
    return connect(args.server, timeout=args.timeout, **client_kwargs(args))


def rpc_command(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report a failed RPC as one line naming its status code, exit status 1."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except VmxsimRpcError as exc:
            print(f"vmxsim: error: {exc}", file=sys.stderr)
            return RPC_ERROR

    return run


def parse_u64(text: str, what: str) -> int:
    """A number in hex (0x...) or decimal that fits 64 unsigned bits; CliError otherwise."""
    try:
        value = int(text, 0)
    except ValueError:
        raise CliError(f"{what}: {text!r} is not a number (hex 0x... or decimal)") from None
    if not 0 <= value < 1 << 64:
        raise CliError(f"{what}: {text} does not fit 64 unsigned bits")
    return value


def _u64_option(what: str) -> Callable[[str], int]:
    return lambda text: parse_u64(text, what)


def add_profile_options(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """``--profile`` and ``--mode`` (kvm and native when not given; with ``defaults=False``
    they stay None so a command can tell whether they were given)."""
    profiles = ", ".join(available_profiles())
    parser.add_argument(
        "--profile",
        default="kvm" if defaults else None,
        help=f"hypervisor profile (shipped: {profiles}; default kvm)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="native" if defaults else None,
        help="latency mode (default native)",
    )


def add_vcpu_options(parser: argparse.ArgumentParser) -> None:
    """The options of a new vCPU: profile, mode, VM and capabilities (server defaults)."""
    add_profile_options(parser)
    parser.add_argument("--vm", metavar="ID", help="create the vCPU in this VM (default: new VM)")
    parser.add_argument(
        "--revision-id",
        type=_u64_option("--revision-id"),
        metavar="N",
        help="VMCS revision identifier (default 0x11e57ed0)",
    )
    parser.add_argument(
        "--maxphyaddr", type=int, metavar="BITS", help="physical-address width 32..52 (default 46)"
    )
    parser.add_argument(
        "--vmx-misc-bit29",
        action="store_true",
        default=None,
        help="allow VMWRITE to VM-exit information fields (IA32_VMX_MISC bit 29; default off)",
    )
    parser.add_argument(
        "--vmcs-shadowing",
        action="store_true",
        default=None,
        help="offer the VMCS-shadowing secondary control (default off)",
    )


def create_vcpu_from_args(client: Client, args: argparse.Namespace) -> RemoteVcpu:
    """A new vCPU with the options of ``add_vcpu_options``."""
    return client.create_vcpu(
        profile=args.profile,
        mode=args.mode,
        vm=args.vm,
        revision_id=args.revision_id,
        maxphyaddr=args.maxphyaddr,
        vmx_misc_bit29=args.vmx_misc_bit29,
        vmcs_shadowing=args.vmcs_shadowing,
    )


def add_batch_size_option(parser: argparse.ArgumentParser) -> None:
    """``--batch-size``: exits per streamed message."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"exits per streamed batch (default {DEFAULT_BATCH_SIZE})",
    )


def add_trace_options(parser: argparse.ArgumentParser) -> None:
    """``--format`` and ``--strict`` of a trace argument."""
    parser.add_argument("--format", choices=FORMATS, help="trace format (default: detected)")
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first malformed line (exit 2)"
    )


def warn_skipped(source: Any) -> None:
    """One warning line on standard error when a trace reader skipped malformed lines."""
    skipped = getattr(source, "skipped", 0)
    errors = getattr(source, "errors", None)
    if skipped:
        first = f"; first: {errors[0]}" if errors else ""
        print(f"vmxsim: warning: skipped {skipped:,} malformed lines{first}", file=sys.stderr)


def check_batch_size(args: argparse.Namespace) -> None:
    """``--batch-size`` must be positive."""
    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1")


@contextmanager
def exit_source(spec: str, trace_format: str | None = None, strict: bool = False) -> Iterator[Any]:
    """A trace reader for a file (``-`` = stdin) or a ``mix:NAME[:EXITS[:SEED]]`` spec; it has
    ``skipped``/``unknown_reasons``/``errors`` counters. CliError when the file cannot be read."""
    try:
        reader = open_trace(spec, format=trace_format, strict=strict)
    except OSError as exc:
        raise CliError(f"cannot read {spec}: {exc.strerror or exc}") from None
    with reader:
        yield reader


class _ReadExits(list[Any]):
    """Exits read into memory, with the reader's counters (sent when each replay ends)."""

    def __init__(self, exits: Iterable[Any], skipped: int, unknown_reasons: Counter[str]) -> None:
        super().__init__(exits)
        self.skipped = skipped
        self.unknown_reasons = unknown_reasons


@contextmanager
def exit_opener(
    spec: str, trace_format: str | None = None, strict: bool = False
) -> Iterator[Callable[[], AbstractContextManager[Any]]]:
    """A function giving the exits of one of several runs: a fresh reader per run for a file or
    a mix (memory stays flat), the same in-memory list for standard input (read only once)."""
    if spec != "-":
        yield lambda: exit_source(spec, trace_format, strict)
        return
    with exit_source(spec, trace_format, strict) as source:
        exits = _ReadExits(
            source, getattr(source, "skipped", 0), Counter(getattr(source, "unknown_reasons", {}))
        )
    yield lambda: nullcontext(exits)


class Progress:
    """A progress bar on standard error (tqdm), only when that is a terminal.

    ``start(source)`` opens a bar for one run: for a trace file, the bytes read (compressed
    bytes for compressed input, ``reader.bytes_read``) against the file's size; for a mix or
    an in-memory list, exits against their number; for standard input, a count of exits with
    no end. ``update(exits)`` moves it (tqdm limits redraws to ten a second).
    """

    def __init__(self, enabled: bool = True, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stderr
        self.enabled = enabled and self.out.isatty()
        self._bar: tqdm[Any] | None = None
        self._source: Any = None
        self._by_bytes = False
        self.total: int | None = None
        """The current bar's end: bytes, exits, or None (no known end)."""

    def start(self, source: Any, label: str = "") -> None:
        """A new bar for a run over ``source`` (a trace reader, a mix or a list of exits)."""
        self.done()
        if not self.enabled:
            return
        size = _file_size(getattr(source, "source", None))
        self._source, self._by_bytes = source, size is not None and hasattr(source, "bytes_read")
        columns, lines = _terminal_size(self.out)
        common: dict[str, Any] = {
            "desc": label or None,
            "file": self.out,
            "leave": False,
            "mininterval": 0.1,
            "ncols": columns,
            "nrows": lines,
            "unit_scale": True,
        }
        if self._by_bytes:
            self.total = size
            self._bar = tqdm(total=size, unit="B", unit_divisor=1024, **common)
        else:
            self.total = _exit_total(source)
            self._bar = tqdm(total=self.total, unit=" exits", **common)

    def update(self, exits: int) -> None:
        """``exits`` acknowledged so far in the current run."""
        bar = self._bar
        if bar is None:
            return
        if self._by_bytes:
            bar.set_postfix_str(f"{exits:,} exits", refresh=False)
            bar.update(self._source.bytes_read - bar.n)
        else:
            bar.update(exits - bar.n)

    def done(self) -> None:
        """Close the bar (it clears its line)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _terminal_size(out: TextIO) -> tuple[int, int]:
    """(columns, lines) of the terminal. tqdm's own probe reads 0 x 0 on a pseudo-terminal
    whose size was never set (``script``, CI) and then draws nothing: fall back to
    ``shutil.get_terminal_size`` (``$COLUMNS``/``$LINES``, else 80 x 24)."""
    try:
        size = os.get_terminal_size(out.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    fallback = shutil.get_terminal_size()
    return size.columns or fallback.columns, size.lines or fallback.lines


def _file_size(path: object) -> int | None:
    """The size of a regular file named ``path`` (None for stdin, a mix spec, a pipe...)."""
    if not isinstance(path, str):
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) and status.st_size else None


def _exit_total(source: Any) -> int | None:
    """How many exits ``source`` will give, when that is known before reading it."""
    wanted = getattr(source, "exits_wanted", None)  # a mix:NAME:EXITS spec
    if wanted is not None:
        return int(wanted)
    return len(source) if isinstance(source, Sized) else None


def _per_exit(count: int, exits: int) -> str:
    return f"{count / exits:.2f}" if exits else "-"


def print_summary(summary: Mapping[str, Any], out: TextIO | None = None) -> None:
    """A run summary for people: totals, per-exit distributions, then the per-reason table."""
    stream = out if out is not None else sys.stdout
    exits = summary["exits"]
    unknown = sum(summary["unknown_reasons"].values())
    stream.write(
        f"profile {summary['profile']}  mode {summary['mode']}  exits {exits:,}  "
        f"skipped {summary['skipped']:,}  unknown reasons {unknown:,}\n"
        f"simulated time {summary['simulated_seconds']:.6f} s  "
        f"cache hits {summary['cache']['hits']:,}  misses {summary['cache']['misses']:,}\n\n"
    )
    per_exit = summary["per_exit"]
    rows = [
        {
            "instruction": name.upper(),
            "total": f"{total:,}",
            "per exit": _per_exit(total, exits),
            "p50": per_exit.get(name, {}).get("p50", ""),
            "p99": per_exit.get(name, {}).get("p99", ""),
        }
        for name, total in summary["instructions"].items()
    ]
    render_rows(rows, ("instruction", "total", "per exit", "p50", "p99"), out=stream)
    stream.write("\n")
    reasons = [
        {
            "reason": name,
            "exits": f"{r['exits']:,}",
            "vmread/exit": _per_exit(r["vmread"], r["exits"]),
            "vmwrite/exit": _per_exit(r["vmwrite"], r["exits"]),
            "simulated s": f"{r.get('simulated_seconds', 0.0):.6f}",
        }
        for name, r in summary["by_reason"].items()
    ]
    columns = ("reason", "exits", "vmread/exit", "vmwrite/exit", "simulated s")
    render_rows(reasons, columns, out=stream)
