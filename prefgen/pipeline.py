"""Assemble the Ray Data pipeline and run it: read -> generate (per pooled model) -> evolve ->
judge -> pair and write.

Each model stage is a `map_batches` over an actor pool of `ModelStage`s, each actor holding a
resident vLLM engine; rows stream from stage to stage in blocks of one batch. The last stage
pairs a batch and writes its pairs and rejects as shards, returning one small count row, so
the driver sees progress as batches land and the output is complete when the stream ends.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from prefgen.config import ModelConfig, PipelineConfig
from prefgen.engine import ModelStage, actor_options, resolve_device
from prefgen.evolve import EvolveTask
from prefgen.generate import GenerateTask
from prefgen.io import (
    PAIRS_DIR,
    REJECTS_DIR,
    STATS_DIR,
    SUMMARY_FILE,
    absolute_uri,
    prepare_output,
    read_instructions,
    read_jsons,
    write_json,
    write_shard,
)
from prefgen.judge import JudgeTask
from prefgen.pair import split_rows
from prefgen.schema import PAIR_ROW, REJECT_ROW, WORK_ROW, to_table


@dataclass
class StagePlan:
    """One model stage: what it runs, on which model, placed how."""

    name: str
    model: ModelConfig
    task: object


def plan_stages(cfg: PipelineConfig) -> list[StagePlan]:
    stages = [
        StagePlan(f"generate:{g.name}", g, GenerateTask(g.name, g.model, g.system_prompt, g.num_completions))
        for g in cfg.generators
    ]
    ev = cfg.evolution
    if ev.enabled:
        stages.append(
            StagePlan("evolve", ev, EvolveTask(ev.model, list(ev.criteria), ev.num_evolutions, ev.keep_original, cfg.seed))
        )
    for j in cfg.judges:
        task = JudgeTask(j.name, j.model, list(j.aspects), j.mode, j.permutations, j.rationales, j.guided,
                         j.max_retries, j.combine, cfg.seed)
        stages.append(StagePlan(f"judge:{j.name}", j, task))
    return stages


def write_batch(batch: pa.Table, output: str, pairing: dict, seed: int) -> pa.Table:
    """Last stage: pair the batch, write its shards, return one row of counts."""
    rows = batch.to_pylist()
    pairs, rejects = split_rows(rows, pairing["strategy"], pairing["min_margin"], pairing["length_matched"], seed)
    write_shard(output, PAIRS_DIR, pairs, PAIR_ROW)
    write_shard(output, REJECTS_DIR, rejects, REJECT_ROW)
    candidates = [c for row in rows for c in row["candidates"]]
    counts = {
        "rows": len(rows),
        "paired_rows": len({p["id"] for p in pairs}),
        "pairs": len(pairs),
        "rejects": json.dumps(_count_reasons(rejects)),
        "output_tokens": sum(row["output_tokens"] for row in rows),
        "generated": sum(c["origin"] == "generated" for c in candidates),
        "evolved": sum(c["origin"] == "evolved" for c in candidates),
        "rated": sum(c["rating"] is not None for c in candidates),
        "unrated": sum(c["rating"] is None for c in candidates),
        **judge_counts(candidates),
    }
    return pa.Table.from_pylist([counts])


def judge_counts(candidates: list[dict]) -> dict[str, int]:
    """Judgments made, and per judge call: parse failures, retries, calls given up."""
    judgments = [j for c in candidates for j in c["judgments"] or []]
    calls = {}
    for c in candidates:
        for j in c["judgments"] or []:
            # a joint call shows several candidates: count it once, by its judge/aspect/order
            key = (c["candidate_id"].split("/")[0], j["judge"], j["aspect"], j["permutation"],
                   j["order_seed"] if j["order_seed"] is not None else c["candidate_id"])
            calls[key] = j
    failed = [j for j in calls.values() if j["error"]]
    return {
        "judgments": len(judgments),
        "not_applicable": sum(bool(j["not_applicable"]) for j in judgments),
        "judge_calls": len(calls),
        "parse_failures": sum(j["attempts"] - (0 if j["error"] else 1) for j in calls.values() if j["raw"] is not None),
        "retries": sum(j["attempts"] - 1 for j in calls.values()),
        "calls_given_up": len(failed),
    }


def _count_reasons(rejects: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rejects:
        counts[r["reason"]] = counts.get(r["reason"], 0) + 1
    return counts


CANDIDATE_COUNTS = ("generated", "evolved", "rated", "unrated")
JUDGE_COUNTS = ("judgments", "not_applicable", "judge_calls", "parse_failures", "retries", "calls_given_up")


@dataclass
class RunSummary:
    output: str
    input_rows: int = 0
    paired_rows: int = 0
    pairs: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    candidates: dict[str, int] = field(default_factory=dict)
    judging: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    output_tokens: int = 0
    stages: dict[str, dict] = field(default_factory=dict)
    wall_seconds: float = 0.0
    config_digest: str = ""

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejects.values())

    def add(self, counts: dict) -> None:
        self.paired_rows += counts["paired_rows"]
        self.pairs += counts["pairs"]
        self.output_tokens += counts["output_tokens"]
        for reason, n in json.loads(counts["rejects"]).items():
            self.rejects[reason] = self.rejects.get(reason, 0) + n
        for key in CANDIDATE_COUNTS:
            self.candidates[key] = self.candidates.get(key, 0) + counts[key]
        for key in JUDGE_COUNTS:
            self.judging[key] = self.judging.get(key, 0) + counts[key]

    def add_stage_stats(self, actor_stats: list[dict], order: list[str]) -> None:
        """Sum the per-actor stats files into one entry per stage, in pipeline order."""
        for st in actor_stats:
            agg = self.stages.setdefault(
                st["stage"], {"replicas": 0, "engine_start_s": 0.0, "rows": 0, "output_tokens": 0, "busy_s": 0.0}
            )
            agg["replicas"] += 1
            agg["engine_start_s"] = max(agg["engine_start_s"], st["engine_start_s"])
            for key in ("rows", "output_tokens", "busy_s"):
                agg[key] += st[key]
        self.stages = {name: self.stages[name] for name in order if name in self.stages}

    def lines(self) -> list[str]:
        tps = self.output_tokens / self.wall_seconds if self.wall_seconds else 0.0
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.rejects.items())) or "none"
        return [
            f"rows in:        {self.input_rows}",
            f"pairs out:      {self.pairs} (from {self.paired_rows} instructions)",
            f"rows rejected:  {self.rejected_rows} ({reasons})",
            "candidates:     " + ", ".join(f"{k}={v}" for k, v in self.candidates.items()),
            "judging:        " + ", ".join(f"{k}={v}" for k, v in self.judging.items()),
            *(f"warning:        {w}" for w in self.warnings),
            f"tokens:         {self.output_tokens} generated ({tps:.1f} tok/s over the whole run)",
            *(
                f"  {name}: engine start {st['engine_start_s']:.0f} s, {st['rows']} rows, "
                f"{st['output_tokens']} tokens in {st['busy_s']:.0f} s busy "
                f"({st['output_tokens'] / max(st['busy_s'], 1e-9):.0f} tok/s)"
                for name, st in self.stages.items()
            ),
            f"wall time:      {self.wall_seconds:.1f} s",
            f"output:         {self.output}",
        ]


def _init_ray(cfg: PipelineConfig, stages: list[StagePlan]):
    import ray

    if ray.is_initialized():
        return ray
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # A local Ray needs a logical CPU per engine actor plus one for the other tasks; on a
        # laptop that can exceed the cores, and the engines then share them.
        needed = int(sum(s.model.engine.cpus_per_replica * s.model.engine.replicas for s in stages)) + 1
        ray.init(num_cpus=cfg.ray.num_cpus or max(os.cpu_count() or 1, needed))
    return ray


def check_fit(stages: list[StagePlan], devices: dict[str, str], resources: dict) -> None:
    """Refuse up front a plan whose single replica cannot be placed on this cluster."""
    for s in stages:
        eng = s.model.engine
        if devices[s.name] == "gpu" and resources.get("GPU", 0) < eng.tensor_parallel_size:
            raise RuntimeError(
                f"{s.name}: needs {eng.tensor_parallel_size} GPU(s) per replica, the cluster has "
                f"{resources.get('GPU', 0):g}; lower tensor_parallel_size or set engine.device: cpu"
            )
        if resources.get("CPU", 0) < eng.cpus_per_replica:
            raise RuntimeError(f"{s.name}: needs {eng.cpus_per_replica:g} CPUs per replica, the cluster has {resources.get('CPU', 0):g}")


def run(cfg: PipelineConfig, log=print) -> RunSummary:
    started = time.monotonic()
    cfg = cfg.model_copy(deep=True)
    cfg.output.path = absolute_uri(cfg.output.path)
    summary = RunSummary(output=cfg.output.path, config_digest=cfg.digest())
    inputs = read_instructions(cfg.input)  # unusable input fails here, before Ray starts
    prepare_output(cfg.output.path, cfg.output.overwrite)
    summary.input_rows = inputs.total
    write_shard(cfg.output.path, REJECTS_DIR, inputs.rejects, REJECT_ROW)
    summary.add({"paired_rows": 0, "pairs": 0, "output_tokens": 0, "rejects": json.dumps(_count_reasons(inputs.rejects))}
                | dict.fromkeys(CANDIDATE_COUNTS + JUDGE_COUNTS, 0))
    summary.warnings = cfg.warnings()
    for warning in summary.warnings:
        log(f"[prefgen] warning: {warning}")
    log(f"[prefgen] {inputs.total} rows read from {inputs.source}: {len(inputs.rows)} to process, {len(inputs.rejects)} rejected")

    if inputs.rows:
        stages = plan_stages(cfg)
        ray = _init_ray(cfg, stages)
        resources = ray.cluster_resources()
        devices = {s.name: resolve_device(s.model.engine, resources.get("GPU", 0)) for s in stages}
        check_fit(stages, devices, resources)
        ds = _build_dataset(ray, cfg, inputs.rows, stages, devices)
        for counts in ds.iter_rows():
            summary.add(counts)
            done = summary.paired_rows + summary.rejected_rows
            log(
                f"[prefgen] progress: {done}/{summary.input_rows} rows done, {summary.pairs} pairs, "
                f"{summary.rejected_rows} rejected, {time.monotonic() - started:.0f} s"
            )
    summary.add_stage_stats(read_jsons(cfg.output.path, STATS_DIR), [s.name for s in plan_stages(cfg)])
    summary.wall_seconds = time.monotonic() - started
    if summary.paired_rows + summary.rejected_rows != summary.input_rows:
        raise RuntimeError(
            f"row counts do not add up: {summary.input_rows} in, {summary.paired_rows} paired + "
            f"{summary.rejected_rows} rejected"
        )
    write_json(cfg.output.path, SUMMARY_FILE, asdict(summary) | {"config": cfg.model_dump(mode="json")})
    return summary


def _build_dataset(ray, cfg: PipelineConfig, rows: list[dict], stages: list[StagePlan], devices: dict[str, str]):
    block = min(s.model.engine.batch_size for s in stages)
    table = to_table(rows, WORK_ROW)
    ds = ray.data.from_arrow([table.slice(i, block) for i in range(0, table.num_rows, block)])
    for s in stages:
        eng = s.model.engine
        ds = ds.map_batches(
            ModelStage,
            fn_constructor_kwargs={
                "model_cfg": s.model,
                "device": devices[s.name],
                "task": s.task,
                "name": s.name,
                "output": cfg.output.path,
            },
            batch_size=eng.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=eng.replicas),
            **actor_options(eng, devices[s.name]),
        )
    return ds.map_batches(
        write_batch,
        fn_kwargs={"output": cfg.output.path, "pairing": cfg.pairing.model_dump(), "seed": cfg.seed},
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=0.25,
    )
