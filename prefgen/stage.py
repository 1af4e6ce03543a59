"""The Ray Data stage: one resident engine per actor, running the tasks of every role its model
plays in this stage (generation, evolution, judging), batch after batch.

`ModelStage` is the callable class handed to `Dataset.map_batches`: Ray builds it once per
actor (engine start included) and then streams batches through it. It is built from an engine
factory, so its bookkeeping and error paths run in unit tests with a scripted engine; the
pipeline passes a factory of the real `VllmEngine`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import pyarrow as pa

from prefgen.engine import ChatEngine, Request, Result, engine_dead
from prefgen.schema import REJECT_STAGE_ERROR, WORK_ROW, to_table


class Task(Protocol):
    """What a role does with an engine: fills in the live rows of a batch in place."""

    role: str  # "generate:<name>", "evolve", "judge:<name>"
    dropped: Counter  # outputs that became no candidate, by reason (this actor's running total)

    def run(self, rows: list[dict], engine: ChatEngine) -> None: ...


class CountingEngine:
    """Passes requests through to the engine and counts them (requests, output tokens)."""

    def __init__(self, engine: ChatEngine):
        self.engine, self.requests, self.tokens = engine, 0, 0

    def chat(self, requests: list[Request]) -> list[Result]:
        results = self.engine.chat(requests)
        self.requests += len(requests)
        self.tokens += sum(r.tokens for r in results)
        return results


def new_role_stats() -> dict:
    return {"rows": 0, "requests": 0, "output_tokens": 0, "busy_s": 0.0, "dropped": {}}


class ModelStage:
    """Callable class for `map_batches`: one engine, the tasks of its roles in order.

    A row rejected by one task is passed over by the later ones. After each batch the actor
    rewrites its own stats file under `<output>/_stats/` (engine start and busy time; per role:
    rows, requests, tokens, outputs dropped by reason); the driver sums them into the summary.
    """

    def __init__(self, engine_factory: Callable[[], ChatEngine], tasks: list[Task], name: str, output: str):
        from prefgen.io import STATS_DIR

        self.name, self.tasks, self.output = name, tasks, output
        self.stats_file = f"{STATS_DIR}/{name.replace(':', '-').replace('#', '-')}-{uuid.uuid4().hex[:8]}.json"
        started = time.monotonic()
        self.engine = engine_factory()
        self.stats = {"stage": name, "pid": os.getpid(), "engine_start_s": round(time.monotonic() - started, 2),
                      "ready_at": time.time(), "last_batch_at": None, "batches": 0, "busy_s": 0.0,
                      "roles": {t.role: new_role_stats() for t in tasks}}
        print(f"[prefgen] {name}: engine ready in {self.stats['engine_start_s']:.1f} s", flush=True)

    def restart_actor(self, exc: Exception) -> None:
        """Exit the actor: Ray starts a new one and retries this batch there."""
        print(f"[prefgen] {self.name}: engine died ({exc!r}); restarting the actor", flush=True)
        os._exit(1)

    def _run_task(self, task: Task, rows: list[dict]) -> None:
        live = [row for row in rows if row["reject_reason"] is None]
        if not live:
            return
        counting, started = CountingEngine(self.engine), time.monotonic()
        try:
            task.run(live, counting)
        except Exception as exc:  # noqa: BLE001 - any failure is recorded on the rows
            if engine_dead(exc):
                self.restart_actor(exc)
                raise
            for row in live:
                row["reject_reason"], row["reject_detail"] = REJECT_STAGE_ERROR, f"{task.role}: {exc!r}"
        stats = self.stats["roles"][task.role]
        for key, value in (("rows", len(live)), ("requests", counting.requests), ("output_tokens", counting.tokens),
                           ("busy_s", time.monotonic() - started)):
            stats[key] += value
        stats["dropped"] = dict(task.dropped)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from prefgen.io import write_json

        rows = batch.to_pylist()
        started = time.monotonic()
        tokens_before = sum(r["output_tokens"] for r in self.stats["roles"].values())
        for task in self.tasks:
            self._run_task(task, rows)
        elapsed = time.monotonic() - started
        tokens = sum(r["output_tokens"] for r in self.stats["roles"].values()) - tokens_before
        self.stats["batches"] += 1
        self.stats["busy_s"] += elapsed
        self.stats["last_batch_at"] = time.time()
        write_json(self.output, self.stats_file, self.stats)
        print(f"[prefgen] {self.name}: {len(rows)} rows, {tokens} tokens in {elapsed:.1f} s "
              f"({tokens / max(elapsed, 1e-9):.0f} tok/s)", flush=True)
        return to_table(rows, WORK_ROW)
