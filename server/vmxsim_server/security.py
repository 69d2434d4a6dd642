"""Transport security and bearer-token authentication of the server.

- TLS: ``--tls-cert``/``--tls-key`` serve TLS; ``--tls-client-ca`` also requires every client to
  present a certificate signed by that CA (mutual TLS), checked by gRPC's TLS handshake.
- Tokens: ``--auth-token-file`` (full access) and ``--auth-readonly-token-file`` (List*/Get*
  calls and reflection only) hold one token per line (blank lines and ``#`` comments ignored),
  optionally followed by ``tenant=NAME`` and ``admin`` (tenancy.py), read once at start. A call
  carries ``authorization: Bearer <token>`` metadata. Tokens are compared in constant time
  (``hmac.compare_digest``) against every known token.
- Files are checked at start, each problem one line naming the file: a certificate or key
  that is not PEM, a key that does not match its certificate, a token file without a token.

Answers: no or unknown token -> UNAUTHENTICATED; a read-only token on a call that changes state
-> PERMISSION_DENIED. ``grpc.health.v1.Health`` is always open (load balancers and Kubernetes
probes carry no token); reflection needs a token of either kind, because it lists the API to
whoever asks.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from vmxsim.v1 import vmxsim_pb2 as pb

from .config import ConfigError, ServerConfig
from .reflection import V1_SERVICE_NAME
from .status import Continuation
from .tenancy import Caller, Token, find_token, identity_of_peer, parse_token_line

__all__ = [
    "OPEN_SERVICES",
    "READ_ONLY_METHODS",
    "AuthInterceptor",
    "caller_of",
    "check_certificate",
    "metrics_tls",
    "read_tokens",
    "server_credentials",
]

OPEN_SERVICES = frozenset({health_pb2.DESCRIPTOR.services_by_name["Health"].full_name})
"""Services every caller may use without a token."""

_SERVICE = pb.DESCRIPTOR.services_by_name["VcpuService"]
READ_ONLY_METHODS = frozenset(
    f"/{_SERVICE.full_name}/{method.name}"
    for method in _SERVICE.methods
    if method.name.startswith(("List", "Get"))
)
"""The vmxsim methods a read-only token may call: those that only read (List*, Get*)."""
_READ_ONLY_SERVICES = frozenset({reflection.SERVICE_NAME, V1_SERVICE_NAME})  # both reflections


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def check_certificate(cert: str, key: str, client_ca: str | None = None) -> None:
    """``ConfigError`` naming the file when a certificate chain, its key or a CA bundle does not
    load (gRPC itself only says "Failed to bind to address" when it listens)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(f"--tls-key {key} is not the key of --tls-cert {cert}") from None
        raise ConfigError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate chain and its private"
            f" key ({reason})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read --tls-cert {cert} / --tls-key {key}: {exc}") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            problem: object = getattr(exc, "reason", None) or exc
            raise ConfigError(
                f"--tls-client-ca {client_ca}: not a PEM CA bundle ({problem})"
            ) from None


def metrics_tls(config: ServerConfig) -> dict[str, Any] | None:
    """prometheus_client's HTTPS arguments for ``/metrics`` (None = plain HTTP)."""
    if config.metrics_tls_cert is None or config.metrics_tls_key is None:
        return None
    check_certificate(config.metrics_tls_cert, config.metrics_tls_key, config.metrics_tls_client_ca)
    return {
        "certfile": config.metrics_tls_cert,
        "keyfile": config.metrics_tls_key,
        "client_cafile": config.metrics_tls_client_ca,
        "client_auth_required": config.metrics_tls_client_ca is not None,
    }


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """The TLS credentials of ``config`` (None = plaintext); ``ConfigError`` for bad files."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    check_certificate(config.tls_cert, config.tls_key, config.tls_client_ca)
    chain = _read(config.tls_cert, "--tls-cert")
    key = _read(config.tls_key, "--tls-key")
    client_ca = _read(config.tls_client_ca, "--tls-client-ca") if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def read_tokens(path: str, read_only: bool = False) -> list[Token]:
    """The tokens of a token file: one per line with its options (tenancy.py), blank lines and
    ``#`` comments ignored; ``ConfigError`` naming the file and line for a bad one."""
    text = _read(path, "token file").decode("utf-8", errors="replace")
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            token = parse_token_line(line, read_only)
        except ValueError as exc:
            raise ConfigError(f"token file {path}:{number}: {exc}") from None
        if token is not None:
            tokens.append(token)
    if not tokens:
        raise ConfigError(f"token file {path} holds no token (only blank or # comment lines)")
    return tokens


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip().encode()
    return None


def _denying(
    handler: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that answers ``code`` without running it."""

    async def deny(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **codecs)
    return grpc.unary_unary_rpc_method_handler(deny, **codecs)


class AuthInterceptor(aio.ServerInterceptor):
    """Checks the bearer token of every call except those to ``OPEN_SERVICES``."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    @classmethod
    def from_config(cls, config: ServerConfig) -> AuthInterceptor | None:
        """The interceptor ``config`` asks for (None = no token files: every call is open)."""
        if not config.auth:
            return None
        full = read_tokens(config.auth_token_file) if config.auth_token_file else []
        read_only = (
            read_tokens(config.auth_readonly_token_file, read_only=True)
            if config.auth_readonly_token_file
            else []
        )
        return cls(full + read_only)

    def token(self, metadata: Any) -> Token | None:
        """The known token a call carries, if any."""
        secret = _bearer(metadata)
        return None if secret is None else find_token(secret, self.tokens)

    def _refusal(self, method: str, metadata: Any) -> tuple[grpc.StatusCode, str] | None:
        service = method.lstrip("/").partition("/")[0]
        if service in OPEN_SERVICES:
            return None
        if _bearer(metadata) is None:
            return grpc.StatusCode.UNAUTHENTICATED, "this server needs 'authorization: Bearer'"
        token = self.token(metadata)
        if token is None:
            return grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid on this server"
        writes = method not in READ_ONLY_METHODS and service not in _READ_ONLY_SERVICES
        if token.read_only and writes:
            name = method.rsplit("/", 1)[-1]
            return grpc.StatusCode.PERMISSION_DENIED, f"a read-only token may not call {name}"
        return None

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        refusal = self._refusal(
            handler_call_details.method, handler_call_details.invocation_metadata
        )
        return handler if refusal is None else _denying(handler, *refusal)


def caller_of(auth: AuthInterceptor | None, metadata: Any, peer: str) -> Caller:
    """Who makes a call: its token's tenant (confined unless ``admin``) when the server checks
    tokens, else its peer address (seeing everything: no tenancy without tokens)."""
    if auth is None:
        return Caller(identity_of_peer(peer), sees_all=True)
    token = auth.token(metadata)
    if token is None:  # the interceptor refused the call already; be safe anyway
        return Caller("tenant:", sees_all=False)
    return Caller(token.identity, sees_all=token.admin)
