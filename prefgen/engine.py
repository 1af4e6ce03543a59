"""vLLM engines, and the Ray Data stage that keeps one resident in each actor.

`ChatEngine` is the one interface the stages call: a batch of conversations in, `n` completions
per conversation out, with an optional JSON schema the answer is constrained to. `VllmEngine`
implements it on `vllm.LLM` (the CPU build on a laptop, the CUDA build on a GPU node); tests of
the logic around it may use a scripted engine, but the pipeline always runs the real one.

`ModelStage` is the callable class handed to `Dataset.map_batches`: Ray builds it once per
actor (engine start included) and then streams batches through it. What a stage does with
the engine is a *task* (generate, evolve, judge): plain objects that build prompts and read
answers, so one engine class serves every role.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from prefgen.config import EngineConfig, ModelConfig, SamplingConfig
from prefgen.prompts import Message
from prefgen.schema import REJECT_STAGE_ERROR, WORK_ROW, to_table


@dataclass
class Request:
    """One conversation to complete `n` times with its own sampling settings.

    Sampling travels with the request, so one engine serves every role its model plays."""

    messages: list[Message]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    n: int = 1
    json_schema: dict | None = None


@dataclass
class Result:
    texts: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)  # per text: "stop", or "length" if cut off
    tokens: int = 0
    error: str | None = None  # set instead of texts when the request could not run


class ChatEngine(Protocol):
    def chat(self, requests: list[Request]) -> list[Result]: ...


class VllmEngine:
    """A resident `vllm.LLM`; every request brings its own sampling, `n` and schema."""

    def __init__(self, source: str, eng: EngineConfig, device: str):
        from vllm import LLM

        from prefgen.embedded import resolve_model

        self.engine_cfg = eng
        kwargs = dict(
            model=resolve_model(source),
            dtype=eng.dtype,
            max_model_len=eng.max_model_len,
            enforce_eager=eng.enforce_eager,
            tensor_parallel_size=eng.tensor_parallel_size,
        )
        if device == "gpu":
            kwargs["gpu_memory_utilization"] = eng.gpu_memory_utilization
        if eng.seed is not None:
            kwargs["seed"] = eng.seed
        kwargs.update(eng.extra)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def prompt_tokens(self, messages: list[Message]) -> int:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return len(ids)

    @staticmethod
    def _sampling(request: Request):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        s = request.sampling
        structured = None
        if request.json_schema:
            # Without this, small models can fill max_tokens with whitespace inside the JSON.
            structured = StructuredOutputsParams(json=request.json_schema, disable_any_whitespace=True)
        return SamplingParams(
            n=request.n,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            structured_outputs=structured,
        )

    def chat(self, requests: list[Request]) -> list[Result]:
        results = [Result() for _ in requests]
        limit = self.engine_cfg.max_model_len
        runnable = []
        for i, req in enumerate(requests):
            length = self.prompt_tokens(req.messages)
            budget = limit - req.sampling.max_tokens
            if length > budget:
                results[i].error = (
                    f"prompt has {length} tokens; max_model_len {limit} "
                    f"leaves {budget} after max_tokens {req.sampling.max_tokens}"
                )
            else:
                runnable.append(i)
        if runnable:
            outputs = self.llm.chat(
                [requests[i].messages for i in runnable],
                [self._sampling(requests[i]) for i in runnable],
                use_tqdm=False,
            )
            for i, out in zip(runnable, outputs):
                results[i].texts = [c.text for c in out.outputs]
                results[i].finish_reasons = [c.finish_reason or "stop" for c in out.outputs]
                results[i].tokens = sum(len(c.token_ids) for c in out.outputs)
        return results


def _engine_dead(exc: Exception) -> bool:
    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:  # pragma: no cover - other vLLM layouts
        return "EngineDead" in type(exc).__name__
    return isinstance(exc, EngineDeadError)


# --- placement --------------------------------------------------------------------------------


def resolve_device(engine: EngineConfig, cluster_gpus: float) -> str:
    if engine.device != "auto":
        return engine.device
    return "gpu" if cluster_gpus > 0 else "cpu"


def actor_options(engine: EngineConfig, device: str) -> dict:
    """Ray resources and environment of one engine actor."""
    options: dict = {"num_cpus": engine.cpus_per_replica}
    env = {}
    if device == "gpu":
        options["num_gpus"] = engine.tensor_parallel_size
        if engine.accelerator_type:
            options["accelerator_type"] = engine.accelerator_type
        if engine.tensor_parallel_size > 1:
            env["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    else:
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{engine.cpu_kv_cache_gib:g}"
        # vLLM's automatic thread binding pins every engine of a machine to the same cores;
        # several engines on one host must float instead.
        env["VLLM_CPU_OMP_THREADS_BIND"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    options["runtime_env"] = {"env_vars": env}
    return options


# --- the Ray Data stage -------------------------------------------------------------------


class ModelStage:
    """Callable class for `map_batches`: one resident engine, one task, batches of work rows.

    After each batch the actor rewrites its own stats file under `<output>/_stats/` (engine
    start, rows, tokens, busy time, outputs the task dropped by reason); the driver sums them
    into the run summary.
    """

    def __init__(self, model_cfg: ModelConfig, device: str, task, name: str, output: str):
        from prefgen.io import STATS_DIR

        self.name, self.task, self.output = name, task, output
        self.stats_file = f"{STATS_DIR}/{name.replace(':', '-')}-{uuid.uuid4().hex[:8]}.json"
        started = time.monotonic()
        self.engine = VllmEngine(model_cfg.model, model_cfg.engine, device)
        self.stats = {"stage": name, "pid": os.getpid(), "engine_start_s": round(time.monotonic() - started, 2),
                      "ready_at": time.time(), "last_batch_at": None,
                      "batches": 0, "rows": 0, "output_tokens": 0, "busy_s": 0.0, "dropped": {}}
        print(f"[prefgen] {name}: engine ready in {self.stats['engine_start_s']:.1f} s", flush=True)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from prefgen.io import write_json

        rows = batch.to_pylist()
        live = [row for row in rows if row["reject_reason"] is None]
        before = sum(row["output_tokens"] for row in live)
        started = time.monotonic()
        try:
            if live:
                self.task.run(live, self.engine)
        except Exception as exc:  # noqa: BLE001 - any failure is recorded on the rows
            if _engine_dead(exc):
                # Exit the actor: Ray starts a new one and retries this batch there.
                print(f"[prefgen] {self.name}: engine died ({exc!r}); restarting the actor", flush=True)
                os._exit(1)
            for row in live:
                row["reject_reason"], row["reject_detail"] = REJECT_STAGE_ERROR, f"{self.name}: {exc!r}"
        tokens = sum(row["output_tokens"] for row in live) - before
        elapsed = time.monotonic() - started
        for key, value in (("batches", 1), ("rows", len(live)), ("output_tokens", tokens), ("busy_s", elapsed)):
            self.stats[key] += value
        self.stats["last_batch_at"] = time.time()
        self.stats["dropped"] = dict(getattr(self.task, "dropped", {}))  # the task counts for this actor
        write_json(self.output, self.stats_file, self.stats)
        print(
            f"[prefgen] {self.name}: {len(live)} rows, {tokens} tokens in {elapsed:.1f} s "
            f"({tokens / max(elapsed, 1e-9):.0f} tok/s)",
            flush=True,
        )
        return to_table(rows, WORK_ROW)
