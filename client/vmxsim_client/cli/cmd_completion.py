"""``vmxsim completion SHELL``: a shell completion script for every command and option, made by
shtab from the parser itself (so it never lags behind the commands).

    vmxsim completion bash > ~/.local/share/bash-completion/completions/vmxsim
    vmxsim completion zsh > ~/.zfunc/_vmxsim        # with fpath+=~/.zfunc in ~/.zshrc
"""

from __future__ import annotations

import argparse
from typing import Any

import shtab

__all__ = ["SHELLS", "register"]

SHELLS = ("bash", "zsh", "tcsh")


def register(sub: Any, root: argparse.ArgumentParser) -> None:
    """Add ``completion`` to the CLI (``root`` is the whole parser it completes)."""
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, tcsh)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")

    def run(args: argparse.Namespace) -> int:
        print(shtab.complete(root, shell=args.shell))
        return 0

    p.set_defaults(func=run)
