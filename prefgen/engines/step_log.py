"""What an engine did step by step: how long its steps took, and how many sequences it ran and
held waiting after each one, summed as it goes and summarised for the stage's stats.

The width of its steps is what makes a CPU engine fast or slow on the same tokens: a step's
cost is mostly fixed (the weights are read once for the whole batch), so fewer sequences per
step mean fewer tokens per second. `mean_running` is weighted by step time; `waiting_share` is
the share of step time with requests waiting (the engine full, `max_num_seqs` or the KV cache
binding); `timeline` gives the means per `bucket_s` seconds from the first step, to see the
width over the run (a tail with one batch left, a start before the batches overlap).
Kept by `stepped.SteppedLLM` (the pipeline's engine on the CPU build) and by the floor's
engine in `benchmarks/floor.py`, so both are measured the same way.
"""

from __future__ import annotations

import threading


class StepLog:
    """Recorded by the stepping thread, summarised from any other (under its lock)."""

    def __init__(self, bucket_s: float = 10.0):
        self.lock = threading.Lock()
        self.bucket_s = bucket_s
        self.steps = 0
        self.step_s = 0.0
        self.running_s = 0.0  # sequences running x step seconds, summed
        self.waiting_s = 0.0
        self.full_s = 0.0  # step seconds with requests waiting
        self.max_running = self.max_waiting = 0
        self.first: float | None = None
        self.buckets: dict[int, list[float]] = {}  # bucket -> [step seconds, running x seconds, waiting x seconds]

    def record(self, started: float, seconds: float, running: int, waiting: int) -> None:
        """One step, begun at `started` (monotonic) and lasting `seconds`, with `running` sequences
        scheduled and `waiting` ones held back after it."""
        with self.lock:
            self._record(started, seconds, running, waiting)

    def _record(self, started: float, seconds: float, running: int, waiting: int) -> None:
        if self.first is None:
            self.first = started
        self.steps += 1
        self.step_s += seconds
        self.running_s += running * seconds
        self.waiting_s += waiting * seconds
        if waiting:
            self.full_s += seconds
        self.max_running = max(self.max_running, running)
        self.max_waiting = max(self.max_waiting, waiting)
        bucket = self.buckets.setdefault(int((started - self.first) // self.bucket_s), [0.0, 0.0, 0.0])
        bucket[0] += seconds
        bucket[1] += running * seconds
        bucket[2] += waiting * seconds

    def summary(self) -> dict:
        """The figures above, JSON-ready; `timeline`: [seconds from the first step, mean running,
        mean waiting, share of the bucket spent stepping] per bucket with steps in it."""
        with self.lock:
            return {
                "steps": self.steps,
                "step_s": round(self.step_s, 2),
                "mean_running": _mean(self.running_s, self.step_s),
                "max_running": self.max_running,
                "mean_waiting": _mean(self.waiting_s, self.step_s),
                "max_waiting": self.max_waiting,
                "waiting_share": round(self.full_s / self.step_s, 3) if self.step_s > 0 else 0.0,
                "bucket_s": self.bucket_s,
                "timeline": [[round(b * self.bucket_s), _mean(run, s), _mean(wait, s), round(s / self.bucket_s, 2)]
                             for b, (s, run, wait) in sorted(self.buckets.items())],
            }


def _mean(total: float, seconds: float) -> float:
    """A time-weighted mean to one decimal; 0 over no time."""
    return round(total / seconds, 1) if seconds > 0 else 0.0


def combined(summaries: list[dict]) -> dict | None:
    """One engine stage's figures over its actors' summaries (replicas, restarts): steps and step
    time summed, widths and the full share weighted by step time; None without any."""
    summaries = [s for s in summaries if s and s.get("step_s")]
    if not summaries:
        return None
    step_s = sum(s["step_s"] for s in summaries)

    def weighted(key: str, digits: int) -> float:
        return round(sum(s[key] * s["step_s"] for s in summaries) / step_s, digits)

    return {"steps": sum(s["steps"] for s in summaries), "step_s": round(step_s, 2),
            "mean_running": weighted("mean_running", 1), "max_running": max(s["max_running"] for s in summaries),
            "mean_waiting": weighted("mean_waiting", 1), "waiting_share": weighted("waiting_share", 3)}


def request_counts(engine) -> tuple[int, int] | None:
    """(running, waiting) sequences in vLLM's `LLMEngine` whose engine core is in this process
    (its scheduler's own counts); None where the core is elsewhere (a process of its own)."""
    core = getattr(getattr(engine, "engine_core", None), "engine_core", None)
    scheduler = getattr(core, "scheduler", None)
    counts = getattr(scheduler, "get_request_counts", None)
    return counts() if callable(counts) else None
