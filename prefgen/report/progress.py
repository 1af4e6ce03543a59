"""A run's progress as the driver sees it: rows done, pairs, rejects, tokens, rates and the ETA.

Every figure comes from what the driver already receives: the input counts when the run opens,
then one writer report per committed batch (`report.batch_counts`). `RunProgress` sums them
once; the console renders it (a live bar in a terminal, a line at a steady interval in a job
log, see `run/console.py`). Pure: time is passed in, nothing here touches Ray or a terminal.

Committed batches alone would leave a small run (its rows in one batch) at "waiting for the
first batch" until its end. So the work inside the engine stages counts too, as it happens:
each stage actor rewrites its stats file as each role's task finishes on a batch (`work` in
`stage.ModelStage`), and `StageWatcher`, a driver thread, reads those files every few seconds
into `set_stage_work`: rows each role has done (capped at the rows this attempt has to do),
their share of all the stages' work (`stage_share`), and their tokens, which count in tok/s
until committed batches hold more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


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
    input_rejects: int = 0  # rows rejected as bad input by the driver before any engine worked: not in the rate
    roles: list[str] = field(default_factory=list)  # the stages' roles in plan order
    rows_todo: int = 0  # rows this attempt sends through the stages
    stage_work: dict[str, dict] = field(default_factory=dict)  # per role: rows, requests, output_tokens so far

    def set_stage_work(self, actor_stats: list[dict]) -> None:
        """The stage actors' `work` figures (their stats files), summed per role."""
        work: dict[str, dict] = {}
        for st in actor_stats:
            for role, figures in (st.get("work") or {}).items():
                into = work.setdefault(role, {"rows": 0, "requests": 0, "output_tokens": 0})
                for key in into:
                    into[key] += figures.get(key, 0)
        self.stage_work = work

    def role_rows(self, role: str) -> int:
        """Rows the role has done, at most the rows to do (a batch redone after an actor died counts twice)."""
        return min((self.stage_work.get(role) or {}).get("rows", 0), self.rows_todo)

    @property
    def stage_share(self) -> float | None:
        """The share of the stages' work done: rows done summed over the roles, over roles x rows to do."""
        if not self.roles or not self.rows_todo:
            return None
        return sum(self.role_rows(r) for r in self.roles) / (len(self.roles) * self.rows_todo)

    def stage_line(self) -> str | None:
        """`stages 40% (evolve 12/12 rows)`: the share, and the latest role with work done; None before any."""
        begun = [r for r in self.roles if self.role_rows(r)]
        if not begun or self.stage_share is None:
            return None
        return f"stages {100 * self.stage_share:.0f}% ({begun[-1]} {self.role_rows(begun[-1])}/{self.rows_todo} rows)"

    @property
    def stage_tokens(self) -> int:
        return sum(w.get("output_tokens", 0) for w in self.stage_work.values())

    def add_batch(self, report: dict, now: float, bad_input: bool = False) -> None:
        """Count one committed batch's report: a writer's, or with `bad_input` the driver's own rejects
        of unusable input rows, committed at the start, which count as done but set no rate (one such
        row over the first minutes made an ETA of a day)."""
        rows = len(report["ids"])
        if bad_input:
            self.input_rejects += rows
        elif self.first_batch_at is None:
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
        """This attempt's output tokens (committed, or generated in the stages if more) over the time
        since the run started."""
        elapsed = self.elapsed(now)
        return max(self.tokens, self.stage_tokens) / elapsed if elapsed > 0 else 0.0

    def rows_per_s(self, now: float) -> float | None:
        """Rows per second once batches flow: measured from the first committed batch (engine start
        and the first batch's latency left out), or over the whole run while only one batch is in."""
        if self.first_batch_at is None:
            return None
        worked = self.done_rows - self.input_rejects
        since_first = now - self.first_batch_at
        if worked > self.rows_in_first_batch and since_first > 0:
            return (worked - self.rows_in_first_batch) / since_first
        elapsed = self.elapsed(now)
        return worked / elapsed if elapsed > 0 else None

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
                f"elapsed {duration(self.elapsed(now))}, ETA {duration(self.eta_s(now))} ({self.doing})")

    @property
    def doing(self) -> str:
        """The phase, with the stages' work while rows are in them: `working; stages 40% (evolve 12/12 rows)`."""
        stages = self.stage_line() if self.remaining else None
        return f"{self.phase}; {stages}" if stages else self.phase


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


class StageWatcher:
    """A driver thread that reads the stage actors' stats every `interval_s` into the progress, and
    calls `watch` when the work moved. `read` returns the stats (this attempt's `_stats/` files); a
    read that fails (a file replaced while listed) is skipped until the next one."""

    def __init__(self, read: Callable[[], list[dict]], progress: RunProgress, watch: Callable[[RunProgress], None],
                 interval_s: float = 5.0):
        self.read, self.progress, self.watch, self.interval_s = read, progress, watch, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> bool:
        """Read once; True when the work moved."""
        try:
            stats = self.read()
        except Exception:  # noqa: BLE001 - progress only: the next read will do
            return False
        before = self.progress.stage_work
        self.progress.set_stage_work(stats)
        if self.progress.stage_work == before:
            return False
        self.watch(self.progress)
        return True

    def start(self) -> StageWatcher:
        self._thread = threading.Thread(target=self._run, name="prefgen-stage-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
