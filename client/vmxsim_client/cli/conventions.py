"""Conventions every subcommand keeps, applied once to the whole parser rather than typed in
each command:

- output: a command that prints data takes both ``--json`` and ``--format json`` (a table
  command's ``--format table|csv|json`` gains ``--json``; a ``--json`` command gains
  ``--format table|json``); where ``--format`` names a trace format, ``--format json`` is
  refused with a hint to use ``--json``;
- help text: docstrings may carry reST markup (````name````, ``:class:`X```); help output
  shows it plain.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["OUTPUT_FORMATS", "apply", "normalise", "plain"]

OUTPUT_FORMATS = ("table", "json")
"""The ``--format`` choices added to a ``--json`` command."""

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain(text: str) -> str:
    """``text`` without reST roles and literal markup: ``:class:`Name``` -> Name, ````x```` -> x."""
    return _ROLE.sub(r"\1", text).replace("``", "")


def _leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for sub in subs:
        for child in dict.fromkeys(sub.choices.values()):  # aliases map to the same parser
            yield from _leaves(child)


def _no_json_here(choices: tuple[str, ...], convert: Callable[[str], Any] | None) -> Any:
    def check(text: str) -> Any:
        if text == "json":
            raise argparse.ArgumentTypeError(
                f"--format names the trace format here ({', '.join(choices)}); for JSON output"
                " use --json"
            )
        return convert(text) if convert is not None else text

    return check


def apply(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand the output options above."""
    for leaf in _leaves(parser):
        options = {option: action for action in leaf._actions for option in action.option_strings}
        fmt = options.get("--format")
        if "--json" in options and fmt is None:
            leaf.add_argument(
                "--format",
                dest="output_format",
                choices=OUTPUT_FORMATS,
                help="output format (json = --json)",
            )
        elif fmt is not None and fmt.choices is not None and "json" in fmt.choices:
            if "--json" not in options:
                leaf.add_argument(
                    "--json", dest=fmt.dest, action="store_const", const="json",
                    help="print JSON (= --format json)",
                )  # fmt: skip
        elif fmt is not None and fmt.choices is not None:
            fmt.type = _no_json_here(tuple(fmt.choices), fmt.type)  # type: ignore[arg-type]


def normalise(args: argparse.Namespace) -> None:
    """After parsing: ``--format json`` of a ``--json`` command sets ``args.json``."""
    if getattr(args, "output_format", None) == "json":
        args.json = True
