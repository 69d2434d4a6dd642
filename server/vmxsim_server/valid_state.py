"""ValidState: the VMCS with which VM entry passes every entry check for a vCPU's capabilities,
as wire ``FieldValue`` messages (the core's ``entry_checks.valid_state`` builds it from the
check table; the servicer only translates).
"""

from __future__ import annotations

from collections.abc import Mapping

from vmxsim.v1 import vmxsim_pb2 as pb

from .vmx.capabilities import Capabilities
from .vmx.entry_checks import valid_state
from .vmx.exceptions import StateError, UnknownField
from .vmx.fields import BY_NAME

__all__ = ["valid_state_fields"]


def valid_state_fields(caps: Capabilities, overrides: Mapping[str, int]) -> list[pb.FieldValue]:
    """The valid state for ``caps`` with ``overrides`` (field-table names, any case) applied;
    ``UnknownField`` (INVALID_ARGUMENT) names the first override that is no VMCS field,
    ``StateError`` says why capabilities allow no valid state."""
    named: dict[str, int] = {}
    for name, value in overrides.items():
        field = BY_NAME.get(name.strip().upper())
        if field is None:
            raise UnknownField(f"unknown VMCS field name {name!r} in ValidState overrides")
        named[field.name] = value
    try:
        state = valid_state(caps, **named)
    except ValueError as exc:
        raise StateError(str(exc)) from None
    return [pb.FieldValue(name=n, encoding=BY_NAME[n].encoding, value=v) for n, v in state.items()]
