"""``vmxsim serve`` and its settings: flags, environment variables, validation, logging, and a
graceful shutdown of a real server process in the middle of a stream."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest_service import cpuid_batch

from vmxsim.v1 import vmxsim_pb2 as pb
from vmxsim.v1 import vmxsim_pb2_grpc as pb_grpc
from vmxsim_client.cli import main
from vmxsim_server import app
from vmxsim_server.config import (
    OPTIONS,
    ConfigError,
    ServerConfig,
    from_environment,
    is_loopback,
)


def test_every_option_has_a_flag_and_an_environment_variable() -> None:
    assert [o.env for o in OPTIONS][:4] == [
        "VMXSIM_LISTEN", "VMXSIM_METRICS_LISTEN", "VMXSIM_MAX_VCPUS", "VMXSIM_MAX_STREAMS",
    ]  # fmt: skip
    assert {o.flag_name for o in OPTIONS} >= {"--listen", "--grace", "--log-format"}
    defaults = ServerConfig()
    assert (defaults.listen, defaults.metrics_listen) == ("127.0.0.1:50051", "127.0.0.1:9464")
    assert (defaults.max_vcpus, defaults.max_streams, defaults.max_batch_exits) == (
        10_000,
        64,
        100_000,
    )
    assert defaults.max_message_bytes == 16 * 1024 * 1024 and defaults.grace_seconds == 5.0


def test_environment_then_flags_override_the_defaults() -> None:
    env = {"VMXSIM_MAX_VCPUS": "7", "VMXSIM_METRICS_LISTEN": "off", "VMXSIM_GRACE": "0.5"}
    config = from_environment(env)
    assert (config.max_vcpus, config.metrics_listen, config.grace_seconds) == (7, None, 0.5)
    assert config.listen == "127.0.0.1:50051"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VMXSIM_MAX_VCPUS": "lots"}, "VMXSIM_MAX_VCPUS: 'lots' is not an integer"),
        ({"VMXSIM_MAX_STREAMS": "0"}, "VMXSIM_MAX_STREAMS: 0 must be at least 1"),
        ({"VMXSIM_LISTEN": "50051"}, "VMXSIM_LISTEN: '50051' is not HOST:PORT"),
        ({"VMXSIM_LOG_FORMAT": "xml"}, "VMXSIM_LOG_FORMAT: 'xml' is not one of text, json"),
        ({"VMXSIM_GRACE": "-1"}, "VMXSIM_GRACE: '-1' must be a finite number"),
    ],
)
def test_bad_environment_values_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_environment(env)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_config_validates_programmatic_values() -> None:
    with pytest.raises(ConfigError, match="max_batch_exits"):
        ServerConfig(max_batch_exits=0)
    assert ServerConfig().with_changes(listen="[::1]:0").listen == "[::1]:0"
    assert is_loopback("127.0.0.1:1") and is_loopback("[::1]:1") and is_loopback("localhost:1")
    assert not is_loopback("0.0.0.0:1") and not is_loopback("example.org:1")


def test_serve_cli_errors_and_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VMXSIM_MAX_VCPUS", "many")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == "vmxsim: error: VMXSIM_MAX_VCPUS: 'many' is not an integer\n"
    assert main(["serve", "--max-vcpus", "0"]) == 2
    assert "--max-vcpus: 0 must be at least 1" in capsys.readouterr().err
    assert main(["serve", "--help"]) == 0  # main returns argparse's status, never exits
    text = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS:
        assert option.flag_name in text and f"env {option.env}" in text


def test_serve_warns_without_tls_off_loopback_and_stops_on_sigterm(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app, "is_loopback", lambda address: False)
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen=None, grace_seconds=0.1)

    async def run() -> None:
        task = asyncio.create_task(app.serve(config))
        while not any("serving vmxsim" in r.message for r in caplog.records):
            await asyncio.sleep(0.01)
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(task, 5)

    with caplog.at_level(logging.INFO, logger="vmxsim.server"):
        asyncio.run(run())
    messages = [r.getMessage() for r in caplog.records]
    assert any("without TLS" in m for m in messages)
    assert any(m.startswith("stopped; 0 streams cut") for m in messages)


def test_a_taken_port_is_a_clear_error(service_server: app.BackgroundServer) -> None:
    taken = ServerConfig(listen=service_server.address, metrics_listen=None)
    with pytest.raises(OSError, match=f"cannot listen on {service_server.address}"):
        app.start_background(taken)


def _lines(stream: object, into: queue.Queue[dict[str, object]]) -> None:
    """Parse the server's JSON log lines (gRPC's own C-core lines are not JSON: skipped)."""
    for line in stream:  # type: ignore[attr-defined]
        if line.startswith("{"):
            into.put(json.loads(line))


def test_sigterm_mid_stream_cuts_it_after_the_grace_and_exits_zero() -> None:
    vmxsim = Path(sys.executable).with_name("vmxsim")
    command = [str(vmxsim), "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off",
               "--grace", "1", "--log-format", "json"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[dict[str, object]] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    log: list[dict[str, object]] = []
    try:
        while "port" not in (log[-1] if log else {}):
            log.append(lines.get(timeout=20))
        address = f"127.0.0.1:{log[-1]['port']}"
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.VcpuServiceStub(channel)
            vcpu_id = stub.CreateVcpu(pb.CreateVcpuRequest()).vcpu.vcpu_id
            done = threading.Event()

            def endless() -> Iterator[pb.DriveRequest]:
                yield pb.DriveRequest(vcpu_id=vcpu_id)
                for sequence in range(1, 100_000):
                    if done.wait(0.02):
                        return
                    yield pb.DriveRequest(batch=cpuid_batch(100, sequence))

            responses = stub.Drive(endless())
            for _ in range(3):
                next(responses)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            with pytest.raises(grpc.RpcError) as raised:
                for _ in responses:
                    pass
            done.set()
            assert raised.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            assert process.wait(timeout=10) == 0
            assert time.monotonic() - signalled < 1 + 3
        reader.join(5)
        while not lines.empty():
            log.append(lines.get())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()  # type: ignore[union-attr]
    messages = [str(line["message"]) for line in log]
    assert any(m.startswith("shutting down: 1 streams open") for m in messages)
    cut = [line for line in log if str(line["message"]).startswith("shutdown cut Drive stream")]
    assert len(cut) == 1 and cut[0]["vcpu_id"] == vcpu_id and cut[0]["level"] == "warning"
    assert any(m.startswith("stopped; 1 streams cut") for m in messages)
