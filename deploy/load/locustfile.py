"""Locust load on vmxsim: a gRPC user per simulated client, for load beyond one machine.

    locust -f deploy/load/locustfile.py --headless -u 50 -r 10 -t 60s \
        --host 127.0.0.1:50051 --csv out            # out_stats.csv: requests, failures, p50..p100

``--host`` may list several servers (``HOST:PORT,HOST:PORT``): users are spread over them round
robin, each keeping its server (the same sharding as ``ShardedClient``, docs/scale-out.md).

Distributed (DESIGN.md "Scale": an existing load engine, not a home-made process farm): one
``locust -f ... --master`` and any number of ``locust -f ... --worker --master-host HOST``;
docs/scale-out.md. Each user opens its own channel (one per simulated client), creates a VM
with two vCPUs (one to drive, one in VMX root operation with a current VMCS), then mixes Drive
streams of batched exits (weight 5) with unary VMREADs (weight 1). Every RPC is reported to
Locust by a client interceptor firing ``events.request`` (locust's examples/grpc pattern); a
Drive stream counts as one request whose response length is its number of batches.

gRPC's sync API is made gevent-cooperative by ``grpc.experimental.gevent.init_gevent()``, which
must run before any channel exists; this file therefore uses raw stubs on its own channels.
Environment: VMXSIM_LOAD_PROFILE (default kvm), VMXSIM_LOAD_MODE (default native).

TLS and tokens: the options and environment variables of every vmxsim command
(client/vmxsim_client/connection.py) on Locust's command line, prefixed ``--vmxsim-`` because
Locust's own ``--tls-cert``/``--tls-key`` secure its web UI: ``--vmxsim-tls``,
``--vmxsim-tls-ca FILE`` (env VMXSIM_TLS_CA), ``--vmxsim-tls-cert``/``--vmxsim-tls-key FILE``
(mutual TLS), ``--vmxsim-token-file FILE`` (env VMXSIM_TOKEN_FILE, or VMXSIM_TOKEN: the token).
Each worker reads its own: give them to every ``--worker`` too, or set the environment.
"""

from __future__ import annotations

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import itertools  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402
from locust import User, constant, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from vmxsim.v1 import vmxsim_pb2 as pb  # noqa: E402
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc  # noqa: E402
from vmxsim_client.client import bearer_metadata, open_channel  # noqa: E402
from vmxsim_client.connection import add_connection_options, client_kwargs  # noqa: E402
from vmxsim_client.instructions import Instruction  # noqa: E402
from vmxsim_client.wire import exit_batches, mode_to_pb  # noqa: E402
from vmxsim_server.vmx.mixes import load_mix, synthesize  # noqa: E402

PROFILE = os.environ.get("VMXSIM_LOAD_PROFILE", "kvm")
MODE = os.environ.get("VMXSIM_LOAD_MODE", "native")
EXITS_PER_STREAM = 8192
BATCH_SIZE = 1024
TIMEOUT_SECONDS = 30.0
CLEANUP_ATTEMPTS = 50
DEFAULT_HOST = "127.0.0.1:50051"
PREFIX = "vmxsim-"
"""Before vmxsim's connection options on Locust's command line (Locust has a --tls-cert)."""
VMXON_REGION, VMCS_REGION = 0x1000, 0x2000
BATCHES = list(exit_batches(synthesize(load_mix("linux-boot"), EXITS_PER_STREAM, 0), BATCH_SIZE))
"""The exits of every Drive stream, packed once."""
_USER_NUMBERS = itertools.count()
ENTER_VMX = (("REVID", VMXON_REGION), ("VMXON", VMXON_REGION), ("REVID", VMCS_REGION),
             ("VMCLEAR", VMCS_REGION), ("VMPTRLD", VMCS_REGION))  # fmt: skip


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _connection_options(parser: Any) -> None:
    """vmxsim's TLS and token options on Locust's command line."""
    add_connection_options(parser, prefix=PREFIX)


def _channel(environment: Environment, target: str) -> tuple[grpc.Channel, Any]:
    """A channel to ``target`` as the command line says (TLS or not), and the call metadata
    (the bearer token, or None)."""
    parsed = environment.parsed_options
    options = client_kwargs(parsed, prefix=PREFIX) if parsed else {}
    tls = (options.get("tls_ca"), options.get("tls_cert"), options.get("tls_key"))
    channel = open_channel(grpc, target, *tls, bool(options.get("tls")))
    return channel, bearer_metadata(options.get("token"))


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Reports every call to Locust: name = the method, time = until the last response."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def _fire(self, method: str, started: float, length: int, error: Exception | None) -> None:
        self.environment.events.request.fire(  # type: ignore[no-untyped-call]
            request_type="grpc",
            name=method.rsplit("/", 1)[-1],
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context=None,
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        started = time.perf_counter()
        call = continuation(details, request)
        try:
            length = call.result().ByteSize()
        except grpc.RpcError as exc:
            self._fire(details.method, started, 0, exc)
            raise
        self._fire(details.method, started, length, None)
        return call

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Any
    ) -> Any:
        started = time.perf_counter()
        call = continuation(details, request_iterator)

        def responses() -> Iterator[Any]:
            count = 0
            try:
                for response in call:
                    count += 1
                    yield response
            except grpc.RpcError as exc:
                self._fire(details.method, started, count, exc)
                raise
            self._fire(details.method, started, count, None)

        return responses()


class VmxsimUser(User):
    """One simulated client: its own channel and vCPU."""

    wait_time = constant(0)

    def on_start(self) -> None:
        targets = (self.host or DEFAULT_HOST).split(",")
        self.target = targets[next(_USER_NUMBERS) % len(targets)].strip()
        self.raw_channel, self.metadata = _channel(self.environment, self.target)
        channel = grpc.intercept_channel(self.raw_channel, LocustInterceptor(self.environment))
        self.stub = pb_grpc.VcpuServiceStub(channel)
        request = pb.CreateVcpuRequest(profile=PROFILE, mode=mode_to_pb(MODE))
        call = {"timeout": TIMEOUT_SECONDS, "metadata": self.metadata}
        driven = self.stub.CreateVcpu(request, **call).vcpu
        self.vcpu_id, self.vm_id = driven.vcpu_id, driven.vm_id
        # a second vCPU of the same VM, in VMX root operation with a current VMCS, for VMREADs
        request.vm_id = self.vm_id
        reader = self.stub.CreateVcpu(request, **call).vcpu.vcpu_id
        setup = [Instruction(op, (operand,)).to_pb() for op, operand in ENTER_VMX]
        self.stub.Execute(
            pb.ExecuteRequest(vcpu_id=reader, instructions=setup, stop_on_failure=True), **call
        )
        self.vmread = pb.ExecuteRequest(
            vcpu_id=reader, instructions=[Instruction("VMREAD", ("GUEST_RIP",)).to_pb()]
        )

    def on_stop(self) -> None:
        """Delete the VM, outside the statistics; a Drive stream that the stop interrupted
        may hold the vCPU for a moment after its channel closed."""
        self.raw_channel.close()
        channel, metadata = _channel(self.environment, self.target)
        with channel:
            stub = pb_grpc.VcpuServiceStub(channel)
            for _ in range(CLEANUP_ATTEMPTS):
                try:
                    stub.DeleteVm(
                        pb.DeleteVmRequest(vm_id=self.vm_id),
                        timeout=TIMEOUT_SECONDS,
                        metadata=metadata,
                    )
                    return
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
                    time.sleep(0.1)

    def _drive_requests(self) -> Iterator[pb.DriveRequest]:
        yield pb.DriveRequest(vcpu_id=self.vcpu_id)
        for batch in BATCHES:
            yield pb.DriveRequest(batch=batch)

    @task(5)
    def drive(self) -> None:
        """One Drive stream of EXITS_PER_STREAM exits in batches of BATCH_SIZE."""
        drive = self.stub.Drive(
            self._drive_requests(), timeout=TIMEOUT_SECONDS, metadata=self.metadata
        )
        for _ in drive:
            pass

    @task(1)
    def read_guest_rip(self) -> None:
        """One unary Execute with one VMREAD."""
        self.stub.Execute(self.vmread, timeout=TIMEOUT_SECONDS, metadata=self.metadata)
