"""Prometheus metrics of one server: what the emulated hypervisors did, and the gRPC requests.

Every server owns a ``CollectorRegistry`` (no global state, so tests and in-process servers do
not share counters). ``MetricsObserver`` implements ``observe.Observer``: it is told once per
batch of exits and adds the batch's totals with pre-bound label children and ``BatchHistogram``
tallies, so its cost does not grow with the number of exits in a batch (DESIGN.md "Performance
facts"). ``start_metrics_server`` serves ``/metrics`` on its own port.

Labels are bounded: ``profile`` (bundled profiles only; a remote caller cannot load files),
``mode`` (native, nested, nested-shadow), ``exit_reason`` (SDM names, ``UNKNOWN`` for numbers
outside the table), ``instruction``, ``op`` and ``result``. Never a vCPU or VM id.
docs/metrics.md lists every metric with an example query.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import HTTPServer
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from . import __version__
from .batch_histogram import BatchHistogram
from .observe import NULL_OBSERVER, Observer
from .rpc_metrics import RpcMetricsInterceptor
from .vmx.engine import BatchStats
from .vmx.exit_reasons import BY_NUMBER
from .vmx.vcpu import Outcome

__all__ = [
    "EXIT_LATENCY_BUCKETS_SECONDS",
    "INSTRUCTIONS",
    "PER_EXIT_BUCKETS",
    "MetricsObserver",
    "MetricsServer",
    "ServerMetrics",
    "start_metrics_server",
]

INSTRUCTIONS = ("VMREAD", "VMWRITE", "VMPTRLD", "VMCLEAR", "VMXON", "VMXOFF")
"""The ``instruction`` label values: the VMX instructions an exit handler runs (SDM names)."""

PER_EXIT_BUCKETS: tuple[float, ...] = (
    *(n + 0.5 for n in range(41)),
    *(n + 0.5 for n in (48, 64, 96, 128, 256)),
)
"""Upper bounds for VMREADs/VMWRITEs per exit. Counts are integers, so each bound sits half-way
between two of them: a bucket up to 40 holds exactly one count, and ``histogram_quantile``'s
linear interpolation inside it stays within half an access of the true value (an integer bound
would put a run of exactly 32 reads at 31.5). 0..40 covers every shipped profile exactly."""

EXIT_LATENCY_BUCKETS_SECONDS: tuple[float, ...] = (
    *(
        round(mantissa * 10.0**exponent, 12)
        for exponent in range(-7, -2)
        for mantissa in (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    ),
    1e-2,
)
"""Simulated exit latency bounds, 100 ns to 10 ms at six per decade: a native exit round trip
costs ~0.6-9 us in the shipped latency model, a nested one ~5-40 us."""

UNKNOWN_REASON = "UNKNOWN"
log = logging.getLogger("vmxsim.server")


def reason_label(number: int) -> str:
    """The ``exit_reason`` label of a basic exit reason number (bounded: unknown numbers share
    one value)."""
    reason = BY_NUMBER.get(number & 0xFFFF)
    return reason.name if reason is not None else UNKNOWN_REASON


@dataclass(frozen=True, slots=True)
class _ReasonChildren:
    exits: Counter
    vmreads: Counter
    vmwrites: Counter


class _ModeChildren:
    """The children of one (profile, mode), bound once; per-reason children on first use."""

    def __init__(self, metrics: MetricsObserver, profile: str, mode: str) -> None:
        self.profile, self.mode = profile, mode
        self._metrics = metrics
        self.instructions = tuple(
            metrics.instructions.labels(profile, mode, name) for name in INSTRUCTIONS
        )
        self.cache_hits = metrics.cache_hits.labels(profile, mode)
        self.cache_misses = metrics.cache_misses.labels(profile, mode)
        self.vmreads_per_exit = metrics.vmreads_per_exit.labels(profile, mode)
        self.vmwrites_per_exit = metrics.vmwrites_per_exit.labels(profile, mode)
        self.exit_latency = metrics.exit_latency.labels(profile, mode)
        self.reasons: dict[int, _ReasonChildren] = {}

    def reason(self, number: int) -> _ReasonChildren:
        children = self.reasons.get(number)
        if children is None:
            m, labels = self._metrics, (self.profile, self.mode, reason_label(number))
            children = _ReasonChildren(
                m.exits.labels(*labels), m.vmreads.labels(*labels), m.vmwrites.labels(*labels)
            )
            self.reasons[number] = children  # a racing duplicate binds the same children
        return children


class _L0Metrics:
    """What the L0 model saw (nested modes) and exits whose handler panics. Labels stay bounded:
    ``l0`` is a bundled model name, ``cause`` an ``l1_instructions.OPS`` cause."""

    def __init__(self, registry: CollectorRegistry) -> None:
        by_l0 = ("profile", "mode", "l0")
        self.exits = Counter(
            "vmxsim_l0_exits",
            "L1 instructions the L0 model intercepted (nested modes), by cause",
            (*by_l0, "cause"),
            registry=registry,
        )
        self.rebuilds = Counter(
            "vmxsim_vmcs02_rebuilds",
            "L2 entries on which L0 rebuilt vmcs02 in full (dirty vmcs12 or a new vmcs02)",
            by_l0,
            registry=registry,
        )
        self.panics = Counter(
            "vmxsim_vm_panics",
            "Exits whose handler stops the VM in the modelled hypervisor (not counted as exits)",
            ("profile", "mode", "exit_reason"),
            registry=registry,
        )
        self._children: dict[tuple[str, ...], Counter] = {}

    def _child(self, metric: Counter, *labels: str) -> Counter:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def on_batch(self, profile: str, mode: str, stats: BatchStats) -> None:
        if stats.l0_model is not None:
            l0 = stats.l0_model
            for cause, n in stats.l0_by_cause.items():
                self._child(self.exits, profile, mode, l0, cause).inc(n)
            self._child(self.rebuilds, profile, mode, l0).inc(stats.vmcs02_rebuilds)
        for number, n in stats.panics.items():
            self._child(self.panics, profile, mode, reason_label(number)).inc(n)


class MetricsObserver:
    """An ``Observer`` that turns the service's events into Prometheus metrics; thread-safe."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        by_mode, by_reason = ("profile", "mode"), ("profile", "mode", "exit_reason")
        self.exits = Counter("vmxsim_vm_exits", "VM exits handled", by_reason, registry=registry)
        self.vmreads = Counter(
            "vmxsim_vmcs_reads",
            "VMREAD instructions the modelled hypervisor executed, by the exit they handled",
            by_reason,
            registry=registry,
        )
        self.vmwrites = Counter(
            "vmxsim_vmcs_writes",
            "VMWRITE instructions the modelled hypervisor executed, by the exit they handled",
            by_reason,
            registry=registry,
        )
        self.instructions = Counter(
            "vmxsim_vmx_instructions",
            "VMX instructions the modelled hypervisor executed while handling exits",
            (*by_mode, "instruction"),
            registry=registry,
        )
        self.cache_hits = Counter(
            "vmxsim_vmcs_cache_hits",
            "VMCS field accesses answered by the software cache (no VMREAD/VMWRITE)",
            by_mode,
            registry=registry,
        )
        self.cache_misses = Counter(
            "vmxsim_vmcs_cache_misses",
            "Reads of cacheable VMCS fields that had to execute a VMREAD",
            by_mode,
            registry=registry,
        )
        self.vmreads_per_exit = BatchHistogram(
            "vmxsim_vmreads_per_exit",
            "VMREAD instructions executed per VM exit",
            by_mode,
            PER_EXIT_BUCKETS,
            registry,
        )
        self.vmwrites_per_exit = BatchHistogram(
            "vmxsim_vmwrites_per_exit",
            "VMWRITE instructions executed per VM exit",
            by_mode,
            PER_EXIT_BUCKETS,
            registry,
        )
        self.exit_latency = BatchHistogram(
            "vmxsim_exit_handling_simulated_seconds",
            "Simulated time from VM exit to the next VM entry (latency model of the mode)",
            by_mode,
            EXIT_LATENCY_BUCKETS_SECONDS,
            registry,
        )
        self.executed = Counter(
            "vmxsim_executed_instructions",
            "Instructions and pseudo-ops run by Execute calls, by architectural result",
            ("op", "result"),
            registry=registry,
        )
        self.vms = Gauge("vmxsim_vms", "VMs the server holds", registry=registry)
        self.vcpus = Gauge("vmxsim_vcpus", "vCPUs the server holds", registry=registry)
        build = Gauge(
            "vmxsim_build_info", "The running vmxsim version (always 1)", ("version",),
            registry=registry,
        )  # fmt: skip
        build.labels(__version__).set(1)
        self.l0 = _L0Metrics(registry)
        self._lock = threading.Lock()
        self._modes: dict[tuple[str, str], _ModeChildren] = {}
        self._executed: dict[tuple[str, str], Callable[[], None]] = {}

    def _mode(self, profile: str, mode: str) -> _ModeChildren:
        children = self._modes.get((profile, mode))
        if children is None:
            with self._lock:
                children = self._modes.get((profile, mode))
                if children is None:
                    children = self._modes[profile, mode] = _ModeChildren(self, profile, mode)
        return children

    def on_batch(self, profile: str, mode: str, stats: BatchStats) -> None:
        """Add one batch: counts by reason and instruction, cache, and three histograms."""
        children = self._mode(profile, mode)
        c = stats.counters
        for child, count in zip(
            children.instructions,
            (c.vmread, c.vmwrite, c.vmptrld, c.vmclear, c.vmxon, c.vmxoff),
            strict=True,
        ):
            if count:
                child.inc(count)
        children.cache_hits.inc(c.hits)
        children.cache_misses.inc(c.misses)
        for number, totals in stats.by_reason.items():
            reason = children.reason(number)
            reason.exits.inc(totals.exits)
            reason.vmreads.inc(totals.vmread)
            reason.vmwrites.inc(totals.vmwrite)
        children.vmreads_per_exit.add(stats.vmread_hist)
        children.vmwrites_per_exit.add(stats.vmwrite_hist)
        children.exit_latency.add(stats.latency_hist)
        if stats.l0_model is not None or stats.panics:
            self.l0.on_batch(profile, mode, stats)

    def on_instruction(self, op: str, outcome: Outcome) -> None:
        """Count one executed instruction by op and result (both bounded enums)."""
        key = (op, outcome.result.value)
        inc = self._executed.get(key)
        if inc is None:
            inc = self._executed[key] = self.executed.labels(*key).inc
        inc()

    def on_counts_changed(self, vms: int, vcpus: int) -> None:
        """Set the VM and vCPU gauges."""
        self.vms.set(vms)
        self.vcpus.set(vcpus)


class _Both:
    """Two observers told the same events (the metrics and a caller's own)."""

    def __init__(self, first: Observer, second: Observer) -> None:
        self.first, self.second = first, second

    def on_batch(self, profile: str, mode: str, stats: BatchStats) -> None:
        self.first.on_batch(profile, mode, stats)
        self.second.on_batch(profile, mode, stats)

    def on_instruction(self, op: str, outcome: Outcome) -> None:
        self.first.on_instruction(op, outcome)
        self.second.on_instruction(op, outcome)

    def on_counts_changed(self, vms: int, vcpus: int) -> None:
        self.first.on_counts_changed(vms, vcpus)
        self.second.on_counts_changed(vms, vcpus)


class MetricsServer:
    """The ``/metrics`` HTTP server on its own daemon thread; ``close`` stops it."""

    def __init__(self, httpd: HTTPServer, thread: threading.Thread) -> None:
        self._httpd, self._thread = httpd, thread
        self.port: int = httpd.server_port

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def start_metrics_server(
    address: str, registry: CollectorRegistry, tls: dict[str, Any] | None = None
) -> MetricsServer:
    """Serve ``registry`` at ``http://HOST:PORT/metrics`` (port 0: any free port); ``tls``:
    prometheus_client's ``certfile``, ``keyfile``, ``client_cafile``, ``client_auth_required``
    for HTTPS (and client certificates)."""
    host, _, port = address.rpartition(":")
    try:
        httpd, thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=registry, **(tls or {})
        )
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from None
    return MetricsServer(httpd, thread)


class ServerMetrics:
    """Everything a server needs for metrics: the registry, the observer to give the
    ``Registry``, the interceptor to put first on the gRPC server, and ``/metrics`` on
    ``address`` once started."""

    def __init__(
        self,
        address: str,
        observer: Observer = NULL_OBSERVER,
        tls: dict[str, Any] | None = None,
    ) -> None:
        # no `_created` series: they double every counter's series in the text format and no
        # panel reads them (process-wide, which is what a server process wants)
        disable_created_metrics()  # type: ignore[no-untyped-call]  # not annotated upstream
        self.address = address
        self.tls = tls
        self.registry = CollectorRegistry()
        self.metrics_observer = MetricsObserver(self.registry)
        self.observer: Observer = (
            self.metrics_observer
            if observer is NULL_OBSERVER
            else _Both(self.metrics_observer, observer)
        )
        self.interceptor = RpcMetricsInterceptor(self.registry)
        # the process_* (CPU, memory, file descriptors), python_info and python_gc_* series of
        # the default registry, on this server's own one
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.http: MetricsServer | None = None

    def watch_limits(self, open_streams: Callable[[], int], limits: dict[str, int]) -> None:
        """Export the open Drive/Replay streams (read at scrape time) and the configured
        ``limits`` (e.g. ``max_streams``), so alerts can compare the two."""
        streams = Gauge("vmxsim_streams", "Drive and Replay streams open", registry=self.registry)
        streams.set_function(lambda: float(open_streams()))
        limit = Gauge(
            "vmxsim_limit", "A configured limit of the server, by name", ("limit",),
            registry=self.registry,
        )  # fmt: skip
        for name, value in limits.items():
            limit.labels(name).set(value)

    def start(self) -> int:
        """Start serving ``/metrics``; returns the bound port (logged)."""
        self.http = start_metrics_server(self.address, self.registry, self.tls)
        host = self.address.rpartition(":")[0]
        log.info("serving /metrics on %s:%d", host, self.http.port)
        return self.http.port

    def close(self) -> None:
        """Stop serving ``/metrics`` (if started)."""
        if self.http is not None:
            self.http.close()
            self.http = None
