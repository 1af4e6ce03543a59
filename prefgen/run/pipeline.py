"""Assemble the Ray Data pipeline and run it: read -> generate (per pooled model) -> evolve ->
judge -> pair and write.

The plan (`roles/plan.py`) is made once per run and passed on. Each model stage is a
`map_batches` over an actor pool of `ModelStage`s, each actor holding a resident vLLM engine that
serves every role its model plays there; rows stream from stage to stage in blocks of one batch
(the datasets: `datasets.py`; Ray joined or started: `ray_start.py`). The last stage pairs a
batch and writes its pairs and rejects as shards, returning one report row; the driver commits
each report (see `output/runstate.py`), so a killed run resumes where it stopped.

Faults: an engine actor that dies is restarted (one that keeps dying while it starts gives
up after `ray.max_failed_starts`) and its batch retried `max_batch_retries` times; a batch that
still fails is skipped by Ray Data, and its rows go through a fresh dataset again (new actors,
placed on the nodes left when a node was lost), up to `max_batch_retries` times; the rows still
lost are rejected by the driver as `worker_failed`, so every input row still ends up in the
output once. An engine no node can hold stops the run after `ray.placement_timeout_s`, and a
local output path on a cluster is refused (`engines/cluster.py`). A writer whose storage fails past its
retries reports its rows, which become `write_failed` (see `output/writer.py`). An engine stage that
never starts stops the run with an error naming it (`engines/starts.py`); what was committed
stays, and a rerun resumes. SIGTERM or Ctrl-C stops it gracefully (`run/stopping.py`): the first
stage takes no new batch, what finishes within the grace is committed, the manifest says `stopped`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from functools import partial

from prefgen.config import PipelineConfig
from prefgen.config.checks import candidates_per_row
from prefgen.dataset.report import write_report_safely
from prefgen.engines.cluster import PlacementWatch, alive_nodes, output_refusal, watched
from prefgen.engines.exit import ACTORS_EXIT_WAIT_S, wait_for_engine_actors
from prefgen.engines.placement import PlanError, replica_needs
from prefgen.engines.starts import start_failure
from prefgen.input import screen
from prefgen.input.read import read_instructions
from prefgen.output.files import STATS_DIR, absolute_uri, read_jsons
from prefgen.output.manifest import input_digest
from prefgen.output.runstate import RunState
from prefgen.output.storage import storage
from prefgen.output.writer import RunStopped, commit_rounds, failed_warning, write_rows
from prefgen.report.progress import RunProgress, StageWatcher
from prefgen.report.summary import RunSummary
from prefgen.roles.plan import StagePlan, plan_lines, plan_stages
from prefgen.run.datasets import phased_dataset, streaming_dataset
from prefgen.run.ray_start import init_ray, plan_run
from prefgen.run.stopping import StopRequested, StopSignals, grace_for, until_stopped
from prefgen.engines.stop_flag import ask_workers_to_stop


def run(cfg: PipelineConfig, log=print, watch=None, worker_logs: bool = True) -> RunSummary:
    """Run the pipeline over `cfg`; returns the summary (also written to the manifest).

    `watch`, if given, is called with the run's `RunProgress` when the rows are known and after
    every committed batch (the console's display); without it a progress line is logged per batch.
    SIGINT and SIGTERM stop the run gracefully while it runs (`StopRequested`, see `run/stopping.py`)."""
    stop = StopSignals(grace_for(cfg.ray.stop_grace_s, os.environ), log=log)
    stop.install()
    try:
        return _run(cfg, log, watch, worker_logs, stop)
    finally:
        stop.restore()


def attempt_stats(state: RunState) -> list[dict]:
    """The stats files this attempt's engine actors wrote (`engines/stage.py`), one per actor."""
    return read_jsons(state.store, f"{STATS_DIR}/{state.token}")


def _run(cfg: PipelineConfig, log, watch, worker_logs: bool, stop: StopSignals) -> RunSummary:
    started = time.monotonic()
    cfg = cfg.model_copy(deep=True)
    cfg.output.path = out = absolute_uri(cfg.output.path)
    stages = plan_stages(cfg)  # the plan, once for the run
    inputs = read_instructions(cfg.input, partial(candidates_per_row, cfg))  # unusable input fails here, before Ray starts
    benchmarks = screen.prepare(cfg.input)  # and unusable benchmark files
    started_ray = init_ray(cfg, stages, worker_logs) if screen.wants_ray(cfg.input, len(inputs.rows)) else None
    screened = screen.screen_input(inputs, cfg.input, benchmarks, started_ray[0] if started_ray else None)
    if any(screened.values()):
        log(f"[prefgen] screening: {', '.join(f'{n} {reason}' for reason, n in screened.items())}")
    stop.stop_if_requested("before the output was opened")
    state, digest = RunState(storage(out)), cfg.digest()  # the output, opened once: passed on from here
    state.open(cfg.model_dump(mode="json"), digest, input_digest(screen.digest_ids(inputs)), cfg.output.overwrite,
               log, digest_parts=cfg.digest_parts())
    stop.rows_done = lambda: len(state.done_ids)
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
        attempt_commits = _process(cfg, stages, state, todo, bad_input, summary, progress, watch, worker_logs, log,
                                   stop, started_ray)
    except BaseException as exc:
        if isinstance(exc, (RunStopped, StopRequested)):  # what the endpoints served before the stop
            summary.add_stage_stats(attempt_stats(state), [(s.name, s.roles) for s in stages])
            state.manifest["endpoints"] = state.attempt["endpoints"] = summary.endpoints
        if isinstance(exc, StopRequested):
            state.fail(str(exc), status="stopped")
        else:
            state.fail(repr(exc))
        raise
    for commit in state.commits:
        summary.add(commit)
    summary.attempt_tokens = sum(c["output_tokens"] for c in attempt_commits)
    summary.add_stage_stats(attempt_stats(state), [(s.name, s.roles) for s in stages])
    summary.wall_seconds = time.monotonic() - started
    if summary.done_rows != summary.input_rows:
        raise RuntimeError(
            f"row counts do not add up: {summary.input_rows} in, {summary.paired_rows} paired + "
            f"{summary.rejected_rows} rejected"
        )
    if summary.endpoints:  # engine figures are this attempt's: the history keeps each attempt's calls
        state.attempt["endpoints"] = summary.endpoints
    state.finish(asdict(summary))
    write_report_safely(state.store, log)  # the card and plots; a failure warns (`prefgen report` redoes them)
    return summary


def _process(cfg, stages: list[StagePlan], state: RunState, todo, bad_input, summary: RunSummary,
             progress: RunProgress, watch, worker_logs: bool, log, stop: StopSignals, started_ray=None) -> list[dict]:
    """Write the bad input's rejects, stream the rest through the stages; return this attempt's commits.
    `started_ray`: (ray, session dir) when screening a large input already started Ray."""
    ray, session_dir = started_ray or (init_ray(cfg, stages, worker_logs) if todo else (None, None))
    if ray:
        stop.install()  # ray.init sets a SIGTERM handler of its own (exit at once)
        stop.on_request = lambda: ask_workers_to_stop(state.token)
    nodes = alive_nodes(ray) if ray else []
    grows = bool(cfg.ray.expected_resources) and session_dir is None  # a cluster joined, not a local Ray
    refusal = ray and output_refusal(state.store.uri, cfg.output.shared_mount, len(nodes), grows)
    if refusal:
        raise PlanError(refusal)
    state.claim(session_dir)
    attempt_commits = []
    if bad_input:
        attempt_commits.append(write_rows(state.store, state.token, bad_input, [], bad_input, tag="input"))
        state.commit(attempt_commits[-1])
        progress.add_batch(attempt_commits[-1], time.monotonic(), bad_input=True)
        watch(progress)
    if todo:
        stop.stop_if_requested("before any batch started")
        devices, mode, resources = plan_run(cfg, stages, ray.cluster_resources(), nodes)
        summary.mode = mode
        for line in plan_lines(cfg, stages, devices, mode, resources):
            log(f"[prefgen] plan: {line}")
        ray.data.DataContext.get_current().max_errored_blocks = -1  # failed batches: see below
        build = phased_dataset if mode == "phased" else streaming_dataset
        placement = PlacementWatch({s.label: replica_needs(s.model.engine, devices[s.name]) for s in stages},
                                   cfg.ray.placement_timeout_s, lambda: alive_nodes(ray))
        placement.rows_done = lambda: len(state.done_ids)

        progress.phase = "waiting for the first batch"
        progress.roles, progress.rows_todo = [r for s in stages for r in s.roles], len(todo)
        watch(progress)
        # the work inside the stages, read from their stats files while the batches go (report/progress.py)
        watcher = StageWatcher(lambda: attempt_stats(state), progress, watch).start()

        def dataset_reports(rows):  # runs in `watched`'s thread: a phased build runs its phases here
            ds = build(ray, cfg, rows, stages, devices, state.store, state.token, log, placement, stop)
            for row in ds.iter_rows():
                yield json.loads(row["report"])

        def checks():
            placement.check()
            stop.check()

        def reports(rows):
            for report in until_stopped(watched(dataset_reports(rows), checks, poll_s=0.2), stop):
                yield report
                if "ids" in report:  # committed by now
                    progress.add_batch(report, time.monotonic())
                    watch(progress)

        try:
            done, failed = commit_rounds(state, reports, todo, cfg.ray.max_batch_retries, log)
        except Exception as exc:
            error = start_failure(exc, attempt_stats(state), {s.name: s.label for s in stages},
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
        if session_dir:  # the engine actors stop their engines as they exit: a Ray we started waits for them
            left = wait_for_engine_actors(session_dir)
            if left:
                log(f"[prefgen] warning: engine processes still running {ACTORS_EXIT_WAIT_S:.0f} s after the "
                    f"last batch (killed with this Ray): {left}")
    return attempt_commits


