"""The floor: the run's plan on bare engines, one engine after another, without Ray, and how a
prefgen run compares to it.

The floor is what a hand-written script gets from the very tasks prefgen runs (same prompts,
same sampling): for each stage of `plan_stages`, one engine is started, each role's task runs
once over every row (so the engine batches as wide as it can), and the engine is freed before
the next one starts. It is timed per engine start and per role. `throughput_report` sets a
prefgen run's manifest against it: pure arithmetic on two dicts, tested without an engine.

Run as a script, the floor is a process of its own, as a user's script would be, so that
`throughput.py` times it from outside as it times prefgen's CLI: interpreter start, imports
(torch, vLLM), reading the input and the exit included:

    python benchmarks/floor.py CONFIG INPUT [--limit N] [--engine prefgen] --out FLOOR.json

`--engine prefgen` runs the same on prefgen's own engine instead of vLLM's `LLM`, without Ray.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable

from prefgen.config import EngineConfig, PipelineConfig
from prefgen.engines.engine import ChatEngine, engine_dead
from prefgen.engines.step_log import StepLog, request_counts
from prefgen.engines.placement import actor_options
from prefgen.roles.plan import plan_stages
from prefgen.schema import REJECT_STAGE_ERROR, WORK_ROW, to_table
from prefgen.engines.calls import CountingEngine, check_chat_templates, new_role_stats

EngineFactory = Callable[[str, EngineConfig, str], ChatEngine]


def floor_device(engine: EngineConfig, cuda_available: bool) -> str:
    """The device of a floor engine: the configured one, or for `auto` the GPU if CUDA is there."""
    if engine.device != "auto":
        return engine.device
    return "gpu" if cuda_available else "cpu"


def child_pids() -> list[int]:
    """Processes this one started that are still alive (vLLM's engine core, its workers)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with vLLM and Ray
        import multiprocessing

        return [p.pid for p in multiprocessing.active_children()]
    return [p.pid for p in psutil.Process().children(recursive=True) if p.is_running()]


def free_engine(engine, wait_s: float = 5.0) -> list[int]:
    """Shut the engine down and drop it; return the pids of child processes still alive after.

    vLLM's V1 engine runs its core in a child process, shut down by a finalizer when the client
    is collected; shutting the client down explicitly does not wait for the collector."""
    core = getattr(getattr(getattr(engine, "llm", None), "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    del core, engine
    gc.collect()
    left = child_pids()
    deadline = time.monotonic() + wait_s
    while left and time.monotonic() < deadline:  # a child may take a moment to exit after its shutdown
        time.sleep(0.25)
        left = child_pids()
    return left


def log_steps(engine) -> StepLog | None:
    """Time the floor engine's steps and their width as `SteppedLLM` does prefgen's, by wrapping
    its `LLMEngine.step`; None where vLLM's engine core runs in a process of its own."""
    llm_engine = getattr(getattr(engine, "llm", None), "llm_engine", None)
    if llm_engine is None or request_counts(llm_engine) is None:
        return None
    log, step = StepLog(), llm_engine.step

    def timed_step():
        started = time.monotonic()
        outputs = step()
        log.record(started, time.monotonic() - started, *request_counts(llm_engine))
        return outputs

    llm_engine.step = timed_step
    return log


def _run_role(task, rows: list[dict], engine: ChatEngine) -> dict:
    """One role over every live row in one call, counted as prefgen's stage counts it."""
    stats = new_role_stats()
    live = [row for row in rows if row["reject_reason"] is None]
    counting, started = CountingEngine(engine), time.monotonic()
    if live:
        try:
            task.run(live, counting)
        except Exception as exc:  # noqa: BLE001 - recorded on the rows, as prefgen's stage does
            if engine_dead(exc):
                raise
            for row in live:
                row["reject_reason"], row["reject_detail"] = REJECT_STAGE_ERROR, f"{task.role}: {exc!r}"
    stats.update(rows=len(live), requests=counting.requests, output_tokens=counting.tokens,
                 busy_s=time.monotonic() - started, dropped=dict(task.dropped))
    return stats


def run_floor(cfg: PipelineConfig, rows: list[dict], engine_factory: EngineFactory, cuda_available: bool,
              free: Callable = free_engine, log=print) -> dict:
    """Run the plan's stages one after another on bare engines over all `rows` (work rows).

    Returns per engine (device, start, work, tokens, children left after freeing) and per role
    (rows, requests, output tokens, busy seconds, dropped outputs), in pipeline order."""
    started = time.monotonic()
    engines: dict[str, dict] = {}
    roles: dict[str, dict] = {}
    for stage in plan_stages(cfg):
        if stage.model.kind == "endpoint":  # the floor measures engines in the process, not an API's service
            raise ValueError(f"models.{stage.model_name}: the floor runs models in engines of its own; a model "
                             "of kind endpoint has no floor to compare with")
        device = floor_device(stage.model.engine, cuda_available)
        os.environ.update(actor_options(stage.model.engine, device)["runtime_env"]["env_vars"])
        t0 = time.monotonic()
        engine = engine_factory(stage.model.source, stage.model.engine, device)
        check_chat_templates(engine, stage.tasks)
        start_s = time.monotonic() - t0
        steps = log_steps(engine)
        log(f"[floor] {stage.name}: engine ready on {device} in {start_s:.1f} s")
        t0 = time.monotonic()
        for task in stage.tasks:
            roles[task.role] = {"stage": stage.name, **_run_role(task, rows, engine)}
            rs = roles[task.role]
            log(f"[floor]   {task.role}: {rs['rows']} rows, {rs['requests']} requests, "
                f"{rs['output_tokens']} tokens in {rs['busy_s']:.1f} s")
        rows = to_table(rows, WORK_ROW).to_pylist()  # as rows pass between prefgen's stages
        work_s = time.monotonic() - t0
        t0 = time.monotonic()
        left = free(engine)
        del engine
        engines[stage.name] = {
            "device": device, "roles": stage.roles, "engine_start_s": start_s, "busy_s": work_s,
            "output_tokens": sum(roles[r]["output_tokens"] for r in stage.roles),
            "free_s": time.monotonic() - t0, "children_after_free": len(left),
            **({"engine_steps": steps.summary()} if steps else {}),
        }
        if left:
            log(f"[floor] warning: {len(left)} child process(es) still alive after freeing {stage.name}: {left}")
    return {"engines": engines, "roles": roles, "rows": len(rows), "wall_s": time.monotonic() - started,
            "rejected_rows": sum(r["reject_reason"] is not None for r in rows)}


# --- comparison ---------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b > 0 else None


def _per_hour(rows: int, seconds: float) -> float | None:
    return round(rows * 3600 / seconds, 1) if seconds > 0 else None


def role_table(roles: dict[str, dict]) -> dict[str, dict]:
    """Per role: stage, rows, requests, busy time, output tokens and tokens/s of busy time."""
    return {
        role: {"stage": rs["stage"], "rows": rs["rows"], "requests": rs["requests"],
               "busy_s": round(rs["busy_s"], 2), "output_tokens": rs["output_tokens"],
               "tokens_per_s": round(rs["output_tokens"] / rs["busy_s"], 1) if rs["busy_s"] > 0 else None}
        for role, rs in roles.items()
    }


def engine_table(engines: dict[str, dict]) -> dict[str, dict]:
    """Per engine, its figures with seconds rounded to hundredths."""
    return {name: {k: round(v, 2) if isinstance(v, float) else v for k, v in e.items()} for name, e in engines.items()}


def prefgen_engine_start(manifest: dict) -> tuple[float, str]:
    """Seconds of prefgen's wall time spent starting engines, and how they add up: phased starts
    one stage after another (sum); streaming starts every stage's engines at once (max)."""
    starts = [st["engine_start_s"] for st in manifest["stages"].values()]
    if manifest.get("mode") == "phased":
        return sum(starts), "sum"
    return max(starts, default=0.0), "max"


def throughput_report(manifest: dict, outside_wall_s: float, floor: dict) -> dict:
    """prefgen's run (its manifest, and its wall seen from outside) against the floor.

    The ratios take prefgen's own wall (the manifest's, from config loaded to manifest written,
    Ray start included) against the floor's engine starts plus role work; without start-up,
    prefgen's wall less its engine start against the floor's role work alone. Where the floor ran
    as a process of its own (`process_wall_s`, timed from outside), `process_wall` sets both
    processes' walls, start to exit, side by side."""
    p_wall = manifest["wall_seconds"]
    p_start, rule = prefgen_engine_start(manifest)
    p_rows = manifest["input_rows"] - manifest.get("rows_skipped", 0)
    f_starts = [e["engine_start_s"] for e in floor["engines"].values()]
    f_start = sum(f_starts)
    f_work = sum(rs["busy_s"] for rs in floor["roles"].values())
    f_tokens = sum(rs["output_tokens"] for rs in floor["roles"].values())
    alone = f_starts[0] if f_starts else 0.0
    prefgen = {
        "mode": manifest.get("mode", ""),
        "wall_s": round(outside_wall_s, 2),
        "pipeline_wall_s": round(p_wall, 2),
        "engine_start_s": round(p_start, 2),
        "engine_start_rule": rule,
        "engines": engine_table({n: {k: st[k] for k in ("replicas", "engine_start_s", "busy_s", "output_tokens",
                                                        "engine_steps") if k in st}
                                 for n, st in manifest["stages"].items()}),
        "roles": role_table(manifest["roles"]),
        "rows": p_rows,
        "pairs": manifest["pairs"],
        "output_tokens": manifest["output_tokens"],
        "tokens_per_s_wall": round(manifest["output_tokens"] / p_wall, 1) if p_wall > 0 else None,
        "rows_per_hour": _per_hour(p_rows, p_wall),
    }
    floor_out = {
        "wall_s": round(floor["wall_s"], 2),
        "engine_start_s": round(f_start, 2),
        "work_s": round(f_work, 2),
        "engines": engine_table(floor["engines"]),
        "roles": role_table(floor["roles"]),
        "rows": floor["rows"],
        "output_tokens": f_tokens,
        "tokens_per_s_start_and_work": round(f_tokens / (f_start + f_work), 1) if f_start + f_work > 0 else None,
        "rows_per_hour": _per_hour(floor["rows"], f_start + f_work),
        "engine_start_alone_s": round(alone, 2),
        **({"process_wall_s": round(floor["process_wall_s"], 2)} if "process_wall_s" in floor else {}),
    }
    ratios = {
        "wall_with_start": _ratio(p_wall, f_start + f_work),
        "wall_without_start": _ratio(p_wall - p_start, f_work),
        "engine_start_over_alone": _ratio(p_start, alone),
        "engine_start_over_alone_by_engine": {n: _ratio(st["engine_start_s"], alone)
                                              for n, st in manifest["stages"].items()},
        "output_tokens": _ratio(manifest["output_tokens"], f_tokens),
        **({"process_wall": _ratio(outside_wall_s, floor["process_wall_s"])} if "process_wall_s" in floor else {}),
    }
    return {"prefgen": prefgen, "floor": floor_out, "prefgen_over_floor": ratios}


def prefgen_engine(source: str, engine: EngineConfig, device: str):
    """prefgen's own engine (`AsyncVllmEngine`: `SteppedLLM` on the CPU build) behind the blocking
    `chat` the floor calls, fed through an event loop of its own as `ModelStage` feeds it: the
    floor's procedure on prefgen's engine without Ray, to tell the engine's cost from Ray's."""
    import asyncio
    import threading

    from prefgen.engines.calls import LoopEngine
    from prefgen.engines.engine import AsyncVllmEngine

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="floor-loop", daemon=True).start()
    inner = AsyncVllmEngine(source, engine, device)
    blocking = LoopEngine(inner, loop)
    blocking.tokenizer, blocking.shutdown = inner.tokenizer, inner.shutdown
    return blocking


def main() -> None:
    """The floor as a process of its own: its result (`run_floor`) written to `--out`."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="the floor: the config's plan on bare vLLM engines, no Ray")
    parser.add_argument("config", help="YAML config, or `default` for the embedded default")
    parser.add_argument("input", help="instructions file (JSONL, Parquet, CSV) or datasets folder")
    parser.add_argument("--limit", type=int, help="first N instructions only")
    parser.add_argument("--engine", choices=("llm", "prefgen"), default="llm",
                        help="vLLM's `LLM` (the floor), or prefgen's own engine without Ray (`prefgen_engine`)")
    parser.add_argument("--out", required=True, help="where to write the floor's figures (JSON)")
    args = parser.parse_args()

    import torch

    from common import bench_config
    from prefgen.engines.engine import VllmEngine
    from prefgen.input.read import read_instructions

    cfg = bench_config(args.config, args.input, args.limit)
    rows = read_instructions(cfg.input).rows
    print(f"[floor] over {len(rows)} rows, engine: {args.engine}", flush=True)
    factory = VllmEngine if args.engine == "llm" else prefgen_engine
    free = free_engine if args.engine == "llm" else lambda engine: engine.shutdown() or []
    result = run_floor(cfg, rows, factory, torch.cuda.is_available(), free=free)
    with open(args.out, "w") as f:
        json.dump({"engine": args.engine, **result}, f, indent=1)


if __name__ == "__main__":  # vLLM may start processes of its own, which re-import this file
    main()
