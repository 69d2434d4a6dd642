"""``vmxsim serve`` as a child process: a real server whose exit status, log and memory (from
``/proc/<pid>/status``) a test can read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


class ServerProcess:
    """``vmxsim serve`` with JSON logs on a loopback port (0 = any free one)."""

    def __init__(
        self,
        *args: str,
        port: int = 0,
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        vmxsim = Path(sys.executable).with_name("vmxsim")
        command = [str(vmxsim), "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen",
                   "off", "--log-format", "json", *args]  # fmt: skip
        if state_dir is not None:
            command += ["--state-dir", str(state_dir)]
        environment = {**os.environ, **(env or {})}
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment)
        self.log: list[dict[str, Any]] = []
        self._serving = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._serving.wait(20):
            self.process.kill()
            raise AssertionError(f"the server did not start: {self.log}")
        self.port = int(next(line["port"] for line in self.log if "port" in line))
        self.address = f"127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.process.stderr:  # type: ignore[union-attr]
            if line.startswith("{"):
                self.log.append(json.loads(line))
                if "port" in self.log[-1]:
                    self._serving.set()
        self._serving.set()  # it exited

    def memory_kib(self, key: str = "VmRSS") -> int:
        """A line of ``/proc/<pid>/status`` in KiB: VmRSS now, VmHWM the peak so far."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def stop(self, kill: bool = False) -> int:
        """SIGKILL or SIGTERM; returns the exit status."""
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
        status = self.process.wait(20)
        self.process.stderr.close()  # type: ignore[union-attr]
        return status
