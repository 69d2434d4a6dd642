"""How the remote commands connect: TLS, mutual TLS and a bearer token, as options.

    --tls                 use TLS with the system's CA roots
    --tls-ca FILE         use TLS, trusting the CA in FILE (PEM)       env VMXSIM_TLS_CA
    --tls-cert FILE       client certificate for mutual TLS (PEM)      env VMXSIM_TLS_CLIENT_CERT
    --tls-key FILE        its private key (PEM)                        env VMXSIM_TLS_CLIENT_KEY
    --token-file FILE     send the first token in FILE as a bearer     env VMXSIM_TOKEN_FILE
                          token (env VMXSIM_TOKEN gives the token itself)

A token is read from a file or the environment, never from the command line, where other
users of the machine could see it in the process list.

``SERVICE_CONFIG`` is the gRPC service config of every channel the client opens: a retry policy
for the idempotent unary RPCs (those that only read: List*, Get*, Snapshot), so that a call that
meets a restarting or draining server (UNAVAILABLE) is retried by gRPC itself, with backoff.
Calls that change state (CreateVcpu, Execute, DeleteVm, ...) are never retried: a retry could
run them twice.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from vmxsim.v1 import vmxsim_pb2 as pb

from .errors import CliError

__all__ = ["IDEMPOTENT_METHODS", "SERVICE_CONFIG", "add_connection_options", "client_kwargs",
           "retry_channel_options"]  # fmt: skip

_SERVICE = pb.DESCRIPTOR.services_by_name["VcpuService"]
IDEMPOTENT_METHODS = tuple(
    method.name
    for method in _SERVICE.methods
    if not method.client_streaming
    and (method.name.startswith(("List", "Get")) or method.name == "Snapshot")
)
"""The unary RPCs that only read, so running one twice is harmless (derived from the proto)."""

SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{"service": _SERVICE.full_name, "method": m} for m in IDEMPOTENT_METHODS],
            # gRPC's retry design (gRFC A6): UNAVAILABLE is the status that says "try again";
            # 4 attempts in all, waits drawn from 0..0.1 s, 0.2 s, 0.4 s (capped at 1 s)
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
"""The service config of every vmxsim channel (see the module docstring)."""


def retry_channel_options() -> tuple[tuple[str, Any], ...]:
    """Channel arguments that apply ``SERVICE_CONFIG`` (retries on, the config as JSON)."""
    return (("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(SERVICE_CONFIG)))


ENV_TOKEN = "VMXSIM_TOKEN"
_FILE_OPTIONS = (
    # (flag, environment variable, help)
    ("--tls-ca", "VMXSIM_TLS_CA", "use TLS and trust the server certificate's CA in this PEM file"),
    ("--tls-cert", "VMXSIM_TLS_CLIENT_CERT", "client certificate (PEM) for mutual TLS"),
    ("--tls-key", "VMXSIM_TLS_CLIENT_KEY", "private key (PEM) of --tls-cert"),
    (
        "--token-file",
        "VMXSIM_TOKEN_FILE",
        f"send the token in this file (env {ENV_TOKEN}: the token)",
    ),
)


def add_connection_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The TLS and token options of a command that talks to a ``--server``. ``prefix`` goes
    before each flag (``--PREFIXtls-ca``) where the parser has options of these names already
    (Locust's own --tls-cert/--tls-key are for its web UI: deploy/load/locustfile.py)."""
    group = parser.add_argument_group("connection security (with --server)")
    group.add_argument(
        f"--{prefix}tls", action="store_true", help="use TLS with the system's CA certificates"
    )
    for flag, env, text in _FILE_OPTIONS:
        group.add_argument(
            f"--{prefix}{flag.removeprefix('--')}",
            metavar="FILE",
            default=os.environ.get(env) or None,
            help=f"{text} (env {env})",
        )


def _token(args: argparse.Namespace, prefix: str) -> str | None:
    path = getattr(args, f"{prefix}token_file", None)
    if path is None:
        return os.environ.get(ENV_TOKEN) or None
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as exc:
        raise CliError(f"cannot read --token-file {path}: {exc.strerror or exc}") from None
    # the server's token-file format (vmxsim_server.tenancy): the first word of the first line
    # that is not blank or a # comment; words after it are the server's options
    words = [line.split() for line in lines]
    tokens = [w[0] for w in words if w and not w[0].startswith("#")]
    if not tokens:
        raise CliError(f"--token-file {path} holds no token (only blank or # comment lines)")
    return tokens[0]


def _pem(args: argparse.Namespace, name: str) -> bytes | None:
    path = getattr(args, name, None)
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        flag = "--" + name.replace("_", "-")
        raise CliError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


def client_kwargs(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The ``Client`` keyword arguments of ``add_connection_options``' options (with the same
    ``prefix``); CliError for a file that cannot be read or a certificate without its key."""
    dest = prefix.replace("-", "_")
    cert, key = _pem(args, f"{dest}tls_cert"), _pem(args, f"{dest}tls_key")
    if (cert is None) != (key is None):
        raise CliError(f"--{prefix}tls-cert and --{prefix}tls-key go together: give both")
    return {
        "tls": bool(getattr(args, f"{dest}tls", False)),
        "tls_ca": _pem(args, f"{dest}tls_ca"),
        "tls_cert": cert,
        "tls_key": key,
        "token": _token(args, dest),
    }
