"""Server assembly: the VcpuService with health, reflection, limits and logging on ``grpc.aio``.

- ``serve(config)``: the foreground server of ``vmxsim serve``. SIGTERM or SIGINT sets health to
  NOT_SERVING, stops accepting calls, gives open streams ``grace_seconds`` to finish and logs
  every stream it had to cut, then returns (exit status 0), or raises ``StateNotSaved`` when
  the final save of the state directory failed (``vmxsim serve`` then exits 1).
- ``start_background(config)``: the same server on a daemon thread with its own event loop, for
  the CLI's embedded default (DESIGN.md "One code path") and for tests; returns once serving.

Health (``grpc.health.v1``) answers for ``""`` and ``vmxsim.v1.VcpuService``; reflection (v1 and
v1alpha, reflection.py) lists both services and itself. TLS, mutual TLS and bearer tokens:
security.py. With a state directory (state.py) the vCPUs saved there are restored before
serving, saved every ``snapshot_interval_seconds`` and at shutdown, and replays can be resumed
after a crash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc

from .config import ServerConfig, is_loopback
from .limits import LIMITS
from .metrics import ServerMetrics
from .observe import NULL_OBSERVER, Observer
from .reflection import enable_reflection
from .registry import Registry
from .request_limits import RequestSizeInterceptor
from .security import AuthInterceptor, metrics_tls, server_credentials
from .service import SERVICE_NAME, VcpuService
from .state import StateDir
from .status import ErrorInterceptor

__all__ = [
    "CONCURRENCY_OPTIONS",
    "KEEPALIVE_OPTIONS",
    "BackgroundServer",
    "StateNotSaved",
    "channel_options",
    "configure_logging",
    "serve",
    "server_options",
    "start_background",
]

log = logging.getLogger("vmxsim.server")

KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    # ping an idle connection every 30 s and drop it when the ping is not answered in 10 s, so
    # a vanished client's streams (and the vCPUs they claim) are released
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # allow those pings on connections without calls, and client pings every 10 s at most
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
)
"""Keep-alive settings shared by the server and vmxsim's clients (grpc examples/keep_alive)."""


CONCURRENCY_OPTIONS: tuple[tuple[str, int], ...] = (
    # issue 15.3: many streams at once. A grpc.aio server cancels a call its application has
    # not picked up within this time (default 30 s: 64 concurrent CLI replays lost some with
    # CANCELLED after ~31 s); a call waiting its turn behind busy streams is not an error.
    ("grpc.server_max_unrequested_time_in_server", 600),
    # HTTP/2 streams one connection may have open (the default is unbounded in C-core but
    # clients and proxies assume 100); above --max-streams so the server's own limit answers
    # RESOURCE_EXHAUSTED with a readable message instead of the transport refusing
    ("grpc.max_concurrent_streams", 1_024),
    # flow control is left to gRPC's BDP probing (on by default): setting a 4 MiB per-stream
    # window (grpc.http2.lookahead_bytes, with grpc.http2.bdp_probe 1) made the gevent client
    # of deploy/load/locustfile.py fail (tests/test_load.py)
)
"""Server channel arguments for many concurrent streams, set in one place (issue 15.3)."""


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """The server's channel arguments: keep-alive, concurrency and flow control
    (CONCURRENCY_OPTIONS), message sizes (larger messages are answered RESOURCE_EXHAUSTED by
    gRPC itself), and no SO_REUSEPORT, so a second server on a taken port fails instead of
    sharing it."""
    return [
        *KEEPALIVE_OPTIONS,
        *CONCURRENCY_OPTIONS,
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


def channel_options(
    max_message_bytes: int = ServerConfig.max_message_bytes,
) -> list[tuple[str, int]]:
    """The client side of ``server_options``: keep-alive and the same message-size limits."""
    return [
        *KEEPALIVE_OPTIONS,
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


# --- logging ---------------------------------------------------------------------------------

_RECORD_KEYS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _RECORD_KEYS})
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(config: ServerConfig) -> None:
    """Log to standard error as text or JSON lines at the configured level."""
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())


# --- assembly --------------------------------------------------------------------------------


class StateNotSaved(OSError):
    """The state directory could not be written at shutdown: vCPUs changed since the last
    successful save are lost (the message says why)."""


@dataclass
class _Running:
    """A started server and the parts a shutdown needs."""

    server: aio.Server
    health: health_aio.HealthServicer
    service: VcpuService
    port: int
    metrics: ServerMetrics | None = None
    state: StateDir | None = None
    saver: asyncio.Task[None] | None = None
    health_server: aio.Server | None = None

    async def save_state(self) -> str:
        """Save the changed vCPUs to the state directory (on a worker thread) and expire old
        replay checkpoints; log, never raise. Returns "" or why the save failed."""
        if self.state is None:
            return ""
        try:
            saved = await asyncio.to_thread(self.state.save_vcpus, self.service.registry)
            await asyncio.to_thread(self.state.expire_replays)
        except OSError as exc:
            log.error("saving the vCPUs to %s failed: %s", self.state.path, exc)
            return str(exc)
        except Exception as exc:
            log.exception("saving the vCPUs to %s failed", self.state.path)
            return str(exc)
        log.debug("saved %d vCPUs to %s", saved, self.state.path, extra={"vcpus": saved})
        return ""

    async def save_periodically(self, interval: float) -> None:
        """``save_state`` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.save_state()

    async def shutdown(self, grace: float) -> str:
        """NOT_SERVING, stop accepting, let streams finish within ``grace``, log what was cut.
        Returns "" or why the final save of the state directory failed."""
        streams = self.service.streams
        await self.health.enter_graceful_shutdown()
        log.info(
            "shutting down: %d streams open, %.1f s grace",
            len(streams.active),
            grace,
            extra={"streams": len(streams.active)},
        )
        stopping = asyncio.ensure_future(self.server.stop(grace))
        await asyncio.wait((stopping,), timeout=grace)
        cut = streams.cut_open()  # still open when the grace ran out: gRPC cancels them now
        for info in cut:
            log.warning("shutdown cut %s", info.describe(), extra={"vcpu_id": info.vcpu_id})
        await stopping
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self.saver is not None:
            self.saver.cancel()
        failed = await self.save_state()
        if self.metrics is not None:
            self.metrics.close()
        log.info("stopped; %d streams cut", len(cut), extra={"streams": len(cut)})
        return failed


def _open_state(config: ServerConfig, registry: Registry) -> StateDir | None:
    """The state directory with its vCPUs restored into ``registry`` (None without one)."""
    if config.state_dir is None:
        return None
    state = StateDir(Path(config.state_dir), config.replay_retention_seconds)
    restored = state.restore_vcpus(registry)
    expired = state.expire_replays()
    log.info(
        "state directory %s: restored %d vCPUs, expired %d replays", state.path, restored,
        expired, extra={"vcpus": restored},
    )  # fmt: skip
    return state


async def _health_only(address: str, health: health_aio.HealthServicer) -> aio.Server:
    """A plaintext server of ``grpc.health.v1`` alone (``--health-listen``): probes that cannot
    do TLS see the same health as the main port, and nothing else."""
    server = aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {str(exc).split(';', 1)[0]}") from None
    await server.start()
    log.info("serving health alone on %s", address)
    return server


async def _start(config: ServerConfig, observer: Observer) -> _Running:
    credentials = server_credentials(config)
    auth = AuthInterceptor.from_config(config)
    metrics = (
        ServerMetrics(config.metrics_listen, observer, metrics_tls(config))
        if config.metrics_listen
        else None
    )
    if metrics is not None:
        observer = metrics.observer
    limits = {limit.name: getattr(config, limit.name) for limit in LIMITS}
    registry = Registry(observer=observer, **limits)
    state = await asyncio.to_thread(_open_state, config, registry)
    service = VcpuService(registry, config, state, auth)
    if metrics is not None:
        limits = {"max_vcpus": config.max_vcpus, "max_streams": config.max_streams,
                  "max_batch_exits": config.max_batch_exits}  # fmt: skip
        metrics.watch_limits(lambda: len(service.streams.active), limits)
    # metrics first, so it sees the status codes the others set; then who may call at all
    interceptors: list[aio.ServerInterceptor] = [
        ErrorInterceptor(f"/{SERVICE_NAME}/"),
        RequestSizeInterceptor(config.max_instructions),  # inside: its errors get mapped
    ]
    if auth is not None:
        interceptors.insert(0, auth)
    if metrics is not None:
        interceptors.insert(0, metrics.interceptor)
    server = aio.server(options=server_options(config), interceptors=interceptors)
    pb_grpc.add_VcpuServiceServicer_to_server(service, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    enable_reflection((SERVICE_NAME, health_name), server)
    try:
        if credentials is None:
            port = server.add_insecure_port(config.listen)
        else:
            port = server.add_secure_port(config.listen, credentials)
    except RuntimeError as exc:
        reason = str(exc).split(";", 1)[0]  # gRPC's advice about GRPC_VERBOSITY is noise here
        raise OSError(f"cannot listen on {config.listen}: {reason}") from None
    if metrics is not None:
        metrics.start()
    await server.start()
    running = _Running(server, health, service, port, metrics, state)
    if config.health_listen is not None:
        running.health_server = await _health_only(config.health_listen, health)
    if state is not None and config.snapshot_interval_seconds > 0:
        running.saver = asyncio.create_task(
            running.save_periodically(config.snapshot_interval_seconds)
        )
    return running


async def serve(config: ServerConfig, observer: Observer = NULL_OBSERVER) -> None:
    """Run the server in the foreground until SIGTERM or SIGINT, then shut down gracefully."""
    running = await _start(config, observer)
    host = config.listen.rpartition(":")[0]
    log.info(
        "serving vmxsim on %s:%d (max %d vCPUs, %d streams)", host, running.port,
        config.max_vcpus, config.max_streams, extra={"port": running.port},
    )  # fmt: skip
    if not is_loopback(config.listen):
        if not config.tls:
            log.warning("listening on %s without TLS: anyone on the path can read the calls", host)
        if not config.auth and config.tls_client_ca is None:
            log.warning("listening on %s without tokens or client certificates: anyone who"
                        " can reach it can use it", host)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    try:
        await stop.wait()
        failed = await running.shutdown(config.grace_seconds)
        if failed:
            raise StateNotSaved(f"the final save to {config.state_dir} failed: {failed}")
    finally:
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(number)


_SETTLE_SECONDS = 1.0
"""How long an in-process server waits at stop for streams its client cancelled to end."""


class BackgroundServer:
    """A server on a daemon thread with its own event loop; a context manager that stops it."""

    def __init__(self, config: ServerConfig, observer: Observer = NULL_OBSERVER) -> None:
        self.config = config
        self.port = 0
        self.address = ""
        self._observer = observer
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._grace = config.grace_seconds
        self._thread = threading.Thread(target=self._run, name="vmxsim-server", daemon=True)

    def start(self) -> BackgroundServer:
        """Start serving; returns once the port is bound (raises what the start raised)."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start() when it happens before serving
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("background server failed")

    async def _main(self) -> None:
        running = await _start(self.config, self._observer)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        host = self.config.listen.rpartition(":")[0]
        self.port = running.port
        self.address = f"{host}:{running.port}"
        self._ready.set()
        await self._stop.wait()
        # The command's client has just closed its channel: let the streams it cancelled end
        # on their own before the shutdown cancels their handlers (grpc prints a traceback for
        # a handler it cancels, which a CLI user must not see).
        deadline = asyncio.get_running_loop().time() + _SETTLE_SECONDS
        while running.service.streams.active and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await running.shutdown(self._grace)

    def stop(self, grace: float | None = None) -> None:
        """Shut down (``grace`` seconds for open streams; default the config's) and wait."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            if grace is not None:
                self._grace = grace
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_background(
    config: ServerConfig | None = None, observer: Observer = NULL_OBSERVER
) -> BackgroundServer:
    """A serving ``BackgroundServer``; ``config`` None = loopback on a free port, no metrics."""
    config = config or ServerConfig(listen="127.0.0.1:0", metrics_listen=None)
    return BackgroundServer(config, observer).start()
