"""``vmxsim convert IN OUT``: any readable trace to vmxsim's JSONL format.

IN may be compressed (gzip/xz/zstd) or ``-`` for standard input; OUT ``-`` is standard output,
and an OUT ending in .gz/.xz is compressed. The output file appears only when the conversion
succeeded (it is written next to OUT and renamed). A summary goes to standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from typing import IO, Any

from ..errors import CliError
from ..traces import (
    FORMATS,
    TraceParseError,
    TraceReader,
    add_limit_options,
    open_trace,
    write_jsonl,
)
from ..traces.compression import open_output

__all__ = ["register"]


def _open_reader(args: argparse.Namespace) -> TraceReader:
    options: dict[str, Any] = {}
    if args.seed is not None or args.exits is not None:
        if args.format not in (None, "perf-kvm-stat"):
            raise CliError("--seed and --exits apply to --format perf-kvm-stat only")
        options = {k: v for k, v in (("seed", args.seed), ("exits", args.exits)) if v is not None}
    try:
        reader = open_trace(args.input, format=args.format, strict=args.strict, **options)
    except TraceParseError as exc:
        raise CliError(str(exc)) from None
    except TypeError:  # --seed/--exits given for a detected format that takes neither
        raise CliError(
            f"--seed and --exits apply to perf-kvm-stat input, not {args.input}"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot read {args.input}: {exc.strerror or exc}") from None
    return reader


def _write(reader: TraceReader, out: IO[str], source: str) -> int:
    header = {"source": source, "format": reader.format_name}
    try:
        return write_jsonl(reader, out, header=header)
    except TraceParseError as exc:
        raise CliError(str(exc)) from None


def _convert(args: argparse.Namespace) -> int:
    if args.exits is not None and args.exits < 0:
        raise CliError("--exits must not be negative")
    with _open_reader(args) as reader:
        if args.output == "-":
            count = _write(reader, sys.stdout, args.input)
        else:
            count = _write_file(reader, args.output, args.input)
        _report(reader, count, args.output)
    return 0


def _write_file(reader: TraceReader, path: str, source: str) -> int:
    """Write to a temporary file beside ``path`` and rename it into place on success."""
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.basename(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".vmxsim-convert-", suffix=suffix)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        with open_output(tmp) as out:
            count = _write(reader, out, source)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return count


def _report(reader: TraceReader, count: int, output: str) -> None:
    unknown = ", ".join(f"{name} x{n}" for name, n in reader.unknown_reasons.most_common())
    print(
        f"vmxsim: converted {count} exits ({reader.format_name}) from {reader.source} to "
        f"{output}: {reader.lines} lines read, {reader.skipped} malformed skipped"
        + (f", unknown reasons: {unknown}" if unknown else ""),
        file=sys.stderr,
    )
    for error in reader.errors[:5]:
        print(f"vmxsim: skipped {error}", file=sys.stderr)


def register(sub: Any) -> None:
    """Add ``convert`` to the CLI."""
    p = sub.add_parser(
        "convert",
        help="convert a VM-exit trace (ftrace, perf kvm stat, HAXM log, JSONL) to JSONL",
        description="Read a trace in any supported format (detected from its content unless "
        "--format is given; gzip/xz/zstd input is decompressed) and write vmxsim JSONL.",
    )
    p.add_argument("input", metavar="IN", help="trace file, or - for standard input")
    p.add_argument("output", metavar="OUT", help="JSONL file (.gz/.xz compress), or - for stdout")
    p.add_argument("--format", choices=FORMATS, help="input format (default: detect)")
    p.add_argument("--strict", action="store_true", help="fail on the first malformed line")
    add_limit_options(p)
    p.add_argument("--seed", type=int, help="perf-kvm-stat: seed of the synthetic sequence")
    p.add_argument("--exits", type=int, help="perf-kvm-stat: number of exits to synthesise")
    p.set_defaults(func=_convert)
