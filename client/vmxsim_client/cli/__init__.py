"""The ``vmxsim`` command line: ``entry`` builds the parser and runs it, one ``cmd_*`` module per
group of subcommands, ``common`` for what the remote commands share, ``output`` for tables and JSON.

Layer: the CLI may import the client proper, ``reports``, ``load`` and ``traces``; nothing below it
imports the CLI.
"""

from .entry import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
