"""A run's progress as the driver sees it: rows done, pairs, rejects, tokens, rates and the ETA.

Every figure comes from what the driver already receives: the input counts when the run opens,
then one writer report per committed batch (`report.batch_counts`). `RunProgress` sums them
once; the console renders it (a live bar in a terminal, a line at a steady interval in a job
log, see `console.py`). Pure: time is passed in, nothing here touches Ray or a terminal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunProgress:
    total_rows: int  # every input row, the ones done by earlier attempts included
    started: float  # monotonic time the run started
    done_before: int = 0  # rows an earlier attempt finished
    done_rows: int = 0  # rows finished by this attempt (paired or rejected)
    pairs: int = 0
    rejected_rows: int = 0
    tokens: int = 0  # output tokens of this attempt's batches
    batches: int = 0
    phase: str = "starting"  # what the run is doing, in a few words
    first_batch_at: float | None = None  # when the first batch of this attempt was committed
    rows_in_first_batch: int = 0

    def add_batch(self, report: dict, now: float) -> None:
        """Count one committed batch's report (a writer's or the driver's own rejects)."""
        rows = len(report["ids"])
        if self.first_batch_at is None:
            self.first_batch_at, self.rows_in_first_batch = now, rows
        self.batches += 1
        self.done_rows += rows
        self.pairs += report["pairs"]
        self.rejected_rows += sum(report["rejects"].values())
        self.tokens += report["output_tokens"]
        self.phase = "working"

    @property
    def all_done(self) -> int:
        return self.done_before + self.done_rows

    @property
    def remaining(self) -> int:
        return max(self.total_rows - self.all_done, 0)

    def elapsed(self, now: float) -> float:
        return max(now - self.started, 0.0)

    def tokens_per_s(self, now: float) -> float:
        """This attempt's output tokens over the time since the run started."""
        elapsed = self.elapsed(now)
        return self.tokens / elapsed if elapsed > 0 else 0.0

    def rows_per_s(self, now: float) -> float | None:
        """Rows per second once batches flow: measured from the first committed batch (engine start
        and the first batch's latency left out), or over the whole run while only one batch is in."""
        if self.first_batch_at is None:
            return None
        since_first = now - self.first_batch_at
        if self.done_rows > self.rows_in_first_batch and since_first > 0:
            return (self.done_rows - self.rows_in_first_batch) / since_first
        elapsed = self.elapsed(now)
        return self.done_rows / elapsed if elapsed > 0 else None

    def eta_s(self, now: float) -> float | None:
        """Seconds left at the current row rate; 0 when done, None before the first batch."""
        if self.remaining == 0:
            return 0.0
        rate = self.rows_per_s(now)
        return self.remaining / rate if rate else None

    def line(self, now: float) -> str:
        """One plain progress line, for logs that are not a terminal."""
        pct = 100 * self.all_done / self.total_rows if self.total_rows else 100.0
        return (f"[prefgen] progress: {self.all_done}/{self.total_rows} rows done ({pct:.0f}%), {self.pairs} pairs, "
                f"{self.rejected_rows} rejected, {self.tokens_per_s(now):.1f} tok/s, "
                f"elapsed {duration(self.elapsed(now))}, ETA {duration(self.eta_s(now))} ({self.phase})")


def duration(seconds: float | None) -> str:
    """`42s`, `3m05s`, `1h02m`; `?` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def due(last: float | None, now: float, interval_s: float, changed: bool = True, idle_factor: int = 10) -> bool:
    """Whether a job-log progress line is due: one interval after the last line while the rows or
    the phase move, `idle_factor` intervals when nothing moved since (a long engine start)."""
    if last is None:
        return False
    return now - last >= (interval_s if changed else interval_s * idle_factor)
