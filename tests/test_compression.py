"""Compressed traces are decompressed in a thread of their own, a few blocks ahead of the
reader (traces/compression.py ``prefetch``), by ISA-L where installed: the same bytes and the
same errors as zlib, in the same place, and no thread left behind."""

from __future__ import annotations

import gzip
import io
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmxsim_client.traces import compression, open_trace
from vmxsim_client.traces.compression import BLOCK_BYTES, CorruptInput, open_input, prefetch
from vmxsim_client.traces.readahead import ReadAhead

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
TRACE = (FIXTURES / "tracecmd_report.txt").read_bytes() * 3000


def _inflaters() -> list[object]:
    found: list[object] = [zlib]
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency
        return found
    return [*found, isal_zlib]


def _inflated(source: str | Path | io.BytesIO) -> bytes:
    opened = open_input(source)
    try:
        return b"".join(opened.blocks())
    finally:
        opened.close()


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "vmxsim-inflate"}


def test_the_blocks_arrive_in_order_and_small_ones_joined() -> None:
    pieces = [bytes([k % 256]) * 1000 for k in range(3000)]  # 3 MB in 1 kB pieces (zstd's shape)
    got = list(prefetch(iter(pieces)))
    assert b"".join(got) == b"".join(pieces)
    assert all(len(block) >= BLOCK_BYTES for block in got[:-1])


def test_an_error_arrives_after_the_bytes_before_it() -> None:
    def failing() -> Iterator[bytes]:
        yield b"a" * BLOCK_BYTES
        yield b"tail"
        raise CorruptInput("gzip", 123, "bad")

    seen: list[bytes] = []
    with pytest.raises(CorruptInput, match="compressed byte 123"):
        for block in prefetch(failing()):
            seen.append(block)
    assert b"".join(seen) == b"a" * BLOCK_BYTES + b"tail"


def test_closing_early_stops_the_thread() -> None:
    endless = iter(lambda: b"x" * BLOCK_BYTES, None)
    blocks = prefetch(endless)
    next(blocks)
    assert _threads()
    blocks.close()
    assert not _threads()


def test_an_abandoned_trace_stops_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(TRACE * 4, compresslevel=1))
    source = open_input(path)
    next(iter(source.blocks()))
    source.close()
    assert not _threads()


@pytest.mark.parametrize("inflater", _inflaters(), ids=lambda m: getattr(m, "__name__", "?"))
def test_every_inflater_gives_the_same_exits_and_the_same_damage(
    inflater: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compression, "_inflate", inflater)
    packed = gzip.compress(TRACE[:100_000]) + gzip.compress(TRACE[100_000:])  # two members
    path = tmp_path / "t.gz"
    path.write_bytes(packed)
    assert _inflated(path) == TRACE
    with open_trace(path) as reader:
        assert sum(len(b.reason) for b in reader.batches(4096)) == 9000
    damaged = tmp_path / "d.gz"
    damaged.write_bytes(packed[: len(packed) - 10])
    with pytest.raises(CorruptInput, match="truncated"):
        _inflated(damaged)
    crc = bytearray(packed)
    crc[len(packed) - 6] ^= 1  # the last member's CRC-32
    with pytest.raises(CorruptInput, match="damaged gzip input"):
        _inflated(io.BytesIO(bytes(crc)))


def test_a_read_ahead_reader_gives_the_readers_batches_once(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(TRACE)
    with open_trace(path) as plain:
        expected = [(list(b.reason), list(b.rip)) for b in plain.batches(1000)]
    with open_trace(path) as reader:
        ahead = ReadAhead(reader, 1000)
        assert {t.name for t in threading.enumerate()} >= {"vmxsim-read-ahead"}
        got = [(list(b.reason), list(b.rip)) for b in ahead.batches(1000)]
        assert got == expected and ahead.exits == reader.exits == 9000
        with pytest.raises(ValueError, match="once"):
            ahead.batches(1000)
        ahead.close()
    assert "vmxsim-read-ahead" not in {t.name for t in threading.enumerate()}


def test_a_read_ahead_reader_stopped_early_stops_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(TRACE * 20)
    with open_trace(path) as reader:
        ahead = ReadAhead(reader, 100, depth=2)
        next(iter(ahead.batches(100)))
        ahead.close()
    assert "vmxsim-read-ahead" not in {t.name for t in threading.enumerate()}
