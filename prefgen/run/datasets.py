"""The run's Ray Data datasets: the rows in blocks of one batch, a `map_batches` per model stage
(an actor pool of `ModelStage`s), and the writer last; all at once (streaming) or one stage at
a time with each phase's rows written under `_phases/` (phased).
"""

from __future__ import annotations

import time

import pyarrow as pa

from prefgen.config import EndpointModel, PipelineConfig
from prefgen.config.checks import verifies
from prefgen.engines.placement import actor_options, endpoint_actor_options
from prefgen.engines.stage import ModelStage
from prefgen.output.storage import Storage
from prefgen.output.phases import PhaseStore, keep_ids
from prefgen.output.lease import check_lease
from prefgen.output.writer import write_batch
from prefgen.roles.plan import StagePlan, engine_factory
from prefgen.schema import WORK_ROW, to_table


def _source(ray, rows: list[dict], stages: list[StagePlan]):
    """The rows to process, in blocks of one batch so that stages stream block by block.

    (`from_blocks`, which reads the blocks' sizes and schema in the driver instead of in a Ray task,
    made Ray Data's first step 1.9 s sooner but changed how the blocks reach the engine actors: a
    lost node took one batch with it where it took four, `test_node_loss`. Not used until that is
    understood.)"""
    block = min(s.model.engine.batch_size for s in stages)
    table = to_table(rows, WORK_ROW)
    return ray.data.from_arrow([table.slice(i, block) for i in range(0, table.num_rows, block)])


def _with_stage(ray, ds, cfg: PipelineConfig, s: StagePlan, device: str, output: Storage, token: str,
                entrance: bool = False):
    """`entrance`: the dataset's first stage, the one that takes no new batch once a stop is asked for."""
    eng = s.model.engine
    low, high = eng.replica_range
    return ds.map_batches(
        ModelStage,
        fn_constructor_kwargs={"engine_factory": engine_factory(s.model, device, s.model_name, s.max_in_flight),
                               "tasks": s.tasks, "name": s.name, "output": output,
                               "batches_in_flight": eng.batches_in_flight, "attempt": token,
                               "max_failed_starts": cfg.ray.max_failed_starts, "entrance": entrance},
        batch_size=eng.batch_size,
        batch_format="pyarrow",
        # ModelStage.__call__ is a coroutine: each actor runs `batches_in_flight` batches at once in
        # its event loop; Ray Data keeps twice as many queued at it (its default) so none waits.
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high,
                                           max_concurrent_calls_per_actor=eng.batches_in_flight),
        # A dead engine actor is always restarted (Ray Data expects it; a start that keeps dying gives
        # up by itself, see engines/starts.py), but a batch is retried a bounded number of times.
        max_restarts=-1,
        max_task_retries=cfg.ray.max_batch_retries,
        **(endpoint_actor_options(eng) if isinstance(s.model, EndpointModel) else actor_options(eng, device)),
    )


def _with_writer(ds, cfg: PipelineConfig, output: Storage, token: str):
    return ds.map_batches(
        write_batch,
        fn_kwargs={"output": output, "token": token, "seed": cfg.seed,
                   "pairing": cfg.pairing.model_dump(mode="json") | {"verifies": verifies(cfg)}},
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=0.25,
    )


def streaming_dataset(ray, cfg, rows, stages, devices, output: Storage, token, log, placement=None, stop=None):
    """Every stage's engines live at once; rows flow through all of them block by block."""
    ds = _source(ray, rows, stages)
    for s in stages:
        ds = _with_stage(ray, ds, cfg, s, devices[s.name], output, token, entrance=s is stages[0])
    return _with_writer(ds, cfg, output, token)


def phased_dataset(ray, cfg, rows, stages, devices, output: Storage, token, log, placement=None, stop=None):
    """One stage at a time: each stage but the last writes its output under `_phases/`, its
    engines are released, and the next stage reads it back; the last stage streams into the
    writer, so its batches are committed as they finish. Holds one model's engines at a time
    (e.g. one GPU). A resumed run reuses the phases an earlier attempt finished (`output/phases.py`)."""
    count = len(stages)
    store = PhaseStore(output, cfg.digest(), token)
    todo = {r["id"] for r in rows}
    reused = store.finished([s.name for s in stages[:-1]], todo, log)
    ds, fed = _source(ray, rows, stages), todo
    for phase in reused:
        fed = phase.ids & fed
        log(f"[prefgen] phase {phase.index + 1}/{count} {stages[phase.index].label}: reused from an earlier attempt, "
            f"{len(phase.ids)} rows ({len(fed)} still to do)")
    if reused and fed:
        ds = ray.data.read_parquet(reused[-1].path)
        if fed != reused[-1].ids:  # the last stage committed some of its rows before the crash
            ds = ds.map_batches(keep_ids, fn_kwargs={"ids": sorted(fed)}, batch_format="pyarrow", batch_size=None)
    for i in range(len(reused), count - 1):
        if not fed:
            break
        s, started = stages[i], time.monotonic()
        if placement:  # only the running phase's engines are asked for (an autoscaler adds nodes on demand)
            placement.watch_only(s.label)
        staged = _with_stage(ray, ds, cfg, s, devices[s.name], output, token, entrance=True)
        staged.write_parquet(store.folder(i, s.name))
        if stop and stop.requested:  # the phase holds rows passed through untouched: never mark it done
            raise stop.stopped()
        phase = store.mark_done(i, s.name, fed, before=lambda: check_lease(output, token))
        lost = f", {len(phase.failed)} rows lost with their batches" if phase.failed else ""
        log(f"[prefgen] phase {i + 1}/{count} {s.label} done in {time.monotonic() - started:.0f} s: "
            f"{len(phase.ids)} rows{lost}")
        fed = phase.ids
        ds = ray.data.read_parquet(phase.path)
    if not fed:  # every row left was lost with its batch: no engine to start, the driver rejects them
        return ray.data.from_arrow(pa.table({"report": pa.array([], pa.string())}))
    last = stages[-1]
    if placement:
        placement.watch_only(last.label)
    log(f"[prefgen] phase {count}/{count} {last.label}: {len(fed)} rows, streamed into the writer")
    return _with_writer(_with_stage(ray, ds, cfg, last, devices[last.name], output, token, entrance=True), cfg, output,
                        token)
