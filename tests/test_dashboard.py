"""The generated Grafana dashboard: fresh (regenerating it gives the committed JSON) and linted
with rules modelled on grafana/dashboard-linter (datasource variable, $__rate_interval, units,
unique ids). tests/test_prometheus_integration.py runs its queries against a real Prometheus."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/dashboards/vmxsim.json"
VARIABLES = {"datasource", "profile", "mode", "instance"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def targets() -> list[dict[str, Any]]:
    return [target for panel in dashboard()["panels"] for target in panel["targets"]]


@pytest.mark.skipif(
    importlib.util.find_spec("grafana_foundation_sdk") is None,
    reason="grafana-foundation-sdk not installed (pip install -e '.[dashboards]')",
)
def test_regenerating_the_dashboard_gives_the_committed_json() -> None:
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_dashboard"), "--stdout"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert generated == DASHBOARD.read_text(), "stale: run scripts/gen_dashboard"


def test_template_variables_are_datasource_profile_mode_and_instance() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert set(variables) == VARIABLES
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    for name in VARIABLES - {"datasource"}:
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["allValue"] == ".*"  # "All" must work inside =~ matchers


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    for panel in dashboard()["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


GAUGES = ("vmxsim_vcpus", "vmxsim_vms")
"""Gauges the dashboard shows as they are (no rate; every other query rates counters); they have
no profile or mode labels, so they filter on the instance only."""


def test_every_rate_uses_the_rate_interval_and_every_ref_id_is_set() -> None:
    for target in targets():
        expr = target["expr"]
        windows = re.findall(r"\b(?:rate|irate|increase)\(.*?\[([^\]]+)\]", expr)
        assert windows or any(gauge in expr for gauge in GAUGES), expr
        assert set(windows) <= {"$__rate_interval"}, expr
        assert set(re.findall(r"\[([^\]]+)\]", expr)) <= {"$__rate_interval"}, expr
        assert target["refId"]


def test_vmxsim_queries_filter_on_every_variable_and_grpc_ones_on_instance() -> None:
    for target in targets():
        expr = target["expr"]
        assert 'instance=~"$instance"' in expr
        if "vmxsim_" in expr and not any(gauge in expr for gauge in GAUGES):
            # every selector filters on both variables, or fixes that label itself (a ratio
            # of nested over native fixes the mode, haxm-legacy over kvm the profile)
            for selector in re.findall(r"vmxsim_\w+\{([^}]*)\}", expr):
                for label in ("profile", "mode"):
                    assert f'{label}=~"${label}"' in selector or f'{label}="' in selector, expr


def test_every_panel_has_a_unit_a_description_and_a_unique_id_and_place() -> None:
    panels = dashboard()["panels"]
    for panel in panels:
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["description"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids)
    places = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(set(places)) == len(places)
    assert dashboard()["uid"] == "vmxsim-overview"


def test_the_issue_panels_are_all_there() -> None:
    titles = " | ".join(panel["title"] for panel in dashboard()["panels"])
    for wanted in (
        "VM exits per second by reason",
        "VMREADs per exit (p50, p99) by profile",
        "VMWRITEs per exit (p50, p99) by profile",
        "VMCS cache hit ratio",
        "Simulated exit latency (p50, p99) by mode",
        "gRPC requests per second",
        "gRPC errors per second",
    ):
        assert wanted in titles
