"""A progress bar for long runs (replay, compare, report), on standard error when it is a
terminal."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Sized
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    """A progress bar on standard error (tqdm), only when that is a terminal.

    ``start(source)`` opens a bar for one run: for a trace file, the bytes read (compressed
    bytes for compressed input, ``reader.bytes_read``) against the file's size; for a mix or
    an in-memory list, exits against their number; for standard input, a count of exits with
    no end. ``update(exits)`` moves it (tqdm limits redraws to ten a second).
    """

    def __init__(self, enabled: bool = True, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stderr
        self.enabled = enabled and self.out.isatty()
        self._bar: tqdm[Any] | None = None
        self._source: Any = None
        self._by_bytes = False
        self.total: int | None = None
        """The current bar's end: bytes, exits, or None (no known end)."""

    def start(self, source: Any, label: str = "") -> None:
        """A new bar for a run over ``source`` (a trace reader, a mix or a list of exits)."""
        self.done()
        if not self.enabled:
            return
        size = _file_size(getattr(source, "source", None))
        self._source, self._by_bytes = source, size is not None and hasattr(source, "bytes_read")
        columns, lines = _terminal_size(self.out)
        common: dict[str, Any] = {
            "desc": label or None,
            "file": self.out,
            "leave": False,
            "mininterval": 0.1,
            "ncols": columns,
            "nrows": lines,
            "unit_scale": True,
        }
        if self._by_bytes:
            self.total = size
            self._bar = _tqdm()(total=size, unit="B", unit_divisor=1024, **common)
        else:
            self.total = _exit_total(source)
            self._bar = _tqdm()(total=self.total, unit=" exits", **common)

    def update(self, exits: int) -> None:
        """``exits`` acknowledged so far in the current run."""
        bar = self._bar
        if bar is None:
            return
        if self._by_bytes:
            bar.set_postfix_str(f"{exits:,} exits", refresh=False)
            bar.update(self._source.bytes_read - bar.n)
        else:
            bar.update(exits - bar.n)

    def done(self) -> None:
        """Close the bar (it clears its line)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _terminal_size(out: TextIO) -> tuple[int, int]:
    """(columns, lines) of the terminal. tqdm's own probe reads 0 x 0 on a pseudo-terminal
    whose size was never set (``script``, CI) and then draws nothing: fall back to
    ``shutil.get_terminal_size`` (``$COLUMNS``/``$LINES``, else 80 x 24)."""
    try:
        size = os.get_terminal_size(out.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    fallback = shutil.get_terminal_size()
    return size.columns or fallback.columns, size.lines or fallback.lines


def _file_size(path: object) -> int | None:
    """The size of a regular file named ``path`` (None for stdin, a mix spec, a pipe...)."""
    if not isinstance(path, str):
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) and status.st_size else None


def _exit_total(source: Any) -> int | None:
    """How many exits ``source`` will give, when that is known before reading it."""
    wanted = getattr(source, "exits_wanted", None)  # a mix:NAME:EXITS spec
    if wanted is not None:
        return int(wanted)
    return len(source) if isinstance(source, Sized) else None


def _tqdm() -> type[tqdm[Any]]:
    """tqdm, imported when a bar is first drawn (a run without a terminal never imports it)."""
    from tqdm import tqdm

    return tqdm
