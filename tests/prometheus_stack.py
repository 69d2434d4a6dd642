"""A real ``vmxsim serve`` and a real Prometheus scraping it, on free loopback ports.

The set-up of tests/test_prometheus_integration.py and scripts/render_dashboard_preview: the
Prometheus configuration is deploy/prometheus/prometheus.yml with the vmxsim job's target
rewritten to this server and a short scrape interval; the queries are the dashboard's own
(deploy/grafana/dashboards/vmxsim.json) with Grafana's variables filled in.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import yaml

from vmxsim_client.client import Client
from vmxsim_client.load.local_servers import free_port
from vmxsim_server.vmx.mixes import load_mix, synthesize

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/dashboards/vmxsim.json"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
JOB = "vmxsim"


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``ready`` every 0.1 s; ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def _answers(url: str) -> bool:
    try:
        http_get(url, timeout=1.0)
    except OSError:
        return False
    return True


def prometheus_config(target: str, scrape_interval: str) -> dict[str, Any]:
    """The shipped configuration, scraping ``target`` as job vmxsim every ``scrape_interval``."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    # the rule files, relative to the shipped config's folder, wherever this copy is written
    config["rule_files"] = [
        str(PROMETHEUS_CONFIG.parent / name) for name in config.get("rule_files", [])
    ]
    config["global"].update(scrape_interval=scrape_interval, evaluation_interval=scrape_interval)
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    job["static_configs"] = [{"targets": [target]}]
    return config


@dataclass(frozen=True)
class DashboardQuery:
    """One target of one dashboard panel."""

    panel: str
    unit: str
    ref_id: str
    legend: str
    expr: str

    def instant(self, rate_interval: str = "1m") -> str:
        """The expression as Prometheus runs it: every variable matches all values."""
        expr = self.expr.replace("$__rate_interval", rate_interval)
        for name in ("instance", "profile", "mode"):
            expr = expr.replace(f"${name}", ".*")
        return expr


def dashboard_queries() -> list[DashboardQuery]:
    """Every target of every panel of the committed dashboard, in panel order."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        DashboardQuery(
            panel["title"],
            panel["fieldConfig"]["defaults"]["unit"],
            target["refId"],
            target.get("legendFormat", ""),
            target["expr"],
        )
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def vmxsim_command() -> list[str]:
    """The installed ``vmxsim`` console script of this Python."""
    script = Path(sys.executable).parent / "vmxsim"
    return [str(script)] if script.exists() else [shutil.which("vmxsim") or "vmxsim"]


class Stack:
    """vmxsim + Prometheus as subprocesses with their logs in ``workdir``; a context manager."""

    def __init__(self, workdir: Path, scrape_interval: str = "1s") -> None:
        self.workdir = workdir
        self.scrape_interval = scrape_interval
        self.grpc_address = f"127.0.0.1:{free_port()}"
        self.metrics_address = f"127.0.0.1:{free_port()}"
        self.prometheus_url = f"http://127.0.0.1:{free_port()}"
        self.metrics_url = f"http://{self.metrics_address}/metrics"
        self._processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[BinaryIO] = []

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        self._logs.append(log)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._processes.append(process)
        return process

    def _wait(self, process: subprocess.Popen[bytes], url: str, what: str) -> None:
        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited: {self.log(process)}")
            return _answers(url)

        wait_until(ready, 30, what)

    def log(self, process: subprocess.Popen[bytes]) -> str:
        name = "vmxsim" if process is self._processes[0] else "prometheus"
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]

    def start(self) -> Stack:
        """Start vmxsim, then Prometheus; return once the vmxsim target is scraped as up."""
        vmxsim = self._spawn(
            "vmxsim",
            [*vmxsim_command(), "serve", "--listen", self.grpc_address,
             "--metrics-listen", self.metrics_address, "--grace", "1"],
        )  # fmt: skip
        self._wait(vmxsim, self.metrics_url, "vmxsim's /metrics")
        config = self.workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(prometheus_config(self.metrics_address, self.scrape_interval))
        )
        prometheus = self._spawn(
            "prometheus",
            ["prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={self.workdir / 'tsdb'}",
             f"--web.listen-address={self.prometheus_url.removeprefix('http://')}"],
        )  # fmt: skip
        self._wait(prometheus, f"{self.prometheus_url}/-/ready", "Prometheus")
        wait_until(lambda: self.target_health() == "up", 30, "the first scrape of vmxsim")
        return self

    def stop(self) -> None:
        """SIGTERM both (Prometheus first), then wait; kill what does not stop in 10 s."""
        for process in reversed(self._processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- Prometheus' HTTP API ------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/``path``; the ``data`` of a successful answer."""
        query = urllib.parse.urlencode(params)
        answer = json.loads(http_get(f"{self.prometheus_url}/api/v1/{path}?{query}"))
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus answered {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        """A range query's result matrix."""
        result: list[Any] = self.api(
            "query_range", query=expr, start=str(start), end=str(end), step=str(step)
        )["result"]
        return result

    def target_health(self) -> str:
        targets = self.api("targets")["activeTargets"]
        return next((t["health"] for t in targets if t["labels"]["job"] == JOB), "absent")

    def scalar(self, expr: str) -> float:
        """The value of a one-element vector, NaN when empty."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else float("nan")

    def wait_for_scrape_of(self, expr: str, minimum: float, timeout: float = 15) -> None:
        """Wait until Prometheus' latest scrape makes ``expr`` >= ``minimum``."""
        wait_until(lambda: self.scalar(expr) >= minimum, timeout, f"{expr} >= {minimum}")

    # --- traffic -------------------------------------------------------------------------------

    def replay(self, profile: str, mode: str, exits: int, seed: int = 0) -> dict[str, Any]:
        """Replay ``exits`` of mix linux-boot through the server; returns the run summary."""
        with Client(self.grpc_address) as client:
            records = synthesize(load_mix("linux-boot"), exits, seed=seed)
            return client.replay(records, profile, mode)


def environment_problem() -> str | None:
    """Why a real Prometheus cannot run here, or None."""
    missing = [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not on PATH: install the Debian package prometheus "
            "(scripts/test does when it runs as root)"
        )
    return None
