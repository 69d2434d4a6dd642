"""Errors the CLI reports as one line on standard error with exit status 2."""

from __future__ import annotations

__all__ = ["CliError"]


class CliError(Exception):
    """A bad command line or input: printed as ``vmxsim: error: ...``, exit status 2."""
