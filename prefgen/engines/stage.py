"""The Ray Data stage: one resident engine per actor, running the tasks of every role its model
plays in this stage (generation, evolution, judging), several batches at a time.

`ModelStage` is the callable class handed to `Dataset.map_batches`: Ray builds it once per
actor (engine start included) and then streams batches through it. It is built from an engine
factory, so its bookkeeping and error paths run in unit tests with a scripted engine; the
pipeline passes a factory of the real `AsyncVllmEngine`. A blocking engine (`VllmEngine`, a
scripted one) also works: its calls then run one at a time.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from prefgen.engines.engine import (
    AsyncChatEngine,
    ChatEngine,
    TemplateRefused,
    engine_dead,
)
from prefgen.engines.calls import (CountingEngine, LoopEngine, SerialEngine, Task, check_chat_templates, is_async,
                                   new_role_stats)
from prefgen.engines.exit import child_pids, own_resource_tracker, started_since, stop_at_exit
from prefgen.engines.ray_context import current_actor_id, current_node_id
from prefgen.engines.starts import EngineStartFailed, failed_starts_in_a_row
from prefgen.engines.stop_flag import STOP_REQUESTED, workers_asked_to_stop
from prefgen.output.storage import Storage
from prefgen.schema import REJECT_STAGE_ERROR, STOPPED, WORK_ROW, to_table

WORK_SNAPSHOT_EVERY_S = 5.0  # a role's work inside a batch is written at most this often (per actor)


class ModelStage:
    """Callable class for `map_batches`: one engine, the tasks of its roles in order, several
    batches at a time.

    `__call__` is a coroutine, so Ray Data runs up to the actor's `max_concurrency` batches at
    once (`engine.batches_in_flight`) in the actor's event loop, which also feeds the engine.
    A batch's tasks run in a worker thread (they are plain functions calling `engine.chat`);
    their requests go to the one async engine, where vLLM batches them with those of the
    other batches in flight, so the engine keeps working while a batch's rows are converted,
    its judge retries are asked, or its stats are written.

    A row rejected by one task is passed over by the later ones. Each actor keeps its own stats
    file under `<output>/_stats/<attempt>/` (the attempt: the run's lease token), written before
    its engine starts (`ready: false`, and the error if the start raised), once it is ready and
    after each batch: engine start; `busy_s`, the time at least one batch was in flight;
    `batch_s`, the batches' own times summed (batch_s / busy_s is the mean number in flight);
    per role: rows, requests, tokens, task time, outputs dropped by reason, of the batches it
    finished (a batch cut short by the actor's death counts where it is redone); `engine_steps`,
    the engine's steps and their width where it steps in this process (`step_log.py`);
    `engine_limits`, the widest step its scheduler allows. `actor` is
    Ray's actor id, which a restarted actor keeps; `node` the Ray node it runs on. The driver sums
    its attempt's files into the summary and names a stage whose engines never started.

    `work` counts rows, requests and tokens per role as each task ends inside a batch, the file
    rewritten then too if it was last written `WORK_SNAPSHOT_EVERY_S` or more ago, for the driver's
    progress (`progress.StageWatcher`): on an object store every write is a PUT, so fast batches cost
    one write each, not one per role; `seq` orders snapshots.

    `entrance`: this is the dataset's first stage, so once the driver asks the attempt to stop
    (`run/stopping.py`) it takes no new batch: it passes each through untouched, its rows marked
    STOPPED (`STOP_REQUESTED`), and the driver commits nothing of it. Batches already past it finish.
    """

    def __init__(self, engine_factory: Callable[[], ChatEngine | AsyncChatEngine], tasks: list[Task], name: str,
                 output: Storage, batches_in_flight: int = 1, attempt: str = "local", max_failed_starts: int = 3,
                 entrance: bool = False):
        from prefgen.output.files import STATS_DIR, read_jsons

        self.name, self.tasks, self.output, self.attempt, self.entrance = name, tasks, output, attempt, entrance
        output.make_folder(f"{STATS_DIR}/{attempt}")
        self.stats_file = f"{STATS_DIR}/{attempt}/{name.replace(':', '-').replace('#', '-')}-{uuid.uuid4().hex[:8]}.json"
        self.lock, self.write_lock = threading.Lock(), threading.Lock()
        self.in_flight, self.busy_since, self.stats_written = 0, 0.0, -1  # the `seq` of the last snapshot written
        self.stats_written_at = 0.0  # when (monotonic) the file was last written
        self.dropped = {t.role: Counter() for t in tasks}
        actor = current_actor_id()
        self.stats = {"stage": name, "attempt": attempt, "actor": actor, "node": current_node_id(), "pid": os.getpid(),
                      "nice": os.getpriority(os.PRIO_PROCESS, 0),
                      "started_at": time.time(), "ready": False, "engine_start_s": None, "ready_at": None,
                      "last_batch_at": None, "batches": 0, "busy_s": 0.0, "batch_s": 0.0, "max_in_flight": 0,
                      "roles": {t.role: new_role_stats() for t in tasks},
                      "work": {t.role: {"rows": 0, "requests": 0, "output_tokens": 0} for t in tasks}, "seq": 0}
        died = failed_starts_in_a_row(read_jsons(output, f"{STATS_DIR}/{attempt}"), actor) if actor else 0
        self._write_stats(json.loads(json.dumps(self.stats)))  # a start that never ends (killed) stays on record
        if died >= max_failed_starts:  # Ray would restart it forever: give up, which Ray does not retry
            error = f"ray.max_failed_starts={max_failed_starts} reached"
            self._write_stats(dict(self.stats, error=error, gave_up=died), force=True)
            raise EngineStartFailed(f"{name}: the engine died {died} time(s) in a row while starting; {error}")
        own_resource_tracker()  # the engine's processes share it; it outlives them (exit.py)
        started, before = time.monotonic(), child_pids()
        try:
            engine = engine_factory()
        except Exception as exc:
            self._write_stats(dict(self.stats, error=f"{type(exc).__name__}: {exc}"), force=True)
            raise
        try:
            check_chat_templates(engine, tasks)
        except TemplateRefused as exc:
            self._write_stats(dict(self.stats, error=f"{type(exc).__name__}: {exc}"), force=True)
            getattr(engine, "shutdown", lambda: None)()  # its engine core must not outlive the actor
            raise
        self.engine = engine if is_async(engine) else SerialEngine(engine)
        # Stopped when this stage is let go of (Ray Data's `__ray_shutdown__`), before Ray kills the
        # actor's child processes, or else at the interpreter's exit; nothing else may hold it (exit.py)
        self.engine_stop = weakref.finalize(self, stop_at_exit, name, self.engine, started_since(before))
        # Ray Data may run a few batches per call on top of the actor's concurrency: threads are cheap.
        self.threads = ThreadPoolExecutor(max_workers=4 * max(1, batches_in_flight), thread_name_prefix="prefgen-batch")
        with self.lock:
            self.stats.update(ready=True, engine_start_s=round(time.monotonic() - started, 2), ready_at=time.time())
            limits = getattr(engine, "scheduler_limits", None)
            if callable(limits):  # how wide its steps may be
                self.stats["engine_limits"] = limits()
            snapshot = json.loads(json.dumps(self.stats))
        self._write_stats(snapshot, force=True)
        print(f"[prefgen] {name}: engine ready in {self.stats['engine_start_s']:.1f} s", flush=True)

    def restart_actor(self, exc: Exception) -> None:
        """Exit the actor: Ray starts a new one and retries its batches there."""
        print(f"[prefgen] {self.name}: engine died ({exc!r}); restarting the actor", flush=True)
        os._exit(1)

    def _run_task(self, task: Task, rows: list[dict], engine: ChatEngine, booked: dict) -> int:
        """Run one role's task on the batch's live rows; returns its output tokens and books its
        figures in `booked` (the stats take them when the batch is done).

        An endpoint that stops the run (`endpoint.EndpointStopped`) marks every row of the batch
        STOPPED: the writer then writes nothing of it and the driver stops the run."""
        live = [row for row in rows if row["reject_reason"] is None]
        if not live:
            return 0
        # A copy per batch counts this batch's drops; batches in other threads count theirs.
        task = copy.copy(task)
        task.dropped = Counter()
        counting, started = CountingEngine(engine), time.monotonic()
        try:
            task.run(live, counting)
        except Exception as exc:  # noqa: BLE001 - any failure is recorded on the rows
            if type(exc).__name__ == "EndpointStopped":
                for row in rows:
                    row["reject_reason"], row["reject_detail"] = STOPPED, f"{task.role}: {exc}"
                return counting.tokens
            if engine_dead(exc):
                self.restart_actor(exc)
                raise
            for row in live:
                row["reject_reason"], row["reject_detail"] = REJECT_STAGE_ERROR, f"{task.role}: {exc!r}"
        booked[task.role] = {"rows": len(live), "requests": counting.requests, "output_tokens": counting.tokens,
                             "busy_s": time.monotonic() - started, "dropped": task.dropped}
        snapshot = self._book_work(task.role, booked[task.role])
        if time.monotonic() - self.stats_written_at >= WORK_SNAPSHOT_EVERY_S:  # else the batch's own write has it
            self._write_stats(snapshot)
        return counting.tokens

    def _book_work(self, role: str, figures: dict) -> dict:
        """Count a task's work as soon as it is done (the batch may have further roles to run); returns
        a snapshot of the stats to write."""
        with self.lock:
            work = self.stats["work"][role]
            for key in work:
                work[key] += figures[key]
            self.stats["seq"] += 1
            return json.loads(json.dumps(self.stats))

    def _enter(self) -> None:
        with self.lock:
            if self.in_flight == 0:
                self.busy_since = time.monotonic()
            self.in_flight += 1
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.in_flight)

    def _leave(self, elapsed: float, booked: dict) -> dict:
        """Book a finished batch; returns a snapshot of the stats to write."""
        with self.lock:
            self.in_flight -= 1
            now = time.monotonic()
            self.stats["busy_s"] += now - self.busy_since
            self.busy_since = now  # the time up to now is booked; the rest when the next one leaves
            self.stats["batches"] += 1
            self.stats["batch_s"] += elapsed
            self.stats["last_batch_at"] = time.time()
            for role, figures in booked.items():
                stats = self.stats["roles"][role]
                for key in ("rows", "requests", "output_tokens", "busy_s"):
                    stats[key] += figures[key]
                self.dropped[role].update(figures["dropped"])
                stats["dropped"] = dict(self.dropped[role])
            usage = getattr(self.engine, "usage", None)
            if callable(usage):  # an endpoint's counts (requests, retries, failures, tokens, cost)
                self.stats["endpoint"] = usage()
            steps = getattr(self.engine, "step_summary", None)
            if callable(steps) and (summary := steps()) is not None:  # the engine's width, step by step
                self.stats["engine_steps"] = summary
            self.stats["seq"] += 1
            return json.loads(json.dumps(self.stats))

    def _write_stats(self, snapshot: dict, force: bool = False) -> None:
        from prefgen.output.files import write_json

        with self.write_lock:  # in order: a later snapshot is never overwritten by an earlier one
            if force or snapshot["seq"] > self.stats_written:
                write_json(self.output, self.stats_file, snapshot)
                self.stats_written = max(self.stats_written, snapshot["seq"])
                self.stats_written_at = time.monotonic()

    def _process(self, batch: pa.Table, engine: ChatEngine) -> pa.Table:
        """One batch, in a worker thread: every role's task in order, then stats."""
        rows = batch.to_pylist()
        if self.entrance and workers_asked_to_stop(self.attempt):  # the run is stopping
            for row in rows:
                row["reject_reason"], row["reject_detail"] = STOPPED, STOP_REQUESTED
            return to_table(rows, WORK_ROW)
        started = time.monotonic()
        self._enter()
        tokens, booked = 0, {}
        try:
            for task in self.tasks:
                tokens += self._run_task(task, rows, engine, booked)
        finally:
            elapsed = time.monotonic() - started
            snapshot = self._leave(elapsed, booked)
        self._write_stats(snapshot)
        print(f"[prefgen] {self.name}: {len(rows)} rows, {tokens} tokens in {elapsed:.1f} s "
              f"({tokens / max(elapsed, 1e-9):.0f} tok/s, {snapshot['max_in_flight']} batch(es) in flight at most)",
              flush=True)
        return to_table(rows, WORK_ROW)

    async def __call__(self, batch: pa.Table) -> pa.Table:
        loop = asyncio.get_running_loop()
        engine = LoopEngine(self.engine, loop) if is_async(self.engine) else self.engine
        return await loop.run_in_executor(self.threads, self._process, batch, engine)
