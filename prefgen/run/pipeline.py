"""Assemble the Ray Data pipeline and run it: read -> generate (per pooled model) -> evolve ->
judge -> pair and write.

Each model stage is a `map_batches` over an actor pool of `ModelStage`s, each actor holding a
resident vLLM engine that serves every role its model plays there (see `plan.py`); rows stream
from stage to stage in blocks of one batch. The last stage
pairs a batch and writes its pairs and rejects as shards, returning one report row; the driver
commits each report (see `runstate.py`), so a killed run resumes where it stopped.

Faults: an engine actor that dies is restarted (one that keeps dying while it starts gives
up after `ray.max_failed_starts`) and its batch retried `max_batch_retries` times; a batch that
still fails is skipped by Ray Data, and its rows go through a fresh dataset again (new actors,
placed on the nodes left when a node was lost), up to `max_batch_retries` times; the rows still
lost are rejected by the driver as `worker_failed`, so every input row still ends up in the
output once. An engine no node can hold stops the run after `ray.placement_timeout_s`, and a
local output path on a cluster is refused (`cluster.py`). A writer whose storage fails past its
retries reports its rows, which become `write_failed` (see `writer.py`). An engine stage that
never starts stops the run with an error naming it (`engine_starts.py`); what was committed
stays, and a rerun resumes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from functools import partial

import pyarrow as pa

from prefgen.config import EndpointModel, PipelineConfig
from prefgen.config.checks import candidates_per_row, verifies
from prefgen.dataset.report import write_report_safely
from prefgen.engines.starts import start_failure
from prefgen.input.read import STATS_DIR, absolute_uri, read_instructions, read_jsons
from prefgen.output.phases import PhaseStore, keep_ids
from prefgen.engines.cluster import PlacementWatch, alive_nodes, output_refusal, watched
from prefgen.engines.placement import (PlanError, actor_options, choose_mode, endpoint_actor_options, planning_resources,
                               replica_needs, resolve_device)
from prefgen.roles.plan import StagePlan, engine_factory, plan_lines, plan_stages
from prefgen.report.progress import RunProgress, StageWatcher
from prefgen.report.summary import RunSummary
from prefgen.output.runstate import RunState, check_lease, input_digest
from prefgen.input import screen
from prefgen.engines.stage import ModelStage
from prefgen.schema import WORK_ROW, to_table
from prefgen.output.writer import RunStopped, commit_rounds, failed_warning, write_batch, write_rows


def _init_ray(cfg: PipelineConfig, stages: list[StagePlan], worker_logs: bool = True):
    """Join the configured cluster, or start a local Ray; returns (ray, session dir we own).

    `worker_logs=False` leaves the workers' output in the Ray session's log files instead of
    streaming it to the driver (the quiet console, see `console.py`)."""
    import ray

    if ray.is_initialized():
        return ray, None
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=worker_logs)
        return ray, None
    keep_local_workers_on_this_interpreter()
    # Each worker in a process group of its own, killed with the worker (Ray's documented switch):
    # an engine actor that dies, even by SIGKILL, takes vLLM's engine processes with it.
    os.environ.setdefault("RAY_process_group_cleanup_enabled", "1")
    # A local Ray needs a logical CPU per engine actor plus one for the other tasks; on a
    # laptop that can exceed the cores, and the engines then share them.
    needed = int(sum(s.model.engine.cpus_per_replica * s.model.engine.replica_range[1] for s in stages)) + 1
    context = ray.init(address="local", num_cpus=cfg.ray.num_cpus or max(os.cpu_count() or 1, needed),
                       log_to_driver=worker_logs)
    return ray, context.address_info.get("session_dir")


def keep_local_workers_on_this_interpreter() -> None:
    """Keep a local Ray's workers on the driver's own interpreter.

    Under `uv run`, Ray (>= 2.47) by default makes every worker start through `uv run` in a copy
    of the working directory, which builds and re-syncs a second virtualenv there; workers that
    start while another one syncs can find vLLM half installed. A local Ray's workers run on this
    machine, where the driver's interpreter already has everything, so prefgen turns that off
    (`RAY_ENABLE_UV_RUN_RUNTIME_ENV=0`, Ray's documented switch) before it starts one. Ray reads
    the switch when it is imported, so the already-read value is set too."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False


def plan_run(cfg: PipelineConfig, stages: list[StagePlan], cluster: dict,
             nodes: list[dict] | None = None) -> tuple[dict[str, str], str, dict]:
    """Devices per stage, the mode, and the resources planned for; PlanError if it cannot fit.
    `nodes`: each alive node's resources, if known; with `ray.expected_resources` the shapes of
    the workers to come are not known, so the cluster grown to it counts as one more node."""
    resources = planning_resources(cluster, cfg.ray.expected_resources)
    devices = {s.name: resolve_device(s.model.engine, resources.get("GPU", 0)) for s in stages}
    if nodes is not None and cfg.ray.expected_resources:
        nodes = [*nodes, resources]
    mode = choose_mode(cfg.ray.mode, [(s.label, s.model.engine, devices[s.name]) for s in stages], resources, nodes)
    return devices, mode, resources


def run(cfg: PipelineConfig, log=print, watch=None, worker_logs: bool = True) -> RunSummary:
    """Run the pipeline over `cfg`; returns the summary (also written to the manifest).

    `watch`, if given, is called with the run's `RunProgress` when the rows are known and after
    every committed batch (the console's display); without it a progress line is logged per batch."""
    started = time.monotonic()
    cfg = cfg.model_copy(deep=True)
    cfg.output.path = out = absolute_uri(cfg.output.path)
    inputs = read_instructions(cfg.input, partial(candidates_per_row, cfg))  # unusable input fails here, before Ray starts
    benchmarks = screen.prepare(cfg.input)  # and unusable benchmark files
    started_ray = _init_ray(cfg, plan_stages(cfg), worker_logs) if screen.wants_ray(cfg.input, len(inputs.rows)) else None
    screened = screen.screen_input(inputs, cfg.input, benchmarks, started_ray[0] if started_ray else None)
    if any(screened.values()):
        log(f"[prefgen] screening: {', '.join(f'{n} {reason}' for reason, n in screened.items())}")
    state, digest = RunState(out), cfg.digest()
    state.open(cfg.model_dump(mode="json"), digest, input_digest(screen.digest_ids(inputs)), cfg.output.overwrite,
               log, digest_parts=cfg.digest_parts())
    todo = [r for r in inputs.rows if r["id"] not in state.done_ids]
    bad_input = [r for r in inputs.rejects if r["id"] not in state.done_ids]
    log(f"[prefgen] {inputs.total} rows read from {inputs.source}: {len(inputs.rows)} usable, "
        f"{len(inputs.rejects)} rejected, {len(state.done_ids)} already done, {len(todo)} to process")
    summary = RunSummary(output=out, input_rows=inputs.total, rows_skipped=len(state.done_ids),
                         config_digest=digest, warnings=cfg.warnings(inputs.provided_models))
    for warning in summary.warnings:
        log(f"[prefgen] warning: {warning}")
    progress = RunProgress(total_rows=inputs.total, started=started, done_before=len(state.done_ids))
    if watch is None:  # a line per committed batch
        logged = [0]

        def watch(p):
            if p.batches != logged[0]:
                logged[0] = p.batches
                log(p.line(time.monotonic()))
    watch(progress)

    try:
        attempt_commits = _process(cfg, state, todo, bad_input, summary, progress, watch, worker_logs, log,
                                   started_ray)
    except BaseException as exc:
        if isinstance(exc, RunStopped):  # what the endpoints served before the stop
            summary.add_stage_stats(read_jsons(out, f"{STATS_DIR}/{state.token}"),
                                    [(s.name, s.roles) for s in plan_stages(cfg)])
            state.manifest["endpoints"] = state.attempt["endpoints"] = summary.endpoints
        state.fail(repr(exc))
        raise
    for commit in state.commits:
        summary.add(commit)
    summary.attempt_tokens = sum(c["output_tokens"] for c in attempt_commits)
    summary.add_stage_stats(read_jsons(out, f"{STATS_DIR}/{state.token}"), [(s.name, s.roles) for s in plan_stages(cfg)])
    summary.wall_seconds = time.monotonic() - started
    if summary.done_rows != summary.input_rows:
        raise RuntimeError(
            f"row counts do not add up: {summary.input_rows} in, {summary.paired_rows} paired + "
            f"{summary.rejected_rows} rejected"
        )
    if summary.endpoints:  # engine figures are this attempt's: the history keeps each attempt's calls
        state.attempt["endpoints"] = summary.endpoints
    state.finish(asdict(summary))
    write_report_safely(out, log)  # the card and plots; a failure warns (`prefgen report` redoes them)
    return summary


def _process(cfg, state: RunState, todo, bad_input, summary: RunSummary, progress: RunProgress, watch,
             worker_logs: bool, log, started_ray=None) -> list[dict]:
    """Write the bad input's rejects, stream the rest through the stages; return this attempt's commits.
    `started_ray`: (ray, session dir) when screening a large input already started Ray."""
    out = cfg.output.path
    stages = plan_stages(cfg)
    ray, session_dir = started_ray or (_init_ray(cfg, stages, worker_logs) if todo else (None, None))
    nodes = alive_nodes(ray) if ray else []
    grows = bool(cfg.ray.expected_resources) and session_dir is None  # a cluster joined, not a local Ray
    refusal = ray and output_refusal(out, cfg.output.shared_mount, len(nodes), grows)
    if refusal:
        raise PlanError(refusal)
    state.claim(session_dir)
    attempt_commits = []
    if bad_input:
        attempt_commits.append(write_rows(out, state.token, bad_input, [], bad_input, tag="input"))
        state.commit(attempt_commits[-1])
        progress.add_batch(attempt_commits[-1], time.monotonic())
        watch(progress)
    if todo:
        devices, mode, resources = plan_run(cfg, stages, ray.cluster_resources(), nodes)
        summary.mode = mode
        for line in plan_lines(cfg, stages, devices, mode, resources):
            log(f"[prefgen] plan: {line}")
        ray.data.DataContext.get_current().max_errored_blocks = -1  # failed batches: see below
        build = _phased_dataset if mode == "phased" else _streaming_dataset
        placement = PlacementWatch({s.label: replica_needs(s.model.engine, devices[s.name]) for s in stages},
                                   cfg.ray.placement_timeout_s, lambda: alive_nodes(ray))
        placement.rows_done = lambda: len(state.done_ids)

        progress.phase = "waiting for the first batch"
        progress.roles, progress.rows_todo = [r for s in stages for r in s.roles], len(todo)
        watch(progress)
        # the work inside the stages, read from their stats files while the batches go (progress.py)
        watcher = StageWatcher(lambda: read_jsons(out, f"{STATS_DIR}/{state.token}"), progress, watch).start()

        def dataset_reports(rows):  # runs in `watched`'s thread: a phased build runs its phases here
            for row in build(ray, cfg, rows, stages, devices, state.token, log, placement).iter_rows():
                yield json.loads(row["report"])

        def reports(rows):
            for report in watched(dataset_reports(rows), placement.check):
                yield report
                if "ids" in report:  # committed by now
                    progress.add_batch(report, time.monotonic())
                    watch(progress)

        try:
            done, failed = commit_rounds(state, reports, todo, cfg.ray.max_batch_retries, log)
        except Exception as exc:
            error = start_failure(exc, read_jsons(out, f"{STATS_DIR}/{state.token}"), {s.name: s.label for s in stages},
                                  {s.name: s.model.source for s in stages}, len(state.done_ids))
            if error:
                raise error from exc
            raise
        finally:
            watcher.stop()
        attempt_commits += done
        warning = failed_warning(failed)
        if warning:
            summary.warnings.append(warning)
    return attempt_commits


def _source(ray, rows: list[dict], stages: list[StagePlan]):
    """The rows to process, in blocks of one batch so that stages stream block by block."""
    block = min(s.model.engine.batch_size for s in stages)
    table = to_table(rows, WORK_ROW)
    return ray.data.from_arrow([table.slice(i, block) for i in range(0, table.num_rows, block)])


def _with_stage(ray, ds, cfg: PipelineConfig, s: StagePlan, device: str, token: str):
    eng = s.model.engine
    low, high = eng.replica_range
    return ds.map_batches(
        ModelStage,
        fn_constructor_kwargs={"engine_factory": engine_factory(s.model, device, s.model_name, s.max_in_flight),
                               "tasks": s.tasks, "name": s.name, "output": cfg.output.path,
                               "batches_in_flight": eng.batches_in_flight, "attempt": token,
                               "max_failed_starts": cfg.ray.max_failed_starts},
        batch_size=eng.batch_size,
        batch_format="pyarrow",
        # ModelStage.__call__ is a coroutine: each actor runs `batches_in_flight` batches at once in
        # its event loop; Ray Data keeps twice as many queued at it (its default) so none waits.
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high,
                                           max_concurrent_calls_per_actor=eng.batches_in_flight),
        # A dead engine actor is always restarted (Ray Data expects it; a start that keeps dying gives
        # up by itself, see engine_starts.py), but a batch is retried a bounded number of times.
        max_restarts=-1,
        max_task_retries=cfg.ray.max_batch_retries,
        **(endpoint_actor_options(eng) if isinstance(s.model, EndpointModel) else actor_options(eng, device)),
    )


def _with_writer(ds, cfg: PipelineConfig, token: str):
    return ds.map_batches(
        write_batch,
        fn_kwargs={"output": cfg.output.path, "token": token, "seed": cfg.seed,
                   "pairing": cfg.pairing.model_dump(mode="json") | {"verifies": verifies(cfg)}},
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=0.25,
    )


def _streaming_dataset(ray, cfg, rows, stages, devices, token, log, placement=None):
    """Every stage's engines live at once; rows flow through all of them block by block."""
    ds = _source(ray, rows, stages)
    for s in stages:
        ds = _with_stage(ray, ds, cfg, s, devices[s.name], token)
    return _with_writer(ds, cfg, token)


def _phased_dataset(ray, cfg, rows, stages, devices, token, log, placement=None):
    """One stage at a time: each stage but the last writes its output under `_phases/`, its
    engines are released, and the next stage reads it back; the last stage streams into the
    writer, so its batches are committed as they finish. Holds one model's engines at a time
    (e.g. one GPU). A resumed run reuses the phases an earlier attempt finished (`phases.py`)."""
    out, count = cfg.output.path, len(stages)
    store = PhaseStore(out, cfg.digest(), token)
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
        _with_stage(ray, ds, cfg, s, devices[s.name], token).write_parquet(store.folder(i, s.name))
        phase = store.mark_done(i, s.name, fed, before=lambda: check_lease(out, token))
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
    return _with_writer(_with_stage(ray, ds, cfg, last, devices[last.name], token), cfg, token)
