"""docs/walkthrough.md, run: every ``sh`` block in order as one bash script, against two real
``vmxsim serve`` processes, the real (Debian) Prometheus with deploy/prometheus/rules.yml,
``vmxsim load`` and Locust in distributed mode; then the answers the doc's queries printed are
checked. The doc's ports are moved to free ones (the same doc text otherwise), and the script
runs in a temporary directory where ``deploy/`` is this repository's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_stack import ROOT, environment_problem

from vmxsim_client.load.local_servers import free_port

DOC = ROOT / "docs/walkthrough.md"
PORTS = (50051, 50052, 9464, 9465, 9466, 9090, 5557)
"""The ports the doc uses; each is replaced by a free one."""
PROBLEM = environment_problem()
pytestmark = pytest.mark.skipif(
    PROBLEM is not None, reason=f"NO REAL PROMETHEUS, walkthrough skipped: {PROBLEM}"
)


def doc_script() -> str:
    """The doc's ``sh`` blocks, in order (``console`` blocks are for a cluster: not run)."""
    blocks = re.findall(r"^```sh\n(.*?)^```", DOC.read_text(), flags=re.DOTALL | re.MULTILINE)
    assert len(blocks) >= 6
    return "\n".join(blocks)


def test_the_doc_uses_only_the_ports_it_lists() -> None:
    # numbers of 4-5 digits that are no version (1.32.0) or duration (6s)
    used = {int(p) for p in re.findall(r"(?<![\d.])(\d{4,5})(?![\d.s])", doc_script())}
    assert used == set(PORTS), used


def test_the_walkthrough_runs(tmp_path: Path) -> None:
    if shutil.which("locust", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("locust is not installed (pip install 'vmxsim[load]')")
    script = doc_script()
    for port in PORTS:
        script = re.sub(rf"(?<!\d){port}(?!\d)", str(free_port()), script)
    (tmp_path / "deploy").symlink_to(ROOT / "deploy")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    logs = "".join(
        f"\n--- {log.name}\n{log.read_text(errors='replace')[-1500:]}"
        for log in sorted((tmp_path / "walkthrough").glob("*.log"))
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + logs
    out = done.stdout
    # step 3: three load runs, each consistent with the servers' counts
    assert out.count("client and server counts equal") == 3, out
    # step 4: Locust's master wrote the workers' requests, none failed
    rows = {line.split(",")[1]: line.split(",") for line in out.splitlines() if "," in line}
    assert int(rows["Drive"][2]) > 0 and int(rows["Aggregated"][3]) == 0, rows
    # step 5: the rules recorded the seed's numbers from both servers' data
    means = dict(re.findall(r'mean5m\{mode="nested", profile="([\w-]+)"\} => ([\d.]+)', out))
    assert 6 <= float(means["kvm"]) <= 10 and 32 <= float(means["haxm-legacy"]) <= 33, out
    (haxm,) = re.findall(r'haxm_legacy_over_kvm\{mode="nested"\} => ([\d.]+)', out)
    assert float(haxm) > 1.5
    (nested,) = re.findall(r'nested_over_native\{profile="kvm"\} => ([\d.]+)', out)
    assert float(nested) > 2
    # both servers are scraped up; the clients' own histogram reached Prometheus
    assert len(re.findall(r'up\{instance="[^"]+", job="vmxsim"\} => 1', out)) == 2, out
    assert re.search(r"^\{\} => [\d.e-]+ @", out, flags=re.MULTILINE), out  # the load p99
