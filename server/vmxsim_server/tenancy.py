"""Who is calling, and which VMs and vCPUs that caller may see and touch.

Token files (``--auth-token-file``, ``--auth-readonly-token-file``) hold one token per line,
as they always did; words after the token, separated by white space, are options::

    # comments and blank lines are ignored
    s3cr3t-of-alice  tenant=alice     # alice's VMs and vCPUs
    another-of-alice tenant=alice     # shares them with the token above
    s3cr3t-of-ci                      # a tenant of its own (named token-<hash>)
    s3cr3t-of-ops    admin            # sees and touches every tenant's objects

A token is the first word of its line (a ``#`` inside it is part of it); a word starting with
``#`` after it starts a comment.

- A caller's identity is its token's tenant (``tenant:NAME``) when the server checks tokens,
  else ``peer:ADDRESS`` (the peer's IP address, without the port). Per-client limits
  (limits.py) count by identity.
- With tokens, every VM and vCPU belongs to the tenant that made it (restored with it across
  restarts); a tenant sees only its own in List*, and any other id answers NOT_FOUND, exactly
  as an id that does not exist. An ``admin`` token sees and touches everything. A read-only
  token (its own file) is confined the same way unless it is ``admin`` too.
- Without tokens there is no tenancy: every caller sees everything (a loopback development
  server, or one behind mutual TLS only), and objects still record the identity that made
  them, for the per-client limits.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ANYONE", "Caller", "Token", "find_token", "identity_of_peer", "parse_token_line"]


@dataclass(frozen=True)
class Token:
    """One line of a token file."""

    secret: bytes
    tenant: str
    admin: bool = False
    read_only: bool = False

    @property
    def identity(self) -> str:
        """The identity of a caller with this token."""
        return f"tenant:{self.tenant}"


@dataclass(frozen=True)
class Caller:
    """A caller: its identity, and whether it sees every tenant's objects."""

    identity: str
    sees_all: bool = True

    def may_see(self, owner: str) -> bool:
        """Whether this caller may see and touch an object made by ``owner``."""
        return self.sees_all or owner == self.identity


ANYONE = Caller("", sees_all=True)
"""The caller of the server's own work (restores at start, tests of the registry)."""


def parse_token_line(line: str, read_only: bool) -> Token | None:
    """The token of one token-file line (None for a blank or comment line); ``ValueError``
    naming an option it does not know."""
    words = line.split()
    if not words or words[0].startswith("#"):
        return None
    secret, options = words[0], words[1:]
    comment = next((i for i, word in enumerate(options) if word.startswith("#")), len(options))
    options = options[:comment]
    tenant = "token-" + hashlib.sha256(secret.encode()).hexdigest()[:12]
    admin = False
    for option in options:
        key, sep, value = option.partition("=")
        if key == "admin" and not sep:
            admin = True
        elif key == "tenant" and sep and value:
            tenant = value
        else:
            raise ValueError(f"unknown option {option!r} (known: tenant=NAME, admin)")
    return Token(secret.encode(), tenant, admin, read_only)


def identity_of_peer(peer: str) -> str:
    """``peer:ADDRESS`` of a gRPC peer string (``ipv4:127.0.0.1:5000`` -> ``peer:127.0.0.1``,
    ``ipv6:[::1]:5000`` -> ``peer:::1``, ``unix:/path`` -> ``peer:unix``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return "peer:" + rest.rpartition(":")[0]
    if kind == "ipv6":
        return "peer:" + rest.rpartition(":")[0].strip("[]")
    return f"peer:{kind or 'unknown'}"


def find_token(secret: bytes, tokens: Iterable[Token]) -> Token | None:
    """The token whose secret is ``secret``; compares against every one, in constant time."""
    found = None
    for token in tokens:
        if hmac.compare_digest(secret, token.secret):
            found = token
    return found
