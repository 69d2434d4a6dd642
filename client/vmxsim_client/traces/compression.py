"""Opening a trace: a path, ``-`` (standard input) or a binary file, compressed or not.

Compression is recognised by magic bytes, never by the file name: gzip ``1f 8b`` (RFC 1952),
xz ``fd 37 7a 58 5a 00`` (xz file format 1.0.4, section 2.1.1.1) and zstd ``28 b5 2f fd``
(RFC 8878 section 3.1.1). zstd needs the optional ``zstandard`` package. Text is decoded as
UTF-8 with undecodable bytes replaced, so binary garbage becomes malformed lines, not a
``UnicodeDecodeError``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import lzma
import os
import sys
import zlib
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

zstandard: Any
try:  # optional: zstd-compressed traces
    import zstandard
except ImportError:  # pragma: no cover - exercised only without the package
    zstandard = None

__all__ = ["DECODE_ERRORS", "TraceInput", "open_input", "open_output"]

_ZSTD_ERRORS: tuple[type[Exception], ...] = (zstandard.ZstdError,) if zstandard else ()
DECODE_ERRORS: tuple[type[Exception], ...] = (
    EOFError,  # truncated gzip/xz stream
    gzip.BadGzipFile,
    zlib.error,
    lzma.LZMAError,
    *_ZSTD_ERRORS,
)
"""What a decompressor raises on corrupt or truncated input."""

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_BUFFER_BYTES = 1 << 16


class _CountingReader(io.RawIOBase):
    """A raw stream that counts the bytes read through it (for progress reporting)."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n


@dataclass
class TraceInput:
    """An opened trace: its decoded text, name, compression and byte counter."""

    text: IO[str]
    name: str
    compression: str | None
    _counter: _CountingReader
    _owned: BinaryIO | None

    def bytes_read(self) -> int:
        """Bytes read from the source as stored."""
        return self._counter.count

    def close(self) -> None:
        """Close the decoder and the file it opened (standard input stays open)."""
        with contextlib.suppress(*DECODE_ERRORS):  # corrupt input is reported while reading
            self.text.close()
        if self._owned is not None:
            self._owned.close()


def _decompressor(kind: str | None, stream: BinaryIO, name: str) -> BinaryIO:
    if kind == "gzip":
        return cast(BinaryIO, gzip.GzipFile(fileobj=stream, mode="rb"))
    if kind == "xz":
        return cast(BinaryIO, lzma.LZMAFile(stream))
    if kind == "zstd":
        if zstandard is None:
            raise OSError(f"{name}: zstd input needs the 'zstandard' package")
        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        return cast(BinaryIO, io.BufferedReader(reader, _BUFFER_BYTES))
    return stream


def open_input(source: str | os.PathLike[str] | BinaryIO) -> TraceInput:
    """Open ``source`` for reading text: ``-`` is standard input; OSError if unreadable."""
    owned: BinaryIO | None = None
    if isinstance(source, str | os.PathLike):
        if os.fspath(source) == "-":
            stream, name = sys.stdin.buffer, "<stdin>"
        else:
            name = os.fspath(source)
            stream = owned = open(name, "rb")  # noqa: SIM115 - closed by TraceInput.close
    else:
        stream, name = source, str(getattr(source, "name", "<stream>"))
    counter = _CountingReader(stream)
    buffered = io.BufferedReader(counter, _BUFFER_BYTES)
    head = buffered.peek(8)
    kind = next((k for magic, k in _MAGIC if head.startswith(magic)), None)
    binary = _decompressor(kind, cast(BinaryIO, buffered), name)
    text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline=None)
    return TraceInput(text, name, kind, counter, owned)


def open_output(path: str) -> IO[str]:
    """A text file for writing, gzip/xz-compressed when ``path`` ends in .gz/.xz."""
    if path.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8")
    if path.endswith(".xz"):
        return lzma.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")
