"""Reader for ``perf kvm stat report`` / ``perf kvm stat live`` tables: an exit *mix* turned
into a reproducible synthetic exit sequence.

The table is printed by Linux ``tools/perf/builtin-kvm.c`` (``print_result()``; documented in
``tools/perf/Documentation/perf-kvm.txt``), one row per exit reason with right-aligned columns:

    VM-EXIT    Samples  Samples%     Time%    Min Time    Max Time         Avg time
  MSR_WRITE      42521    53.32%     0.06%      0.50us     52.94us      1.71us ( +-   0.48% )

Older perf (2012-2013) has no Min/Max columns; mail copies may wrap a row after "Min Time"
(the continuation line is passed over). A table starts at its ``VM-EXIT`` header and ends at
``Total Samples:...``, at the next header or at the end; ``--event=mmio``/``ioport`` tables and
prose around tables are passed over. ``table`` picks which ``VM-EXIT`` table of the file to
use (0 = the first; ``live`` mode prints one per interval). Rows whose reason is not in the
exit-reason table (perf prints ``UNKNOWN`` for codes it cannot name) are counted in
``unknown_reasons`` with their sample count.

The sequence: ``exits`` exits (default: the sum of the known rows' Samples), apportioned to the
reasons by largest remainder, interleaved by drawing without replacement from
``random.Random(seed)``: the same table, ``exits`` and ``seed`` give the same sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from vmxsim_server.vmx.mixes import Mix, synthesize

from .base import Row, TraceParseError, TraceReader
from .limits import LIMITS

__all__ = ["MixRow", "PerfKvmStatReader"]

_HEADER = "VM-EXIT"
_MICROSECONDS = "us"


class MixRow(NamedTuple):
    """One row of a ``perf kvm stat`` VM-EXIT table."""

    name: str
    reason: int
    samples: int
    samples_percent: float
    time_percent: float
    avg_seconds: float | None


class PerfKvmStatReader(TraceReader):
    """A synthetic exit sequence with the mix of one ``perf kvm stat`` VM-EXIT table."""

    format_name = "perf-kvm-stat"

    def __init__(
        self,
        lines: Iterable[str],
        *,
        seed: int = 0,
        exits: int | None = None,
        table: int = 0,
        max_samples: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(lines, **kwargs)
        if exits is not None and exits < 0:
            raise ValueError("exits must not be negative")
        if table < 0:
            raise ValueError("table must not be negative")
        self.seed = seed
        self.requested_exits = exits
        self.table = table
        self.max_samples = LIMITS.max_samples if max_samples is None else max_samples
        """The most exits this table may make (``limits.MAX_SAMPLES``, ``--max-samples``)."""
        self.tables_seen = 0
        """VM-EXIT tables found in the input (after the table has been read)."""
        self.total_samples: int | None = None
        """The table's ``Total Samples:`` figure, when printed."""
        self._mix: list[MixRow] | None = None

    @classmethod
    def sniff(cls, line: str) -> bool:
        stripped = line.lstrip()
        return stripped.startswith(("Analyze events for all", _HEADER + " "))

    @property
    def mix(self) -> list[MixRow]:
        """The known rows of the chosen table (reads the input on first use)."""
        if self._mix is None:
            self._mix = self._read_table()
        return self._mix

    def _rows(self) -> Iterator[Row]:
        mix = self.mix
        weights = sum(r.samples for r in mix)
        if not weights:
            return
        total = weights if self.requested_exits is None else self.requested_exits
        if total > self.max_samples:
            what = "the table's samples add up to" if self.requested_exits is None else "asked for"
            raise TraceParseError(
                self.source,
                self.lines,
                f"{what} {total:,} exits; the limit is {self.max_samples:,} (--max-samples)",
            )
        as_mix = Mix(self.source, "perf kvm stat table", self.source, {})
        for r in mix:
            as_mix.weights[r.reason] = as_mix.weights.get(r.reason, 0.0) + r.samples
        for record in synthesize(as_mix, total, self.seed):
            self.exits += 1
            yield (
                record.reason, record.rip, record.qualification, record.info2, record.intr_info,
                record.error_code, record.guest_physical_address, record.instruction_len, None, 0,
            )  # fmt: skip

    def _read_table(self) -> list[MixRow]:
        rows: dict[str, MixRow] = {}
        in_table = has_min_max = False
        lineno = 0
        for lineno, line in enumerate(self._lines, 1):
            tokens = line.split()
            if not tokens:
                continue
            if tokens[0] == _HEADER:
                in_table = self.tables_seen == self.table
                has_min_max = "Min" in tokens
                self.tables_seen += 1
            elif tokens[0].startswith("Total") and line.lstrip().startswith("Total Samples:"):
                if in_table:
                    self.total_samples = _total_samples(line)
                in_table = False
            elif in_table and len(tokens) >= 4 and tokens[2].endswith("%"):
                row = self._row(lineno, tokens, 3 if has_min_max else 1)
                if row is not None:
                    old = rows.get(row.name)
                    rows[row.name] = row if old is None else _merge(old, row)
        self.lines = lineno
        return [r for r in rows.values() if r.reason >= 0]

    def _matched(self) -> bool:
        return self.tables_seen > 0

    def _row(self, lineno: int, tokens: list[str], time_columns: int) -> MixRow | None:
        name, samples_text = tokens[0], tokens[1]
        try:
            if not samples_text.isdigit():
                raise ValueError(f"Samples {samples_text!r} is not a count")
            samples = int(samples_text)
            percents = [float(t[:-1]) for t in tokens[2:4] if t.endswith("%")]
            if len(percents) != 2 or not all(0.0 <= p <= 100.0 for p in percents):
                raise ValueError("Samples% and Time% must be percentages")
            times = [t for t in tokens[4:] if t.endswith(_MICROSECONDS)]
            avg = float(times[-1][:-2]) / 1e6 if len(times) == time_columns else None
            if avg is not None and not 0.0 <= avg < float("inf"):
                raise ValueError(f"bad Avg time {times[-1]!r}")
        except ValueError as exc:
            self._malformed(lineno, f"VM-EXIT row {name}: {exc}")
            return None
        number = self._reason(name)
        if number < 0:  # counted once per sample: these exits are missing from the mix
            self.unknown_reasons[name] += samples - 1
        return MixRow(name, number, samples, percents[0], percents[1], avg)


def _merge(old: MixRow, new: MixRow) -> MixRow:
    """Rows of the same reason (perf prints several UNKNOWN rows) add up."""
    return old._replace(
        samples=old.samples + new.samples,
        samples_percent=old.samples_percent + new.samples_percent,
        time_percent=old.time_percent + new.time_percent,
        avg_seconds=None,
    )


def _total_samples(line: str) -> int | None:
    text = line.split(":", 1)[1].split(",", 1)[0].strip()
    return int(text) if text.isdigit() else None
