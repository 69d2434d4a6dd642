"""Prometheus metrics: the per-batch observer, the tally histogram, the gRPC interceptor and
the /metrics endpoint of a real server (docs/metrics.md)."""

from __future__ import annotations

import math
import socket
import threading
import time
import urllib.request
from collections import Counter

import grpc
import pytest
from prometheus_client import CollectorRegistry

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_client.client import Client
from vmxsim_client.load.local_servers import free_port
from vmxsim_server import __version__
from vmxsim_server.app import channel_options, start_background
from vmxsim_server.batch_histogram import BatchHistogram
from vmxsim_server.config import ServerConfig
from vmxsim_server.metrics import (
    EXIT_LATENCY_BUCKETS_SECONDS,
    MetricsObserver,
    ServerMetrics,
    reason_label,
    start_metrics_server,
)
from vmxsim_server.vmx import Vcpu
from vmxsim_server.vmx.engine import BatchStats, Engine, ReasonTotals
from vmxsim_server.vmx.latency import LatencyModel
from vmxsim_server.vmx.mixes import load_mix, synthesize
from vmxsim_server.vmx.profiles import load_profile
from vmxsim_server.vmx.records import ExitBatch
from vmxsim_server.vmx.vcpu import Outcome, Result


def engine_stats(profile: str = "kvm", mode: str = "nested", exits: int = 5000) -> BatchStats:
    batch = ExitBatch.from_records(synthesize(load_mix("linux-boot"), exits, seed=1))
    return Engine(Vcpu(), load_profile(profile), LatencyModel(mode)).run_batch(batch)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


# --- the observer ------------------------------------------------------------------------------


def test_a_batch_is_counted_exactly_by_reason_instruction_and_cache() -> None:
    observer = MetricsObserver(CollectorRegistry())
    stats = engine_stats("haxm-legacy", "nested")
    observer.on_batch("haxm-legacy", "nested", stats)
    observer.on_batch("haxm-legacy", "nested", stats)
    r, by_mode = observer.registry, {"profile": "haxm-legacy", "mode": "nested"}
    for number, totals in stats.by_reason.items():
        labels = {**by_mode, "exit_reason": reason_label(number)}
        assert value(r, "vmxsim_vm_exits_total", **labels) == 2 * totals.exits
        assert value(r, "vmxsim_vmcs_reads_total", **labels) == 2 * totals.vmread
        assert value(r, "vmxsim_vmcs_writes_total", **labels) == 2 * totals.vmwrite
    c = stats.counters
    for instruction, count in {
        "VMREAD": c.vmread, "VMWRITE": c.vmwrite, "VMPTRLD": c.vmptrld,
        "VMCLEAR": c.vmclear, "VMXON": c.vmxon, "VMXOFF": c.vmxoff,
    }.items():  # fmt: skip
        got = value(r, "vmxsim_vmx_instructions_total", **by_mode, instruction=instruction)
        assert got == 2 * count
    assert c.vmptrld > 0  # haxm-legacy reloads the VMCS around every run
    assert value(r, "vmxsim_vmcs_cache_hits_total", **by_mode) == 2 * c.hits
    assert value(r, "vmxsim_vmcs_cache_misses_total", **by_mode) == 2 * c.misses


def test_per_exit_histograms_hold_every_exit_and_the_exact_sums() -> None:
    observer = MetricsObserver(CollectorRegistry())
    stats = engine_stats("kvm", "native")
    observer.on_batch("kvm", "native", stats)
    r, labels = observer.registry, {"profile": "kvm", "mode": "native"}
    assert value(r, "vmxsim_vmreads_per_exit_count", **labels) == stats.exits
    assert value(r, "vmxsim_vmreads_per_exit_sum", **labels) == stats.counters.vmread
    assert value(r, "vmxsim_vmwrites_per_exit_sum", **labels) == stats.counters.vmwrite
    # every count up to 40 has a bucket of its own, bounded half-way to the next count
    for reads in range(15):
        expected = sum(n for v, n in stats.vmread_hist.items() if v <= reads)
        got = value(r, "vmxsim_vmreads_per_exit_bucket", **labels, le=f"{reads + 0.5}")
        assert got == expected
    seconds = value(r, "vmxsim_exit_handling_simulated_seconds_sum", **labels)
    assert seconds == pytest.approx(stats.simulated_seconds)
    assert value(r, "vmxsim_exit_handling_simulated_seconds_count", **labels) == stats.exits


def test_unknown_exit_reason_numbers_share_one_label_value() -> None:
    observer = MetricsObserver(CollectorRegistry())
    stats = BatchStats(exits=3, by_reason={0xBEEF: ReasonTotals(2), 0xCAFE: ReasonTotals(1)})
    observer.on_batch("kvm", "native", stats)
    labels = {"profile": "kvm", "mode": "native", "exit_reason": "UNKNOWN"}
    assert value(observer.registry, "vmxsim_vm_exits_total", **labels) == 3
    assert reason_label(10) == "CPUID"


def test_instructions_gauges_and_build_info() -> None:
    observer = MetricsObserver(CollectorRegistry())
    observer.on_instruction("VMREAD", Outcome(Result.VMSUCCEED, value=1))
    observer.on_instruction("VMREAD", Outcome(Result.VMSUCCEED, value=2))
    observer.on_instruction("VMXOFF", Outcome(Result.FAULT, fault="#UD"))
    observer.on_counts_changed(2, 5)
    r = observer.registry
    assert value(r, "vmxsim_executed_instructions_total", op="VMREAD", result="VMsucceed") == 2
    assert value(r, "vmxsim_executed_instructions_total", op="VMXOFF", result="fault") == 1
    assert (value(r, "vmxsim_vms"), value(r, "vmxsim_vcpus")) == (2, 5)
    assert value(r, "vmxsim_build_info", version=__version__) == 1


def test_concurrent_batches_lose_no_counts() -> None:
    observer = MetricsObserver(CollectorRegistry())
    stats = engine_stats(exits=500)
    threads = [
        threading.Thread(
            target=lambda: [observer.on_batch("kvm", "nested", stats) for _ in range(200)]
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    labels = {"profile": "kvm", "mode": "nested"}
    assert value(observer.registry, "vmxsim_vmreads_per_exit_count", **labels) == 1600 * 500
    assert value(
        observer.registry, "vmxsim_vmx_instructions_total", **labels, instruction="VMREAD"
    ) == (1600 * stats.counters.vmread)


def test_batch_histogram_puts_a_value_in_the_first_bucket_at_or_above_it() -> None:
    registry = CollectorRegistry()
    histogram = BatchHistogram("h_seconds", "test", ("a",), (1.0, 2.0), registry)
    histogram.labels("x").add(Counter({0.5: 1, 1.0: 2, 1.5: 4, 9.0: 8}))
    buckets = {le: value(registry, "h_seconds_bucket", a="x", le=le) for le in ("1.0", "2.0")}
    assert buckets == {"1.0": 3, "2.0": 7}
    assert value(registry, "h_seconds_bucket", a="x", le="+Inf") == 15
    assert value(registry, "h_seconds_sum", a="x") == 0.5 + 2 + 6 + 72
    with pytest.raises(ValueError, match="takes labels"):
        histogram.labels("x", "y")
    assert histogram.bounds[-1] == math.inf


def test_latency_buckets_run_from_nanoseconds_to_milliseconds() -> None:
    assert EXIT_LATENCY_BUCKETS_SECONDS[0] == 1e-7
    assert EXIT_LATENCY_BUCKETS_SECONDS[-1] == 1e-2
    assert list(EXIT_LATENCY_BUCKETS_SECONDS) == sorted(set(EXIT_LATENCY_BUCKETS_SECONDS))


# --- the endpoint and a real server ------------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def test_metrics_server_serves_the_registry_and_releases_its_port() -> None:
    metrics = ServerMetrics("127.0.0.1:0")
    port = metrics.start()
    try:
        assert f'vmxsim_build_info{{version="{__version__}"}} 1.0' in scrape(port)
    finally:
        metrics.close()
    with socket.socket() as s:  # free again (a listener would still make bind fail on Linux)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_metrics_server_names_the_address_it_cannot_bind() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(OSError, match=f"cannot serve metrics on {address}"):
            start_metrics_server(address, CollectorRegistry())


def test_server_with_metrics_counts_rpcs_by_type_and_code_and_replays() -> None:
    expected = _rpc_counts_expected()
    metrics_port = free_port()
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen=f"127.0.0.1:{metrics_port}")
    with start_background(config) as server:
        with Client(server.address) as client:
            client.create_vm()
            client.replay(synthesize(load_mix("linux-boot"), 3000, seed=2), "kvm", "nested")
        with grpc.insecure_channel(server.address, options=channel_options()) as channel:
            stub = pb_grpc.VcpuServiceStub(channel)
            with pytest.raises(grpc.RpcError):
                stub.GetVcpu(pb.GetVcpuRequest(vcpu_id="vcpu-404"))
        # the server counts a call when its handler has finished, which may be just after the
        # client has its status: scrape until the counts arrive (5 s at most)
        deadline = time.monotonic() + 5.0
        while True:
            text = scrape(metrics_port)
            lines = set(text.splitlines())
            if all(line in lines for line in expected) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    for line in expected:
        assert line in lines, line
    assert "grpc_server_handling_seconds_bucket" in text
    assert "_created" not in text


def _rpc_counts_expected() -> list[str]:
    service = 'grpc_service="vmxsim.v1.VcpuService"'
    return [
        f'grpc_server_handled_total{{grpc_code="OK",grpc_method="CreateVm",{service},'
        'grpc_type="unary"} 1.0',
        f'grpc_server_handled_total{{grpc_code="NOT_FOUND",grpc_method="GetVcpu",{service},'
        'grpc_type="unary"} 1.0',
        f'grpc_server_handled_total{{grpc_code="OK",grpc_method="Replay",{service},'
        'grpc_type="bidi_stream"} 1.0',
        f'grpc_server_started_total{{grpc_method="Replay",{service},grpc_type="bidi_stream"}} 1.0',
        'vmxsim_vmreads_per_exit_count{mode="nested",profile="kvm"} 3000.0',
        "vmxsim_vms 1.0",
    ]


def test_the_default_in_process_server_has_no_metrics_port() -> None:
    server = start_background()
    try:
        assert server.config.metrics_listen is None
    finally:
        server.stop()
