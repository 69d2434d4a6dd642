"""Opening a trace: a path, ``-`` (standard input) or a binary file, compressed or not, read as
blocks of bytes.

Compression is recognised by magic bytes, never by the file name: gzip ``1f 8b`` (RFC 1952),
xz ``fd 37 7a 58 5a 00`` (xz file format 1.0.4, section 2.1.1.1), zstd ``28 b5 2f fd`` (RFC
8878 section 3.1.1) and bzip2 ``BZh`` and a block-size digit 1-9 (the header of bzip2's
streams, read by Python's ``bz2``). zstd needs the optional ``zstandard`` package.
Concatenated members, streams and frames are read one after the other (as ``gzip``, ``xz``,
``zstd`` and ``bzip2`` do). gzip is inflated by ISA-L (the ``isal`` package, about twice
zlib's speed here: docs/performance.md) where it is installed, else by zlib; both check each
member's CRC-32 and ISIZE.

Compressed input is decompressed in a thread of its own, a few blocks ahead of the reader
(:func:`prefetch`): the decompressors release the interpreter lock while they inflate, so
decompression runs beside the parsing on another core. An error there (damage, an unreadable
file) is raised to the reader at the block where it happened, as without the thread.

Damage is an error, never a short trace: a stream that ends before its end marker (truncated),
fails its check (gzip CRC-32/ISIZE, xz check, zstd checksum, bzip2 block and stream CRCs) or
holds invalid data raises :class:`CorruptInput` naming the compressed byte offset where the
decompressor stopped (for a check failure, the end of the member whose check failed). Each
decompression step produces at most :data:`BLOCK_BYTES` of output, so a small bomb cannot fill
memory in one call.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import sys
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import IO, Any, BinaryIO

from .readahead import read_ahead

_inflate: Any
try:  # ISA-L's inflate: the same interface as zlib's, about twice as fast
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - exercised only without the package
    _inflate = zlib

zstandard: Any
try:  # optional: zstd-compressed traces
    import zstandard
except ImportError:  # pragma: no cover - exercised only without the package
    zstandard = None

__all__ = [
    "BLOCK_BYTES",
    "INFLATED_BYTES",
    "CorruptInput",
    "TraceInput",
    "open_input",
    "open_output",
    "prefetch",
]

BLOCK_BYTES = 1 << 22
"""Bytes read from the source at a time (4 MiB: the reader's C scan takes the interpreter lock
back once per block, and with 1 MiB blocks waiting for it cost a replay ~0.2 s per 1M exits)."""
INFLATED_BYTES = 1 << 22
"""The most one decompression step produces (4 MiB: few enough steps that the decompressing
thread rarely waits for the interpreter lock, small enough that a bomb cannot fill memory)."""
PREFETCH_BLOCKS = 2
"""Decompressed blocks the decompressing thread keeps ready ahead of the reader."""

_ZSTD_PIECE = 1 << 13  # compressed bytes per zstd step (its decompressobj has no output bound)
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    *((b"BZh" + bytes([level]), "bzip2") for level in b"123456789"),
)


class CorruptInput(Exception):
    """Compressed input that is truncated or damaged; ``offset`` is the compressed byte offset."""

    def __init__(self, kind: str, offset: int, problem: str) -> None:
        super().__init__(f"damaged {kind} input at compressed byte {offset:,}: {problem}")
        self.kind = kind
        self.offset = offset


class TraceInput:
    """An opened trace: its decompressed byte blocks, name, compression and byte counter."""

    def __init__(self, stream: BinaryIO, name: str, owned: bool) -> None:
        self.name = name
        self._stream = stream
        self._owned = owned
        self.count = 0
        """Bytes read from the source as stored."""
        self._ahead: Generator[bytes, None, None] | None = None
        self._head = self._read(16)
        self.magic = self._head
        """The first (up to 16) bytes as stored, for binary-format detection."""
        self.compression: str | None = next(
            (kind for magic, kind in _MAGIC if self._head.startswith(magic)), None
        )

    def _read(self, size: int) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data

    def _raw(self) -> Iterator[bytes]:
        """The stored bytes in blocks (the peeked head first)."""
        if self._head:
            yield self._head
        while data := self._read(BLOCK_BYTES):
            yield data

    def bytes_read(self) -> int:
        """Bytes read from the source as stored (compressed bytes for compressed input)."""
        return self.count

    def blocks(self) -> Iterator[bytes]:
        """The decompressed bytes in blocks; CorruptInput on damaged compressed input."""
        if self.compression is None:
            return self._raw()
        decode = _DECODERS[self.compression]
        self._ahead = prefetch(decode(self._raw(), self.bytes_read))
        return self._ahead

    def close(self) -> None:
        """Close the file this opened (standard input stays open), after stopping its
        decompressing thread."""
        if self._ahead is not None:
            self._ahead.close()
        if self._owned:
            self._stream.close()


def prefetch(blocks: Iterator[bytes], depth: int = PREFETCH_BLOCKS) -> Generator[bytes, None, None]:
    """The bytes of ``blocks``, produced by a daemon thread up to ``depth`` blocks ahead of the
    consumer (blocks under :data:`BLOCK_BYTES` joined); an exception of ``blocks`` is raised to
    the consumer after the bytes before it. Closing the returned generator (or dropping it)
    stops the thread."""
    return read_ahead(_joined(blocks), depth, "vmxsim-inflate")


def _joined(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Blocks of at least BLOCK_BYTES (small ones, zstd's, joined); the bytes before an
    exception come out before it."""
    held: list[bytes] = []
    size = 0
    try:
        for block in blocks:
            held.append(block)
            size += len(block)
            if size >= BLOCK_BYTES:
                yield held[0] if len(held) == 1 else b"".join(held)
                held, size = [], 0
    except Exception:  # (not GeneratorExit: a closed generator yields nothing more)
        if held:
            yield b"".join(held)
        raise
    if held:
        yield b"".join(held)


def _gzip(raw: Iterator[bytes], offset: Callable[[], int]) -> Iterator[bytes]:
    """RFC 1952 members one after the other (zlib checks each member's CRC-32 and ISIZE)."""
    decoder = _inflate.decompressobj(31)
    started = False
    for data in raw:
        more = True
        while more:
            try:
                out = decoder.decompress(data, INFLATED_BYTES)
            except _inflate.error as exc:
                raise CorruptInput("gzip", offset(), str(exc).split(": ", 1)[-1]) from None
            started = True
            if out:
                yield out
            if decoder.eof:
                data = decoder.unused_data
                if data and not data.startswith(b"\x1f\x8b"):
                    if data.strip(b"\x00"):  # zero padding after a member is allowed (gzip)
                        raise CorruptInput("gzip", offset(), "trailing garbage after a member")
                    data = b""
                decoder = _inflate.decompressobj(31)
                started = more = bool(data)
            else:  # output full: the rest of the input waits in unconsumed_tail
                data = decoder.unconsumed_tail
                more = bool(data) or len(out) == INFLATED_BYTES
    if started:
        raise CorruptInput("gzip", offset(), "truncated: the stream ends inside a member")


def _streams(
    kind: str,
    make: Callable[[], Any],
    errors: tuple[type[Exception], ...],
    padding: bytes,
    last: str,
) -> Callable[[Iterator[bytes], Callable[[], int]], Iterator[bytes]]:
    """A decoder of ``kind`` streams one after the other (``make()``: a fresh decompressor
    with ``decompress(data, max_length)``, ``needs_input``, ``eof`` and ``unused_data``, as
    lzma's and bz2's; ``padding``: a byte allowed between streams; ``last``: what a stream
    ends with, for the message of a truncated one)."""

    def decode(raw: Iterator[bytes], offset: Callable[[], int]) -> Iterator[bytes]:
        decoder = make()
        started = False
        for data in raw:
            while data or (started and not decoder.needs_input and not decoder.eof):
                try:
                    out = decoder.decompress(data, INFLATED_BYTES)
                except errors as exc:
                    raise CorruptInput(kind, offset(), str(exc)) from None
                started, data = True, b""
                if out:
                    yield out
                if decoder.eof:
                    data = decoder.unused_data.lstrip(padding)
                    decoder = make()
                    started = bool(data)
        if started:
            raise CorruptInput(kind, offset(), f"truncated: the stream ends before its {last}")

    return decode


_xz = _streams("xz", lzma.LZMADecompressor, (lzma.LZMAError,), b"\x00", "footer")
"""xz streams one after the other (stream padding of zero bytes is allowed)."""
_bzip2 = _streams("bzip2", bz2.BZ2Decompressor, (OSError, ValueError), b"", "end-of-stream marker")
"""bzip2 streams one after the other (``pbzip2`` and ``cat a.bz2 b.bz2`` write several)."""


def _zstd(raw: Iterator[bytes], offset: Callable[[], int]) -> Iterator[bytes]:
    """zstd frames one after the other, fed in small pieces (the output of a piece is bounded
    by the format's block size times the pieces' frames, not by a parameter)."""
    if zstandard is None:
        raise OSError("zstd input needs the 'zstandard' package (pip install zstandard)")
    factory = zstandard.ZstdDecompressor()
    decoder = factory.decompressobj()
    started = False
    for block in raw:
        for start in range(0, len(block), _ZSTD_PIECE):
            data = block[start : start + _ZSTD_PIECE]
            while data:
                try:
                    out = decoder.decompress(data)
                except zstandard.ZstdError as exc:
                    raise CorruptInput("zstd", offset(), str(exc)) from None
                started, data = True, b""
                if out:
                    yield out
                if decoder.eof:
                    data = decoder.unused_data
                    decoder = factory.decompressobj()
                    started = bool(data)
    if started:
        raise CorruptInput("zstd", offset(), "truncated: the stream ends inside a frame")


_DECODERS: dict[str, Callable[[Iterator[bytes], Callable[[], int]], Iterator[bytes]]] = {
    "gzip": _gzip,
    "xz": _xz,
    "bzip2": _bzip2,
    "zstd": _zstd,
}


def open_input(source: str | os.PathLike[str] | BinaryIO) -> TraceInput:
    """Open ``source`` for reading: ``-`` is standard input; OSError if unreadable."""
    if isinstance(source, str | os.PathLike):
        if os.fspath(source) == "-":
            return TraceInput(sys.stdin.buffer, "<stdin>", owned=False)
        name = os.fspath(source)
        return TraceInput(open(name, "rb"), name, owned=True)
    return TraceInput(source, str(getattr(source, "name", "<stream>")), owned=False)


def open_output(path: str) -> IO[str]:
    """A text file for writing, gzip/xz-compressed when ``path`` ends in .gz/.xz."""
    if path.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8")
    if path.endswith(".xz"):
        return lzma.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")
