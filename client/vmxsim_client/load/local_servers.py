"""Several ``vmxsim serve`` processes on free loopback ports: scale-out on one machine.

    with local_servers(2) as servers:
        targets = [s.address for s in servers]   # ["127.0.0.1:41221", "127.0.0.1:39713"]

Each server is a child process (its own interpreter and GIL, so two servers use two cores),
ready when the context is entered (a ListVms call answered) and stopped with SIGTERM when it
ends. For benchmarks, tests and ``ShardedClient`` experiments; a deployment runs the servers
itself (deploy/, docs/scale-out.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..client import Client
from ..rpc_errors import VmxsimRpcError

__all__ = ["LocalServer", "cpu_seconds", "free_port", "local_servers", "resident_kib"]

READY_SECONDS = 30.0
"""How long a new server may take to answer its first call."""

_SERVE = ("-c", "from vmxsim_client.cli import run; run()", "serve")


@dataclass(frozen=True)
class LocalServer:
    """One running ``vmxsim serve`` child: its address and process id."""

    address: str
    pid: int


def resident_kib(pid: int, key: str = "VmRSS") -> int:
    """A live process's resident set (``VmRSS``, or ``VmHWM`` for the peak) in kB, from
    /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used (every thread), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(address: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_SECONDS
    with Client(address, timeout=1.0) as client:
        while True:
            try:
                client.list_vms()
                return
            except VmxsimRpcError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"vmxsim serve on {address} did not start") from None
                time.sleep(0.05)


@contextmanager
def _one_server(options: Sequence[str]) -> Iterator[LocalServer]:
    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, *_SERVE, "--listen", address, "--metrics-listen", "off",
               "--grace", "1", "--log-level", "warning", *options]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(address, process)
        yield LocalServer(address, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def local_servers(count: int, options: Sequence[str] = ()) -> Iterator[list[LocalServer]]:
    """``count`` ready servers (extra ``vmxsim serve`` flags in ``options``); stopped at exit."""
    with ExitStack() as stack:
        yield [stack.enter_context(_one_server(options)) for _ in range(count)]
