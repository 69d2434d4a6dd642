"""Binary trace files read through the tools that write them.

``trace-cmd record`` writes ``trace.dat`` (magic ``17 08 44 "tracing"``: trace-cmd's
``Documentation/trace-cmd/trace-cmd.dat.v7.5.txt``) and ``perf record`` writes ``perf.data``
(magic ``"PERFILE2"``: Linux ``tools/perf/Documentation/perf.data-file-format.txt``). Their
events are rendered as text by ``trace-cmd report -i FILE`` and ``perf script -i FILE`` (the
trace-cmd and perf formats the ftrace reader reads), so a binary file is read as the standard
output of that command, streamed as it is produced. Without the tool, the error names the
Debian package to install. A tool that fails (exit status not 0) is an error with the last
line it printed on standard error.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from .compression import BLOCK_BYTES

__all__ = ["BINARY_FORMATS", "BinaryFormat", "ToolError", "binary_format", "tool_blocks"]


@dataclass(frozen=True)
class BinaryFormat:
    """A binary trace file and the command that renders it as text."""

    name: str
    magic: bytes
    command: tuple[str, ...]
    """argv before the file name."""
    package: str
    """The Debian package with the tool."""


BINARY_FORMATS = (
    BinaryFormat("trace.dat", b"\x17\x08\x44tracing", ("trace-cmd", "report", "-i"), "trace-cmd"),
    BinaryFormat("perf.data", b"PERFILE2", ("perf", "script", "-i"), "linux-perf"),
)


class ToolError(OSError):
    """A binary trace's tool is missing or failed."""


def binary_format(head: bytes) -> BinaryFormat | None:
    """The binary format whose magic ``head`` starts with."""
    return next((f for f in BINARY_FORMATS if head.startswith(f.magic)), None)


def tool_blocks(
    kind: BinaryFormat, path: Any, name: str
) -> tuple[Iterator[bytes], Callable[[], None]]:
    """The text output of the tool run on ``path`` in blocks, and a function that stops it."""
    if not isinstance(path, str | os.PathLike) or os.fspath(path) == "-":
        raise ToolError(
            f"{name}: give a {kind.name} file by its name ({kind.command[0]} reads files)"
        )
    program = shutil.which(kind.command[0])
    if program is None:
        raise ToolError(
            f"{name} is a {kind.name} file: reading it needs {kind.command[0]} "
            f"(install the Debian package {kind.package})"
        )
    argv = [program, *kind.command[1:], os.fspath(path)]
    # stderr to a file, not a pipe: a chatty tool must not block on it while we read stdout
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
    )

    def stop() -> None:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        errors.close()

    def blocks() -> Iterator[bytes]:
        stdout = cast(io.BufferedReader, process.stdout)
        while data := stdout.read1(BLOCK_BYTES):
            yield data
        if process.wait() != 0:
            errors.seek(0)
            problem = errors.read().decode("utf-8", "replace").strip()
            last = problem.splitlines()[-1] if problem else "no message"
            raise ToolError(
                f"{name}: `{' '.join(kind.command)} {name}` failed "
                f"(exit status {process.returncode}): {last}"
            )

    return blocks(), stop
