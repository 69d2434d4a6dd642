"""Page tokens for the List RPCs (AIP-158): ``page_size`` and ``page_token`` in,
``next_page_token`` out.

A token is opaque to clients: URL-safe base64 of a small JSON object naming the list, a digest
of the request's other fields (a token is valid only for the request it was issued for) and the
sort key of the page's last item. The next page starts after that key, so items created or
deleted between two calls neither repeat nor shift a page. A token that does not decode, names
another list or request, or holds a key of the wrong type is INVALID_ARGUMENT on ``page_token``
(reason ``BAD_PAGE_TOKEN``); a negative ``page_size`` is INVALID_ARGUMENT on ``page_size``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .vmx.exceptions import InvalidArgument

__all__ = ["MAX_PAGE_SIZE", "Page", "numbered_key", "paginate"]

MAX_PAGE_SIZE = 1000
"""A larger ``page_size`` is capped to this; 0 (unset) still means every item."""

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and the token of the next one ("" on the last page)."""

    items: list[T]
    next_page_token: str


def _digest(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def _encode(listing: str, scope: str, key: str) -> str:
    raw = json.dumps({"list": listing, "scope": _digest(scope), "after": key}, sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _bad_token(token: str, why: str) -> InvalidArgument:
    shown = token if len(token) <= 40 else token[:40] + "..."
    return InvalidArgument(
        f"page_token {shown!r} {why}; pass the next_page_token of the previous page of this"
        " request, or none for the first page",
        field="page_token",
        reason="BAD_PAGE_TOKEN",
    )


def _decode(token: str, listing: str, scope: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fields = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _bad_token(token, "is not a page token of this server") from None
    if not isinstance(fields, dict) or fields.get("list") != listing:
        raise _bad_token(token, f"is not a page token of {listing}")
    if fields.get("scope") != _digest(scope):
        raise _bad_token(token, "was issued for a request with other parameters")
    after = fields.get("after")
    if not isinstance(after, str):
        raise _bad_token(token, "is damaged")
    return after


def paginate(
    items: Sequence[T],
    key: Callable[[T], str],
    page_size: int,
    page_token: str,
    listing: str,
    scope: str = "",
) -> Page[T]:
    """The page of ``items`` (any order; sorted by ``key``, a string unique per item) that
    ``page_size``/``page_token`` ask for. ``listing`` names the RPC, ``scope`` the request's
    other parameters (e.g. the vm_id filter)."""
    if page_size < 0:
        raise InvalidArgument(
            f"page_size {page_size} is negative; 0 = every item", field="page_size"
        )
    ordered = sorted(items, key=key)
    if page_token:
        after = _decode(page_token, listing, scope)
        ordered = [item for item in ordered if key(item) > after]
    size = min(page_size, MAX_PAGE_SIZE)
    if page_size == 0 or len(ordered) <= size:
        return Page(ordered, "")
    return Page(ordered[:size], _encode(listing, scope, key(ordered[size - 1])))


def numbered_key(object_id: str) -> str:
    """A sort key of a ``kind-N`` id that orders by N (``vcpu-9`` before ``vcpu-10``)."""
    prefix, _, number = object_id.rpartition("-")
    return f"{prefix}-{int(number):012d}" if number.isdigit() else object_id
