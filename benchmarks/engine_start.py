"""Engine start and decoding by where vLLM's CPU build runs the model: in a worker process of its
own (vLLM's default) or inside the engine core (`uni`, what prefgen's engine actors use); there
also with that engine core in this process, stepped by a thread (`engines/stepped.py`, what
prefgen's stages run then).

Each measurement is a fresh Python process (`--one MODE`) that builds the engine from prefgen's
own arguments (`engine_kwargs` of the embedded default's engine), so the environment the mode
needs is set before vLLM is imported: the `AsyncLLM` prefgen's stages run, timed from its
constructor to ready, then a fixed batch (32 requests of 128 tokens, EOS ignored) timed to the
last token; the same for `SteppedLLM`; and the blocking `LLM` the reward model and the floor use. Modes alternate, so a
change in the machine's load hits both. Prints a table and writes
`benchmarks/results/engine_start.json`.

    python benchmarks/engine_start.py --repeats 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from common import save

MODES = {  # the environment each mode runs in (VLLM_CPU_OMP_THREADS_BIND=nobind in both, as in an actor)
    "worker_process": {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"},
    "in_engine_core": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
}
# what each mode measures: `SteppedLLM` (what prefgen's stages run when the model is in the engine
# core) needs that core in this process, so only there
PARTS = {"worker_process": ("async", "blocking"), "in_engine_core": ("async", "stepped", "blocking")}
REQUESTS, TOKENS = 32, 128


def _kwargs() -> dict:
    from prefgen.config import PipelineConfig
    from prefgen.engines.arguments import engine_kwargs

    cfg = PipelineConfig()
    return engine_kwargs(cfg.model_of(cfg.judge).source, cfg.model_of(cfg.judge).engine, "cpu")


def _prompts() -> list[str]:
    return [f"Write a short note about topic number {i}." for i in range(REQUESTS)]


def measure_async(stepped: bool = False) -> dict:
    """`AsyncLLM`, or with `stepped` prefgen's `SteppedLLM` (the engine core in this process)."""
    from vllm import AsyncEngineArgs, EngineArgs, SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

    from prefgen.engines.engine import batch_usage_context
    from prefgen.engines.stepped import SteppedLLM

    kwargs = _kwargs()
    started = time.monotonic()
    if stepped:
        llm = SteppedLLM.from_engine_args(EngineArgs(disable_log_stats=True, **kwargs), batch_usage_context())
    else:
        llm = AsyncLLM.from_engine_args(AsyncEngineArgs(disable_log_stats=True, **kwargs),
                                        usage_context=batch_usage_context())
    ready = time.monotonic()

    async def one(i: int, prompt: str) -> int:
        final = None
        params = SamplingParams(max_tokens=TOKENS, temperature=0.7, seed=1, ignore_eos=True)  # SteppedLLM sets its own
        async for out in llm.generate(prompt, params, f"bench-{i}"):
            final = out
        return len(final.outputs[0].token_ids)

    async def batch() -> int:
        return sum(await asyncio.gather(*(one(i, p) for i, p in enumerate(_prompts()))))

    tokens = asyncio.run(batch())
    done = time.monotonic()
    llm.shutdown()
    return {"executor": kwargs.get("distributed_executor_backend", "mp"), "start_s": ready - started,
            "decode_s": done - ready, "tokens": tokens}


def measure_blocking() -> dict:
    from vllm import LLM, SamplingParams

    started = time.monotonic()
    llm = LLM(**_kwargs())
    ready = time.monotonic()
    outs = llm.generate(_prompts(), SamplingParams(max_tokens=TOKENS, temperature=0.7, seed=1, ignore_eos=True),
                        use_tqdm=False)
    done = time.monotonic()
    return {"start_s": ready - started, "decode_s": done - ready,
            "tokens": sum(len(o.outputs[0].token_ids) for o in outs)}


def run_one(mode: str) -> dict:
    """One fresh process's figures for `mode` (called with --one MODE)."""
    import torch

    # `AsyncLLM` last: its engine core process is still exiting for a while after `shutdown`, and an
    # engine measured after it decoded 25% slower (380 against 526 tok/s measured alone)
    figures = {"stepped": measure_async(stepped=True)} if "stepped" in PARTS[mode] else {}
    figures |= {"blocking": measure_blocking(), "async": measure_async(), "torch_threads": torch.get_num_threads(),
                "dtype": _kwargs()["dtype"], "avx512_kernels": torch.cpu._is_avx512_supported()}
    for part in PARTS[mode]:
        f = figures[part]
        f["tokens_per_s"] = f["tokens"] / f["decode_s"]
    return figures


def spawn(mode: str) -> dict:
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "nobind", **MODES[mode]}
    done = subprocess.run([sys.executable, __file__, "--one", mode], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for mode, samples in runs.items():
        row = {}
        for part in PARTS[mode]:
            for key in ("start_s", "tokens_per_s"):
                row[f"{part}_{key}"] = round(statistics.median(s[part][key] for s in samples), 1)
        row["executor"] = samples[0]["async"]["executor"]
        out[mode] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--name", default="engine_start", help="results file name (without .json)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for i in range(args.repeats):
        for mode in MODES:
            runs[mode].append(spawn(mode))
            print(f"repeat {i + 1} {mode}: {json.dumps(runs[mode][-1])}", flush=True)
    summary = summarize(runs)
    for mode, row in summary.items():
        print(f"{mode:>15}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    from throughput import machine

    save(args.name, {"machine": machine(), "requests": REQUESTS, "max_tokens": TOKENS, "median": summary, "runs": runs})


if __name__ == "__main__":
    main()
