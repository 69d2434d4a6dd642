"""A client in another language (Node.js with @grpc/grpc-js and @grpc/proto-loader, loading the
shipped vmxsim.proto) drives a vCPU on a real server: the wire contract is not Python-only.

The npm packages (pinned in tests/node_client/package.json) are installed once into
tests/node_client/node_modules (gitignored); the test is skipped only when node or npm is
missing or the install fails (no network).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

NODE_CLIENT = Path(__file__).parent / "node_client"


@pytest.fixture(scope="module")
def node_client() -> Path:
    """The Node.js client script, with its dependencies installed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the foreign-client test")
    if not (NODE_CLIENT / "node_modules" / "@grpc" / "proto-loader").is_dir():
        done = subprocess.run(
            ["npm", "install", "--prefix", str(NODE_CLIENT), "--no-audit", "--no-fund",
             "--no-package-lock"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"npm install failed (no network?): {done.stderr.strip()[-300:]}")
    return NODE_CLIENT / "client.js"


def test_node_client_executes_vmx_instructions(vmxsim_address: str, node_client: Path) -> None:
    proto = resources.files("vmxsim.v1").joinpath("vmxsim.proto")
    with resources.as_file(proto) as proto_path:
        done = subprocess.run(
            ["node", str(node_client), vmxsim_address, str(proto_path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    results = {r["line"]: r for r in reply["results"]}
    assert [r["result"] for r in reply["results"][:5]] == ["OUTCOME_RESULT_VMSUCCEED"] * 5
    assert results[6]["value"] == "4096" and results[7]["value"] == "4096"
    assert results[8]["result"] == "OUTCOME_RESULT_VMFAIL_VALID" and results[8]["error"] == 13
    vcpu = reply["vcpu"]
    assert (vcpu["profile"], vcpu["mode"]) == ("kvm", "LATENCY_MODE_NESTED")
    assert (vcpu["vcpu_mode"], vcpu["current_vmcs_pointer"]) == ("VCPU_MODE_ROOT", "8192")
