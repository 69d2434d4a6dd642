"""How the remote commands connect: TLS, mutual TLS and a bearer token, as options.

    --tls                 use TLS with the system's CA roots
    --tls-ca FILE         use TLS, trusting the CA in FILE (PEM)       env VMXSIM_TLS_CA
    --tls-cert FILE       client certificate for mutual TLS (PEM)      env VMXSIM_TLS_CLIENT_CERT
    --tls-key FILE        its private key (PEM)                        env VMXSIM_TLS_CLIENT_KEY
    --token-file FILE     send the first token in FILE as a bearer     env VMXSIM_TOKEN_FILE
                          token (env VMXSIM_TOKEN gives the token itself)

A token is read from a file or the environment, never from the command line, where other
users of the machine could see it in the process list.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .errors import CliError

__all__ = ["add_connection_options", "client_kwargs"]

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


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """The TLS and token options of a command that talks to a ``--server``."""
    group = parser.add_argument_group("connection security (with --server)")
    group.add_argument(
        "--tls", action="store_true", help="use TLS with the system's CA certificates"
    )
    for flag, env, text in _FILE_OPTIONS:
        group.add_argument(
            flag, metavar="FILE", default=os.environ.get(env) or None, help=f"{text} (env {env})"
        )


def _token(args: argparse.Namespace) -> str | None:
    path = getattr(args, "token_file", None)
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


def client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Client`` keyword arguments of ``add_connection_options``' options; CliError for a
    file that cannot be read or a certificate without its key."""
    cert, key = _pem(args, "tls_cert"), _pem(args, "tls_key")
    if (cert is None) != (key is None):
        raise CliError("--tls-cert and --tls-key go together: give both")
    return {
        "tls": bool(getattr(args, "tls", False)),
        "tls_ca": _pem(args, "tls_ca"),
        "tls_cert": cert,
        "tls_key": key,
        "token": _token(args),
    }
