"""The names a harness passes: latency modes and bundled hypervisor profiles, as ``Literal`` types
(so that ``mode="nestd"`` fails in mypy) with a runtime check (so that it fails at the call).

The Literals spell out the tables ``vmxsim_server.vmx.latency.MODES`` and the bundled profile
files; tests/test_client_api.py checks that they stay equal.
"""

from __future__ import annotations

from typing import Literal, cast

from vmxsim_server.vmx.latency import MODES
from vmxsim_server.vmx.profiles import available_profiles

__all__ = ["Mode", "Profile", "check_mode", "check_profile"]

Mode = Literal["native", "nested", "nested-shadow"]
"""A latency mode (DESIGN.md "Latency model"): bare metal, nested under L0, nested with VMCS
shadowing."""

Profile = Literal["haxm-cache", "haxm-legacy", "kvm", "kvm-modern"]
"""A hypervisor profile shipped with vmxsim (``vmxsim profiles`` lists them)."""


def check_mode(value: str) -> Mode:
    """``value`` as a ``Mode``; ValueError naming the known modes otherwise."""
    if value not in MODES:
        raise ValueError(f"unknown mode {value!r} (known: {', '.join(MODES)})")
    return cast(Mode, value)


def check_profile(value: str) -> Profile:
    """``value`` as a ``Profile``; ValueError naming the bundled profiles otherwise."""
    known = available_profiles()
    if value not in known:
        raise ValueError(f"unknown profile {value!r} (known: {', '.join(known)})")
    return cast(Profile, value)
