"""vmxsim scraped by a real Prometheus (the Debian package): every query of the Grafana
dashboard runs through Prometheus' HTTP API and returns plausible data, and promtool accepts
both the shipped configuration and a live /metrics page.

Traffic comes in two rounds (KVM and HAXM-before-the-cache replays, nested, plus KVM native and
one failing call), each waited for until Prometheus has scraped it, so every counter has moved
between two samples and every rate() has something to show.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Iterator

import grpc
import pytest
from prometheus_stack import (
    PROMETHEUS_CONFIG,
    ROOT,
    DashboardQuery,
    Stack,
    dashboard_queries,
    environment_problem,
    http_get,
    wait_until,
)

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_client.client import Client

PROBLEM = environment_problem()
pytestmark = pytest.mark.skipif(
    PROBLEM is not None, reason=f"NO REAL PROMETHEUS, integration test skipped: {PROBLEM}"
)

RUNS = (("kvm", "nested", 50_000), ("haxm-legacy", "nested", 50_000), ("kvm", "native", 20_000))
EXITS_PER_ROUND = sum(exits for *_, exits in RUNS)


def one_round(stack: Stack, number: int) -> None:
    for profile, mode, exits in RUNS:
        summary = stack.replay(profile, mode, exits, seed=number)
        assert summary["exits"] + sum(summary["panics"].values()) == exits
    with Client(stack.grpc_address) as client:
        # a vCPU that stays (the vCPU and VM gauges), made by unary calls (their latency panel)
        client.get_vcpu(client.create_vcpu(profile="kvm").id)
    # an INVALID_ARGUMENT for the errors panel (the typed client refuses the name before sending)
    with grpc.insecure_channel(stack.grpc_address) as channel:
        start = pb.ReplayRequest(start=pb.ReplayStart(profile="no-such-profile"))
        answers = pb_grpc.VcpuServiceStub(channel).Replay(iter([start]))
        with pytest.raises(grpc.RpcError) as error:
            list(answers)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    # every exit is counted once: handled, or stopped by a panicking handler
    handled = "sum(vmxsim_vm_exits_total) + (sum(vmxsim_vm_panics_total) or vector(0))"
    stack.wait_for_scrape_of(handled, number * EXITS_PER_ROUND)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("prometheus")) as running:
        one_round(running, 1)
        one_round(running, 2)
        yield running


def run_panel(stack: Stack, title: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Each target (by refId) of the panel as (labels, value) pairs; every one returns data."""
    found = {}
    queries = [q for q in dashboard_queries() if q.panel == title]
    assert queries, title
    for query in queries:
        result = stack.query(query.instant())
        assert result, f"no data for {query.panel} {query.ref_id}: {query.instant()}"
        found[query.ref_id] = [(r["metric"], float(r["value"][1])) for r in result]
    return found


def by(label: str, pairs: list[tuple[dict[str, str], float]]) -> dict[str, float]:
    return {labels[label]: value for labels, value in pairs}


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    queries: list[DashboardQuery] = dashboard_queries()
    assert len(queries) >= 10
    for query in queries:
        result = stack.query(query.instant())
        assert result, f"{query.panel} ({query.ref_id}) returned nothing: {query.instant()}"
        values = [float(r["value"][1]) for r in result]
        assert all(math.isnan(v) or v >= 0 for v in values), (query.panel, values)
        assert any(v > 0 for v in values), (query.panel, values)


def test_exits_and_instructions_per_second(stack: Stack) -> None:
    exits = by("exit_reason", run_panel(stack, "VM exits per second by reason")["A"])
    assert {"CPUID", "IO_INSTRUCTION", "EPT_VIOLATION"} <= exits.keys()
    instructions = by(
        "instruction", run_panel(stack, "VMX instructions per second by instruction")["A"]
    )
    assert instructions["VMREAD"] > instructions["VMWRITE"] > 0
    assert instructions["VMPTRLD"] > 0  # haxm-legacy's load_vmcs around every run


def test_vmreads_and_vmwrites_per_exit_match_the_seed(stack: Stack) -> None:
    reads = run_panel(stack, "VMREADs per exit (p50, p99) by profile")
    p50, p99 = by("profile", reads["A"]), by("profile", reads["B"])
    assert 6 <= p50["kvm"] <= 10
    assert 32 <= p50["haxm-legacy"] <= 33
    assert p99["kvm"] >= p50["kvm"] and p99["haxm-legacy"] >= p50["haxm-legacy"]
    writes = by("profile", run_panel(stack, "VMWRITEs per exit (p50, p99) by profile")["A"])
    assert 2 <= writes["kvm"] <= 6
    assert 21 <= writes["haxm-legacy"] <= 23


def test_cache_hit_ratio(stack: Stack) -> None:
    ratio = by("profile", run_panel(stack, "VMCS cache hit ratio by profile")["A"])
    assert 0.2 < ratio["kvm"] < 1
    assert math.isnan(ratio.get("haxm-legacy", math.nan))  # no cache: no ratio


def test_simulated_latency_by_mode(stack: Stack) -> None:
    latency = run_panel(stack, "Simulated exit latency (p50, p99) by mode")
    p50, p99 = by("mode", latency["A"]), by("mode", latency["B"])
    assert 1e-7 < p50["native"] < p50["nested"] < 1e-3
    assert p99["nested"] >= p50["nested"]


def test_grpc_requests_and_errors(stack: Stack) -> None:
    requests = run_panel(stack, "gRPC requests per second by method")["A"]
    assert by("grpc_method", requests)["Replay"] > 0
    errors = run_panel(stack, "gRPC errors per second by method and code")["A"]
    codes = {(labels["grpc_method"], labels["grpc_code"]) for labels, _ in errors}
    assert ("Replay", "INVALID_ARGUMENT") in codes


def test_target_is_up_with_the_shipped_job_name(stack: Stack) -> None:
    assert stack.target_health() == "up"
    assert stack.scalar('up{job="vmxsim"}') == 1


def test_promtool_accepts_the_live_metrics_page(stack: Stack) -> None:
    page = http_get(stack.metrics_url)
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=page, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == b"" or b"SUCCESS" in checked.stdout


def test_promtool_accepts_the_shipped_configuration() -> None:
    subprocess.run(["promtool", "check", "config", str(PROMETHEUS_CONFIG)], check=True)


def documented_queries() -> list[str]:
    """Every example in docs/metrics.md's promql blocks: the lines after each comment."""
    text = (ROOT / "docs/metrics.md").read_text()
    queries: list[str] = []
    for block in re.findall(r"```promql\n(.*?)```", text, flags=re.DOTALL):
        for chunk in re.split(r"^#.*$", block, flags=re.MULTILINE):
            if chunk.strip():
                queries.append(" ".join(chunk.split()))
    return queries


def test_every_documented_query_is_valid_promql(stack: Stack) -> None:
    queries = documented_queries()
    assert len(queries) >= 15
    for query in queries:
        stack.query(query)  # raises when Prometheus does not answer "success"
    slowdown = next(q for q in queries if "/ on ()" in q)
    assert stack.scalar(slowdown) > 1  # haxm-legacy's exits cost more than kvm's, nested


# --- rules.yml on live data ------------------------------------------------------------------


def recorded(stack: Stack, expr: str, minimum: int = 1) -> dict[str, float]:
    """A recording rule's values by their labels, once at least ``minimum`` are finite (rules
    run every evaluation interval, 1 s here, and a rule on another group's records one later)."""
    values: dict[str, float] = {}

    def ready() -> bool:
        values.clear()
        for r in stack.query(expr):
            values[
                ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k != "__name__")
            ] = float(r["value"][1])
        return sum(math.isfinite(v) for v in values.values()) >= minimum

    wait_until(ready, 20, f"{minimum} finite values of {expr}")
    return values


def test_the_rules_load_and_record_the_headline_ratios(stack: Stack) -> None:
    groups = stack.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {"vmxsim-per-exit", "vmxsim-ratios", "vmxsim-grpc", "vmxsim-alerts"} <= {
        g["name"] for g in groups
    }
    assert all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]
    means = recorded(stack, "profile_mode:vmxsim_vmreads_per_exit:mean5m", 3)
    assert 6 <= means["mode=nested,profile=kvm"] <= 10
    assert 32 <= means["mode=nested,profile=haxm-legacy"] <= 33
    nested = recorded(stack, "profile:vmxsim_exit_handling_simulated_seconds:nested_over_native")
    assert nested["profile=kvm"] > 2  # every VMREAD/VMWRITE traps to L0
    haxm = recorded(stack, "mode:vmxsim_exit_handling_simulated_seconds:haxm_legacy_over_kvm")
    assert haxm["mode=nested"] > 1.5  # the seed: HAXM nested is the slow one
    p99 = recorded(stack, "profile:vmxsim_vmreads_per_exit:p99_5m", 2)
    assert 32 <= p99["profile=haxm-legacy"] <= 34
    slots = recorded(stack, "instance:vmxsim_streams:ratio_of_limit")
    (ratio,) = slots.values()  # open streams / 64 slots: at most the last replay's one
    assert 0 <= ratio <= 1 / 64 and (ratio * 64).is_integer()
    alerts = stack.api("alerts")["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"] == "VmxsimTargetDown"]


def test_process_metrics_are_on_the_server_registry(stack: Stack) -> None:
    assert stack.scalar('process_resident_memory_bytes{job="vmxsim"}') > 10e6
    assert stack.scalar('process_cpu_seconds_total{job="vmxsim"}') > 0
    assert stack.query('python_info{job="vmxsim"}')
    assert stack.scalar('vmxsim_limit{limit="max_streams"}') == 64
