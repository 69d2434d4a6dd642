"""TLS, mutual TLS and bearer tokens: who may talk to the server and what they may call.

Certificates are minted at run time by trustme (nothing secret is committed).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from vmxsim_client.client import Client
from vmxsim_client.connection import add_connection_options, client_kwargs
from vmxsim_client.errors import CliError
from vmxsim_client.rpc_errors import PermissionDeniedError, UnauthenticatedError, UnavailableError
from vmxsim_server.app import BackgroundServer, start_background
from vmxsim_server.config import ConfigError, ServerConfig, from_environment
from vmxsim_server.security import READ_ONLY_METHODS

FULL_TOKEN = "full-access-token-1"
READ_ONLY_TOKEN = "read-only-token-2"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    where = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("vmxsim-test-client")
    files = {
        "ca": where / "ca.pem",
        "server_cert": where / "server.pem",
        "server_key": where / "server.key",
        "client_cert": where / "client.pem",
        "client_key": where / "client.key",
        "other_ca": where / "other-ca.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    files["server_cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    files["client_cert"].write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    trustme.CA().cert_pem.write_to_path(str(files["other_ca"]))
    return files


def _server(**changes: Any) -> BackgroundServer:
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen=None, grace_seconds=0.5)
    return start_background(config.with_changes(**changes))


@pytest.fixture(scope="module")
def mtls_server(pki: dict[str, Path]) -> Iterator[BackgroundServer]:
    with _server(
        tls_cert=str(pki["server_cert"]),
        tls_key=str(pki["server_key"]),
        tls_client_ca=str(pki["ca"]),
    ) as server:
        yield server


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    where = tmp_path_factory.mktemp("tokens")
    full, read_only = where / "tokens", where / "read-only-tokens"
    full.write_text(f"# operators\n{FULL_TOKEN}\n\nanother-full-token\n")
    read_only.write_text(f"{READ_ONLY_TOKEN} admin  # monitoring reads every tenant\n")
    with _server(auth_token_file=str(full), auth_readonly_token_file=str(read_only)) as server:
        yield server


def test_tls_serves_a_client_that_trusts_the_ca(pki: dict[str, Path]) -> None:
    with (
        _server(tls_cert=str(pki["server_cert"]), tls_key=str(pki["server_key"])) as server,
        Client(server.address, tls_ca=str(pki["ca"]), timeout=5) as client,
    ):
        assert client.create_vcpu().info.vcpu_id.startswith("vcpu-")
        with (
            Client(server.address, tls_ca=pki["other_ca"].read_bytes(), timeout=2) as stranger,
            pytest.raises(UnavailableError),  # the server's certificate is not trusted
        ):
            stranger.list_vms()
        with Client(server.address, timeout=2) as plaintext, pytest.raises(UnavailableError):
            plaintext.list_vms()


def test_mutual_tls_needs_a_client_certificate(
    mtls_server: BackgroundServer, pki: dict[str, Path]
) -> None:
    with Client(
        mtls_server.address,
        tls_ca=str(pki["ca"]),
        tls_cert=str(pki["client_cert"]),
        tls_key=str(pki["client_key"]),
        timeout=5,
    ) as client:
        assert client.list_vms() == []
    with (
        Client(mtls_server.address, tls_ca=str(pki["ca"]), timeout=2) as anonymous,
        pytest.raises(UnavailableError),
    ):
        anonymous.list_vms()


def test_tokens_none_or_wrong_are_unauthenticated(token_server: BackgroundServer) -> None:
    for token in (None, "not-a-token", FULL_TOKEN + "x"):
        with Client(token_server.address, token=token, timeout=5) as client:
            with pytest.raises(UnauthenticatedError):
                client.list_vms()
            with pytest.raises(UnauthenticatedError):  # streams too
                client.replay([], profile="kvm")
    with Client(token_server.address, token="another-full-token", timeout=5) as client:
        vcpu = client.create_vcpu()
        assert client.replay([], vcpu=vcpu.id)["exits"] == 0


def test_a_read_only_token_reads_but_may_not_change_anything(
    token_server: BackgroundServer,
) -> None:
    with Client(token_server.address, token=FULL_TOKEN, timeout=5) as owner:
        vcpu_id = owner.create_vcpu().id
    with Client(token_server.address, token=READ_ONLY_TOKEN, timeout=5) as reader:
        assert vcpu_id in [v.vcpu_id for v in reader.list_vcpus()]
        assert reader.get_vcpu(vcpu_id).vcpu_id == vcpu_id
        assert reader.stats(vcpu_id)["exits"] == 0
        with pytest.raises(PermissionDeniedError, match="may not call CreateVcpu"):
            reader.create_vcpu()
        with pytest.raises(PermissionDeniedError, match="may not call Execute"):
            reader.vcpu(vcpu_id).vmxoff()
        with pytest.raises(PermissionDeniedError, match="may not call Replay"):
            reader.replay([], vcpu=vcpu_id)
    names = {m.rsplit("/", 1)[1] for m in READ_ONLY_METHODS}
    assert names == {
        "ListVms", "ListVcpus", "GetVcpu", "GetStats", "ListProfiles", "ListMixes", "ListL0Models"
    }  # fmt: skip


def test_health_needs_no_token_and_reflection_needs_one(token_server: BackgroundServer) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as raised:
            list(reflect.ServerReflectionInfo(iter([ask]), timeout=5))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = (("authorization", f"Bearer {READ_ONLY_TOKEN}"),)
        answers = list(reflect.ServerReflectionInfo(iter([ask]), timeout=5, metadata=metadata))
        names = {s.name for s in answers[0].list_services_response.service}
        assert "vmxsim.v1.VcpuService" in names


def test_security_settings_are_validated(tmp_path: Path, pki: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key go together"):
        ServerConfig(tls_cert=str(pki["server_cert"]))
    with pytest.raises(ConfigError, match="--tls-client-ca needs --tls-cert"):
        ServerConfig(tls_client_ca=str(pki["ca"]))
    with pytest.raises(ConfigError, match="VMXSIM_TLS_CERT: '/nonexistent' is not a readable"):
        from_environment({"VMXSIM_TLS_CERT": "/nonexistent", "VMXSIM_TLS_KEY": "/nonexistent"})
    empty = tmp_path / "empty"
    empty.write_text("# nobody\n\n")
    with pytest.raises(ConfigError, match="holds no token"):
        _server(auth_token_file=str(empty))
    with pytest.raises(ValueError, match="go together"):
        Client("127.0.0.1:1", tls_cert=b"x")


def test_cli_connection_options(
    tmp_path: Path, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = argparse.ArgumentParser()
    add_connection_options(parser)
    token = tmp_path / "token"
    token.write_text(f"{FULL_TOKEN}\n")
    args = parser.parse_args(["--tls-ca", str(pki["ca"]), "--token-file", str(token)])
    kwargs = client_kwargs(args)
    assert kwargs["token"] == FULL_TOKEN and kwargs["tls_ca"] == pki["ca"].read_bytes()
    assert kwargs["tls_cert"] is None and kwargs["tls"] is False
    with pytest.raises(CliError, match="--tls-cert and --tls-key go together"):
        client_kwargs(parser.parse_args(["--tls-cert", str(pki["client_cert"])]))
    with pytest.raises(CliError, match="cannot read --tls-ca /nonexistent"):
        client_kwargs(parser.parse_args(["--tls-ca", "/nonexistent"]))
    monkeypatch.setenv("VMXSIM_TOKEN", "from-env")
    assert client_kwargs(parser.parse_args([]))["token"] == "from-env"
