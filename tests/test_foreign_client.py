"""A client in another language (Node.js with @grpc/grpc-js and @grpc/proto-loader, loading the
shipped vmxsim.proto) drives a vCPU on a real server: the wire contract is not Python-only. Two
more Node clients check the gRPC conventions from outside: server reflection spoken as v1 only
(the v1 proto that @grpc/reflection ships) and google.rpc.Status error details.

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
from typing import Any

import google.rpc.status_pb2 as status_pb2
import pytest

NODE_CLIENT = Path(__file__).parent / "node_client"
_NODE_PACKAGES = json.loads((NODE_CLIENT / "package.json").read_text())["dependencies"]


@pytest.fixture(scope="module")
def node_client() -> Path:
    """The Node.js client script, with its dependencies installed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the foreign-client test")
    installed = NODE_CLIENT / "node_modules"
    if not all((installed / name).is_dir() for name in _NODE_PACKAGES):
        done = subprocess.run(
            ["npm", "install", "--prefix", str(NODE_CLIENT), "--no-audit", "--no-fund",
             "--no-package-lock"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"npm install failed (no network?): {done.stderr.strip()[-300:]}")
    return NODE_CLIENT / "client.js"


def _node(script: Path, *args: str) -> Any:
    """Run a Node client script with the shipped vmxsim.proto's path appended to ``args``."""
    proto = resources.files("vmxsim.v1").joinpath("vmxsim.proto")
    with resources.as_file(proto) as proto_path:
        done = subprocess.run(
            ["node", str(script), *(a.replace("{proto}", str(proto_path)) for a in args)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_node_client_executes_vmx_instructions(vmxsim_address: str, node_client: Path) -> None:
    reply = _node(node_client, vmxsim_address, "{proto}")
    results = {r["line"]: r for r in reply["results"]}
    assert [r["result"] for r in reply["results"][:5]] == ["OUTCOME_RESULT_VMSUCCEED"] * 5
    assert results[6]["value"] == "4096" and results[7]["value"] == "4096"
    assert results[8]["result"] == "OUTCOME_RESULT_VMFAIL_VALID" and results[8]["error"] == 13
    vcpu = reply["vcpu"]
    assert (vcpu["profile"], vcpu["mode"]) == ("kvm", "LATENCY_MODE_NESTED")
    assert (vcpu["vcpu_mode"], vcpu["current_vmcs_pointer"]) == ("VCPU_MODE_ROOT", "8192")


def test_a_v1_only_reflection_client_lists_and_describes(
    vmxsim_address: str, node_client: Path
) -> None:
    reply = _node(node_client.with_name("reflection_v1.js"), vmxsim_address)
    assert {
        "vmxsim.v1.VcpuService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(reply["services"])
    vmxsim = next(f for f in reply["files"] if f["package"] == "vmxsim.v1")
    assert vmxsim["services"] == ["VcpuService"]
    assert {"Drive", "Replay", "ListProfiles", "ListMixes", "ListL0Models"} <= set(reply["rpcs"])
    # reflection describes its own v1 service too (grpcurl asks for it)
    assert reply["reflection"] == {
        "name": "grpc/reflection/v1/reflection.proto",
        "package": "grpc.reflection.v1",
    }


def test_a_node_client_reads_the_error_details(vmxsim_address: str, node_client: Path) -> None:
    google_rpc = Path(status_pb2.__file__).parent  # .../google/rpc with the .proto files
    reply = _node(
        node_client.with_name("error_details.js"),
        vmxsim_address,
        "{proto}",
        str(google_rpc.parent.parent),
    )
    not_found = reply["not_found"]
    assert (not_found["code"], not_found["status_code"]) == (5, 5)
    info = not_found["details"]["google.rpc.ErrorInfo"]
    assert (info["reason"], info["domain"]) == ("VCPU_NOT_FOUND", "vmxsim.v1")
    resource = not_found["details"]["google.rpc.ResourceInfo"]
    assert (resource["resourceType"], resource["resourceName"]) == ("vcpu", "vcpu-999999")
    invalid = reply["invalid_argument"]
    assert invalid["code"] == 3 and "no-such-profile" in invalid["message"]
    (violation,) = invalid["details"]["google.rpc.BadRequest"]["fieldViolations"]
    assert violation["field"] == "profile"
    token = reply["bad_page_token"]["details"]
    assert token["google.rpc.ErrorInfo"]["reason"] == "BAD_PAGE_TOKEN"
    assert token["google.rpc.BadRequest"]["fieldViolations"][0]["field"] == "page_token"
