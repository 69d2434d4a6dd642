"""``vmxsim serve``: run the gRPC server in the foreground until SIGTERM or SIGINT.

Every flag comes from the server's option table (``vmxsim_server.config.OPTIONS``), and each
falls back to its ``VMXSIM_*`` environment variable, then to the default.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from vmxsim_server.config import OPTIONS, ConfigError, add_arguments, from_arguments

from ..errors import CliError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``serve`` subcommand."""
    environment = ", ".join(option.env for option in OPTIONS)
    parser = sub.add_parser(
        "serve",
        help="run the vmxsim gRPC server",
        description=(
            "Serve emulated VMX vCPUs over gRPC (with health and reflection) until SIGTERM or"
            " SIGINT, then let open streams finish within the grace period. Each flag falls back"
            f" to its environment variable ({environment}), then to its default."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = from_arguments(args, os.environ)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    # imported here: the other subcommands never load the server
    from vmxsim_server.app import StateNotSaved, configure_logging, serve

    configure_logging(config)
    try:
        asyncio.run(serve(config))
    except StateNotSaved as exc:  # served, but the vCPUs could not be saved at the end
        print(f"vmxsim: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ConfigError) as exc:  # e.g. a bad certificate, an empty token file
        raise CliError(str(exc)) from None
    return 0
