"""The server's settings: one table of options from which the dataclass defaults are checked,
the ``vmxsim serve`` flags, the ``VMXSIM_*`` environment variables and their help text derive.

Precedence: command-line flag, then environment variable, then the default. Every value is
validated in one place (``Option.parse``) and a bad one is reported as one line that names
where it came from, e.g. ``VMXSIM_MAX_VCPUS: 'lots' is not an integer``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .limits import LIMITS, Limit

__all__ = [
    "OPTIONS",
    "ConfigError",
    "Option",
    "ServerConfig",
    "add_arguments",
    "from_arguments",
    "from_environment",
    "is_loopback",
]

ENV_PREFIX = "VMXSIM_"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
_DISABLED = ("", "off", "none")


class ConfigError(ValueError):
    """A setting that does not validate; the message is one line naming its source."""


def _address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} has no port number 0..65535")
    return text


def _optional_address(text: str) -> str | None:
    return None if text.strip().lower() in _DISABLED else _address(text)


def _count(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{value} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{text!r} must be a finite number of seconds >= 0")
    return value


def _optional_file(text: str) -> str | None:
    if text.strip().lower() in _DISABLED:
        return None
    if not os.path.isfile(text):
        raise ValueError(f"{text!r} is not a readable file")
    return text


def _optional_directory(text: str) -> str | None:
    return None if text.strip().lower() in _DISABLED else text


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


@dataclass(frozen=True)
class Option:
    """One setting: the ``ServerConfig`` attribute, how text becomes a value, and its help.

    ``flag`` defaults to ``--`` + the attribute in kebab case; the environment variable is
    ``VMXSIM_`` + the flag in upper snake case (``--grace`` -> ``VMXSIM_GRACE``).
    """

    name: str
    parse: Callable[[str], Any]
    metavar: str
    help: str
    flag: str = ""

    @property
    def flag_name(self) -> str:
        """The command-line flag, e.g. ``--max-vcpus``."""
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable, e.g. ``VMXSIM_MAX_VCPUS``."""
        return ENV_PREFIX + self.flag_name.lstrip("-").replace("-", "_").upper()


def _limit_option(limit: Limit) -> Option:
    """A limit's option: an integer count or a number of seconds."""
    if isinstance(limit.default, int):
        return Option(limit.name, _count, "N", f"most {limit.bounds}")
    return Option(limit.name, _seconds, "SECONDS", f"most {limit.bounds}")


OPTIONS: tuple[Option, ...] = (
    Option("listen", _address, "HOST:PORT", "gRPC listen address (port 0: any free port)"),
    Option(
        "metrics_listen",
        _optional_address,
        "HOST:PORT",
        "Prometheus /metrics address; 'off' disables it",
    ),
    # the limits, from their one table (limits.py)
    *(_limit_option(limit) for limit in LIMITS),
    Option(
        "grace_seconds",
        _seconds,
        "SECONDS",
        "on SIGTERM/SIGINT, how long open streams may finish before they are cut",
        flag="--grace",
    ),
    Option(
        "snapshot_interval_seconds",
        _seconds,
        "SECONDS",
        "with --state-dir, how often every vCPU is saved (also at shutdown); 0 = at shutdown only",
        flag="--snapshot-interval",
    ),
    Option(
        "replay_retention_seconds",
        _seconds,
        "SECONDS",
        "with --state-dir, how long an unfinished replay's checkpoint waits for its resume",
        flag="--replay-retention",
    ),
    Option(
        "state_dir",
        _optional_directory,
        "DIR",
        "keep vCPUs and resumable replays here across restarts (created if missing); 'off' = none",
    ),
    Option(
        "health_listen",
        _optional_address,
        "HOST:PORT",
        "also serve grpc.health.v1 alone, in plaintext, here (for probes that cannot do TLS,"
        " e.g. Kubernetes' grpc probe); 'off' = only on --listen",
    ),
    Option(
        "metrics_tls_cert",
        _optional_file,
        "FILE",
        "PEM certificate chain: serve /metrics over HTTPS (with --metrics-tls-key)",
    ),
    Option("metrics_tls_key", _optional_file, "FILE", "PEM private key of --metrics-tls-cert"),
    Option(
        "metrics_tls_client_ca",
        _optional_file,
        "FILE",
        "PEM CA bundle: /metrics needs a client certificate signed by it (e.g. Prometheus')",
    ),
    Option("tls_cert", _optional_file, "FILE", "PEM certificate chain: serve TLS (with --tls-key)"),
    Option("tls_key", _optional_file, "FILE", "PEM private key of --tls-cert"),
    Option(
        "tls_client_ca",
        _optional_file,
        "FILE",
        "PEM CA bundle: require client certificates signed by it (mutual TLS)",
    ),
    Option(
        "auth_token_file",
        _optional_file,
        "FILE",
        "bearer tokens allowed every call, one per line; unset = no token needed",
    ),
    Option(
        "auth_readonly_token_file",
        _optional_file,
        "FILE",
        "bearer tokens allowed only List*/Get* calls and reflection, one per line",
    ),
    Option("log_format", _choice(LOG_FORMATS), "|".join(LOG_FORMATS), "log line format"),
    Option("log_level", _choice(LOG_LEVELS), "|".join(LOG_LEVELS), "least severe level logged"),
)
BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``serve`` and ``start_background`` need; validated on construction."""

    listen: str = "127.0.0.1:50051"
    metrics_listen: str | None = "127.0.0.1:9464"
    # limits: defaults from limits.LIMITS (checked below)
    max_vcpus: int = 10_000
    max_vcpus_per_client: int = 5_000
    max_streams: int = 64
    max_streams_per_client: int = 32
    stream_idle_seconds: float = 120.0
    max_message_bytes: int = 16 * 1024 * 1024
    max_batch_exits: int = 100_000
    max_instructions: int = 10_000
    max_snapshot_bytes: int = 8 * 1024 * 1024
    max_vmcs_regions: int = 1_024
    max_memory_words: int = 16_384
    grace_seconds: float = 5.0
    snapshot_interval_seconds: float = 30.0
    replay_retention_seconds: float = 3600.0
    state_dir: str | None = None
    health_listen: str | None = None
    metrics_tls_cert: str | None = None
    metrics_tls_key: str | None = None
    metrics_tls_client_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth_token_file: str | None = None
    auth_readonly_token_file: str | None = None
    log_format: str = "text"
    log_level: str = "info"

    def __post_init__(self) -> None:
        for option in OPTIONS:
            value = getattr(self, option.name)
            text = "off" if value is None else str(value)
            try:
                object.__setattr__(self, option.name, option.parse(text))
            except ValueError as exc:
                raise ConfigError(f"{option.name}: {exc}") from None
        _check_together(self)

    @property
    def tls(self) -> bool:
        """Whether the server listens with TLS."""
        return self.tls_cert is not None

    @property
    def auth(self) -> bool:
        """Whether calls need a bearer token."""
        return self.auth_token_file is not None or self.auth_readonly_token_file is not None

    def with_changes(self, **changes: Any) -> ServerConfig:
        """A copy with some settings changed (validated like a new one)."""
        return replace(self, **changes)


def _check_together(config: ServerConfig) -> None:
    """Settings that only make sense with others."""
    flag = {o.name: o.flag_name for o in OPTIONS}
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError(f"{flag['tls_cert']} and {flag['tls_key']} go together: give both")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ConfigError(f"{flag['tls_client_ca']} needs {flag['tls_cert']} and {flag['tls_key']}")
    if (config.metrics_tls_cert is None) != (config.metrics_tls_key is None):
        raise ConfigError(
            f"{flag['metrics_tls_cert']} and {flag['metrics_tls_key']} go together: give both"
        )
    if config.metrics_tls_client_ca is not None and config.metrics_tls_cert is None:
        raise ConfigError(f"{flag['metrics_tls_client_ca']} needs {flag['metrics_tls_cert']}")


assert {f.name for f in fields(ServerConfig)} == set(BY_NAME), "OPTIONS and ServerConfig differ"
assert all(getattr(ServerConfig, limit.name) == limit.default for limit in LIMITS), (
    "a ServerConfig default differs from limits.LIMITS"
)


def _parsed(option: Option, text: str, source: str) -> Any:
    try:
        return option.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _resolve(
    given: Mapping[str, str], environ: Mapping[str, str] | None, base: ServerConfig | None
) -> ServerConfig:
    """``base`` with each option taken from ``given`` (by flag), else from the environment."""
    environ = os.environ if environ is None else environ
    changes = {}
    for option in OPTIONS:
        if option.name in given:
            changes[option.name] = _parsed(option, given[option.name], option.flag_name)
        elif option.env in environ:
            changes[option.name] = _parsed(option, environ[option.env], option.env)
    return replace(base or ServerConfig(), **changes)  # validates the combination too


def from_environment(
    environ: Mapping[str, str] | None = None, base: ServerConfig | None = None
) -> ServerConfig:
    """``base`` (default: the defaults) with every ``VMXSIM_*`` variable that is set applied."""
    return _resolve({}, environ, base)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option; the help names its environment variable and default."""
    defaults = ServerConfig()
    for option in OPTIONS:
        default = getattr(defaults, option.name)
        shown = "off" if default is None else default
        parser.add_argument(
            option.flag_name,
            dest=option.name,
            metavar=option.metavar,
            default=None,
            help=f"{option.help} (env {option.env}; default {shown})",
        )


def from_arguments(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """The configuration from parsed flags, falling back to the environment, then defaults."""
    given = {o.name: v for o in OPTIONS if (v := getattr(args, o.name, None)) is not None}
    return _resolve(given, environ, None)


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT listens on a loopback interface only (``localhost`` counts)."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
