"""The load generator's own Prometheus metrics (``vmxsim load --metrics-listen ADDR``): what
the clients saw, to put next to the servers' ``grpc_server_handling_seconds``.

    vmxsim_load_batch_round_trip_seconds  histogram  profile, mode  a batch written until its
                                                                   stats were read (client side)
    vmxsim_load_exits_total               counter    profile, mode  exits acknowledged
    vmxsim_load_stream_errors_total       counter    grpc_code      Drive streams that failed
    vmxsim_load_streams                   gauge                     Drive streams open now

Its own ``CollectorRegistry`` (never the process-wide default), served on its own port while
the run lasts; the clients must run in this process (``processes`` 1): child processes would
each need a port of their own.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vmxsim_server.metrics import MetricsServer, start_metrics_server

__all__ = ["ROUND_TRIP_BUCKETS_SECONDS", "LoadMetrics"]

_DECADES = range(-4, 1)
ROUND_TRIP_BUCKETS_SECONDS: tuple[float, ...] = (
    *(round(mantissa * 10.0**exponent, 9) for exponent in _DECADES for mantissa in (1, 2, 5)),
    10.0,
)
"""100 us to 10 s, 1-2-5 per decade: a batch of 4,096 exits takes ~1-20 ms on loopback here."""


class LoadMetrics:
    """The metrics of one load run, for one profile and mode."""

    def __init__(self, profile: str, mode: str) -> None:
        self.registry = CollectorRegistry()
        labels = ("profile", "mode")
        self._round_trip = Histogram(
            "vmxsim_load_batch_round_trip_seconds",
            "Client-side round trip of one Drive batch (written until its stats were read)",
            labels, buckets=ROUND_TRIP_BUCKETS_SECONDS, registry=self.registry,
        ).labels(profile, mode)  # fmt: skip
        self._exits = Counter(
            "vmxsim_load_exits", "Exits the load clients were acknowledged", labels,
            registry=self.registry,
        ).labels(profile, mode)  # fmt: skip
        self._errors = Counter(
            "vmxsim_load_stream_errors", "Drive streams of the load clients that failed",
            ("grpc_code",), registry=self.registry,
        )  # fmt: skip
        self.streams = Gauge(
            "vmxsim_load_streams", "Drive streams of the load clients open now",
            registry=self.registry,
        )  # fmt: skip
        self._http: MetricsServer | None = None

    def on_batch(self, seconds: float, exits: int) -> None:
        """One acknowledged batch."""
        self._round_trip.observe(seconds)
        self._exits.inc(exits)

    def on_error(self, code: str) -> None:
        """A failed stream, by status code name."""
        self._errors.labels(code).inc()

    def start(self, address: str) -> int:
        """Serve ``/metrics`` on ``address`` (HOST:PORT, port 0 = any); the bound port."""
        self._http = start_metrics_server(address, self.registry)
        return self._http.port

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
