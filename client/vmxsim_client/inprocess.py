"""A client for a given server address, or for an in-process server started for the occasion.

DESIGN.md "One code path": without an address, a server is started on a free loopback port in
this process and the client talks gRPC to it, exactly as it would to a remote deployment. The
server (and every vCPU on it) stops when the ``with`` block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .client import Client

__all__ = ["connect"]


@contextmanager
def connect(
    server: str | None,
    timeout: float = 30.0,
    metrics_listen: str | None = None,
    **security: Any,
) -> Iterator[Client]:
    """A ``Client`` to ``server`` ("HOST:PORT"), or to a fresh in-process server when None.

    ``security`` (``Client``'s ``tls``, ``tls_ca``, ``tls_cert``, ``tls_key``, ``token``)
    applies to ``server`` only: the in-process server listens on loopback, in plaintext.
    ``metrics_listen`` ("HOST:PORT") serves the in-process server's ``/metrics`` there.
    """
    if server:
        with Client(server, timeout=timeout, **security) as client:
            yield client
        return
    # imported here: a remote-only client never loads the server's modules
    import gc

    from vmxsim_server.app import start_background
    from vmxsim_server.config import ServerConfig

    gc.freeze()  # the server's modules too (see cli/entry.py)

    with (
        start_background(
            ServerConfig(listen="127.0.0.1:0", metrics_listen=metrics_listen)
        ) as background,
        Client(background.address, timeout=timeout) as client,
    ):
        yield client
