"""``replay --out FILE``: per-exit results written as they arrive, atomically.

The format follows the name: ``.csv``, ``.jsonl`` (either may end in ``.gz``) or ``.parquet``
(needs the optional ``pyarrow`` package). Columns: ``index`` (0-based exit in the trace),
``reason`` (exit-reason name), ``vmread``, ``vmwrite``, ``simulated_seconds``; then ``rip`` and
``timestamp`` when the trace has them (decided by the first batch: a non-zero rip, any
timestamp; the rip as a ``0x..`` string, exact where JSON numbers above 2**53 are not), and
``recorded_vmread``, ``recorded_vmwrite``, ``recorded_delta`` for a HAXM log.

Rows are written batch by batch (constant memory) into a temporary file beside the target,
renamed over it when the run succeeds and removed when it fails, so a failed run leaves no
half-written file.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import json
import os
import secrets
from collections.abc import Iterator
from typing import IO, Any

from ..errors import CliError
from .per_exit import JoinedBatch

__all__ = ["OUT_SUFFIXES", "PerExitFile", "check_out_path"]

OUT_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet")
_BASE_COLUMNS = ("index", "reason", "vmread", "vmwrite", "simulated_seconds")
_RECORDED_COLUMNS = ("recorded_vmread", "recorded_vmwrite", "recorded_delta")


def _kind(path: str) -> str:
    for suffix in OUT_SUFFIXES:
        if path.endswith(suffix):
            return suffix.removesuffix(".gz").lstrip(".")
    raise CliError(f"--out {path}: the name must end in {', '.join(OUT_SUFFIXES)}")


def check_out_path(path: str) -> None:
    """CliError, before any replay, when ``path`` names no known format or parquet is asked
    for without pyarrow."""
    if _kind(path) == "parquet":
        try:
            _pyarrow()
        except ImportError:
            raise CliError(
                "--out .parquet needs the 'pyarrow' package (pip install pyarrow); "
                "or write .csv or .jsonl"
            ) from None


def _pyarrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet (optional, untyped: imported by name)."""
    return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")


def _hex(value: int) -> str:
    return f"{value:#x}"


def _rows(batch: JoinedBatch, columns: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    """The rows of a batch, in ``columns`` order."""
    n = len(batch)
    parts: list[Any] = [
        range(batch.first_index, batch.first_index + n),
        batch.reason_names(), batch.vmread, batch.vmwrite, batch.seconds,
    ]  # fmt: skip
    if "rip" in columns:
        parts.append(map(_hex, batch.rip) if batch.rip else ["0x0"] * n)
    if "timestamp" in columns:
        parts.append(batch.timestamp or [None] * n)
    if "recorded_vmread" in columns:
        parts.extend(zip(*(batch.recorded or [(0, 0, 0)] * n), strict=True))
    return zip(*parts, strict=True)


class PerExitFile:
    """A per-exit output file: ``with PerExitFile(path) as out: out.write(batch)``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.kind = _kind(path)
        self.rows = 0
        self.columns: tuple[str, ...] = ()
        self._temp = ""
        self._text: IO[str] | None = None
        self._csv: Any = None
        self._parquet: Any = None

    def __enter__(self) -> PerExitFile:
        directory, name = os.path.split(os.path.abspath(self.path))
        self._temp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        # O_EXCL: never another file's; mode 0o666 less the umask, as the renamed file will have
        os.close(os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        try:
            if exc_type is None:
                if not self.columns:  # no exit at all: still a valid file, with its header
                    self._open(_BASE_COLUMNS)
                self._close()
                os.replace(self._temp, self.path)
        finally:
            self._close()
            if os.path.exists(self._temp):
                os.unlink(self._temp)

    def _open(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        if self.kind == "parquet":
            pa, pq = _pyarrow()
            types = {"reason": pa.string(), "rip": pa.string(), "simulated_seconds": pa.float64(),
                     "timestamp": pa.float64()}  # fmt: skip
            schema = pa.schema([(c, types.get(c, pa.uint64())) for c in columns])
            self._parquet = pq.ParquetWriter(self._temp, schema)
            return
        if self.path.endswith(".gz"):
            self._text = gzip.open(self._temp, "wt", encoding="utf-8", newline="")  # noqa: SIM115
        else:
            self._text = open(self._temp, "w", encoding="utf-8", newline="")  # noqa: SIM115
        if self.kind == "csv":
            self._csv = csv.writer(self._text, lineterminator="\n")
            self._csv.writerow(columns)

    def _close(self) -> None:
        if self._text is not None:
            self._text.close()
            self._text = None
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None

    def write(self, batch: JoinedBatch) -> None:
        """Append the rows of one acknowledged batch."""
        if not self.columns:
            columns: tuple[str, ...] = _BASE_COLUMNS
            if any(batch.rip):
                columns += ("rip",)
            if batch.timestamp:
                columns += ("timestamp",)
            if batch.recorded is not None:
                columns += _RECORDED_COLUMNS
            self._open(columns)
        self.rows += len(batch)
        if self._parquet is not None:
            pa, _ = _pyarrow()
            data = list(zip(*_rows(batch, self.columns), strict=True))
            table = pa.table(dict(zip(self.columns, data, strict=True)),
                             schema=self._parquet.schema)  # fmt: skip
            self._parquet.write_table(table)
        elif self._csv is not None:
            self._csv.writerows(_rows(batch, self.columns))
        elif self._text is not None:
            write, columns = self._text.write, self.columns
            for row in _rows(batch, self.columns):
                write(json.dumps(dict(zip(columns, row, strict=True))) + "\n")
