"""What the remote commands share: ``--server``/``--json`` options, vCPU options, number parsing,
RPC-error reporting, exit sources (trace files and shipped mixes), progress lines and the
human rendering of a run summary.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from vmxsim_server.vmx.l0 import available_l0_models
from vmxsim_server.vmx.latency import MODES
from vmxsim_server.vmx.profiles import available_profiles

from ..connection import add_connection_options, client_kwargs
from ..errors import CliError
from ..names import Profile, check_profile
from ..reports.exit_table import SORT_KEYS
from ..resume import DEFAULT_BATCH_SIZE
from ..traces import FORMATS, add_limit_options
from . import status
from .output import render_rows

if TYPE_CHECKING:  # grpc loads when a command connects, not when its parser is built: a replay
    # starts reading its trace first (cmd_replay.py)
    from ..client import Client, RemoteVcpu

__all__ = [
    "add_batch_size_option",
    "add_exit_table_options",
    "add_profile_options",
    "add_server_options",
    "add_trace_options",
    "add_vcpu_options",
    "check_batch_size",
    "client_from_args",
    "create_vcpu_from_args",
    "parse_u64",
    "print_summary",
    "rpc_command",
    "warn_skipped",
]

ENV_SERVER = "VMXSIM_SERVER"


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
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="without --server: serve the in-process server's Prometheus metrics at "
        "http://HOST:PORT/metrics while the command runs",
    )
    add_connection_options(parser)


def client_from_args(args: argparse.Namespace) -> AbstractContextManager[Client]:
    """The client the options ask for (remote, or an in-process server)."""
    metrics = getattr(args, "metrics_listen", None)
    if metrics and args.server:
        raise CliError("--metrics-listen is for the in-process server; a --server has its own")
    from ..inprocess import connect

    return connect(args.server, timeout=args.timeout, metrics_listen=metrics, **client_kwargs(args))


def rpc_command(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report a failed RPC as one line naming its status code; the exit status is its class's
    (status.py)."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except Exception as exc:
            from ..rpc_errors import VmxsimRpcError  # loaded by whatever raised one

            if not isinstance(exc, VmxsimRpcError):
                raise
            print(f"vmxsim: error: {exc}", file=sys.stderr)
            return status.for_rpc_code(exc.code)

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


def _profile_option(text: str) -> Profile:
    try:
        return check_profile(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_profile_options(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """``--profile`` and ``--mode`` (kvm and native when not given; with ``defaults=False``
    they stay None so a command can tell whether they were given)."""
    profiles = ", ".join(available_profiles())
    parser.add_argument(
        "--profile",
        type=_profile_option,
        default="kvm" if defaults else None,
        help=f"hypervisor profile (shipped: {profiles}; default kvm)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="native" if defaults else None,
        help="latency mode (default native)",
    )
    parser.add_argument(
        "--l0",
        metavar="MODEL",
        help=f"L0 model of a nested mode (shipped: {', '.join(available_l0_models())};"
        " default: the profile's)",
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
    parser.add_argument(
        "--capabilities",
        metavar="FILE",
        help="IA32_VMX_* MSR values applied on top of the defaults and the options above, in the"
        " format 'vmxsim diagnose --capabilities' reads (rdmsr output, NAME = VALUE lines, TOML or"
        " JSON); - for standard input",
    )


def read_input(path: str, what: str = "dump") -> bytes:
    """The bytes of a file or of standard input (``-``), at most MAX_DUMP_BYTES (a dump or a
    capabilities file)."""
    from vmxsim_server.vmx.dumps import MAX_DUMP_BYTES  # the dump parsers load on use

    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_DUMP_BYTES + 1)
        else:
            with Path(path).open("rb") as handle:
                data = handle.read(MAX_DUMP_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_DUMP_BYTES:
        raise CliError(f"{path}: the {what} is larger than {MAX_DUMP_BYTES:,} bytes (1 MiB)")
    return data


def create_vcpu_from_args(client: Client, args: argparse.Namespace) -> RemoteVcpu:
    """A new vCPU with the options of ``add_vcpu_options``."""
    msrs = None
    if args.capabilities:
        msrs = read_input(args.capabilities, "capabilities").decode("utf-8", "replace")
    return client.create_vcpu(
        vmx_msrs=msrs,
        profile=args.profile,
        mode=args.mode,
        l0=args.l0,
        vm=args.vm,
        revision_id=args.revision_id,
        maxphyaddr=args.maxphyaddr,
        vmx_misc_bit29=args.vmx_misc_bit29,
        vmcs_shadowing=args.vmcs_shadowing,
    )


def add_batch_size_option(
    parser: argparse.ArgumentParser, default: int = DEFAULT_BATCH_SIZE
) -> None:
    """``--batch-size``: exits per streamed message."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=default,
        metavar="N",
        help=f"exits per streamed batch (default {default})",
    )


def add_exit_table_options(parser: argparse.ArgumentParser) -> None:
    """``--sort`` and ``--exit-table``: the perf-kvm-stat-style per-reason table."""
    parser.add_argument(
        "--sort",
        choices=list(SORT_KEYS),
        default="samples",
        help="order of the per-reason table (perf kvm stat report's --key; default samples)",
    )
    parser.add_argument(
        "--exit-table",
        action="store_true",
        help='with --json: add the per-reason times (all, by_vm, by_vcpu) as "exit_table"',
    )


def add_trace_options(parser: argparse.ArgumentParser) -> None:
    """``--format`` and ``--strict`` of a trace argument, and the readers' limits."""
    parser.add_argument("--format", choices=FORMATS, help="trace format (default: detected)")
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first malformed line (exit 2)"
    )
    add_limit_options(parser)


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


def _per_exit(count: int, exits: int) -> str:
    return f"{count / exits:.2f}" if exits else "-"


def print_summary(
    summary: Mapping[str, Any], out: TextIO | None = None, *, by_reason: bool = True
) -> None:
    """A run summary for people: totals, per-exit distributions, then (``by_reason``) the
    per-reason table."""
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
    counts = dict(summary["instructions"])
    counts.update({op.lower(): n for op, n in counts.pop("other", {}).items()})
    rows = [
        {
            "instruction": name.upper(),
            "total": f"{total:,}",
            "per exit": _per_exit(total, exits),
            "p50": per_exit.get(name, {}).get("p50", ""),
            "p99": per_exit.get(name, {}).get("p99", ""),
        }
        for name, total in counts.items()
    ]
    render_rows(rows, ("instruction", "total", "per exit", "p50", "p99"), out=stream)
    stream.write("\n")
    l0 = summary.get("l0")
    if l0:
        causes = ", ".join(f"{cause} {n:,}" for cause, n in l0["by_cause"].items())
        stream.write(
            f"L0 {l0['model']}: exits {l0['exits']:,} ({_per_exit(l0['exits'], exits)} per exit), "
            f"vmcs02 rebuilds {l0['vmcs02_rebuilds']:,}, {l0['seconds']:.6f} s\n  {causes}\n\n"
        )
    if summary.get("panics"):
        panics = ", ".join(f"{name} x{n:,}" for name, n in summary["panics"].items())
        stream.write(f"panics (the hypervisor stops the VM; not counted as exits): {panics}\n\n")
    if not by_reason:
        return
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
