"""vLLM engines: the one interface the tasks call, and its implementations on vLLM.

`ChatEngine` takes a batch of conversations, each with its own sampling settings, `n` and
optional JSON schema, and returns the completions with their finish reasons. `AsyncVllmEngine`
implements it as a coroutine on vLLM's `AsyncLLM` (what the pipeline runs: calls of several
batches share the engine's queue), or, on the CPU build with the model in the engine core, on
`stepped.SteppedLLM` (the same calls, the engine core in this process); `VllmEngine` on the
blocking `vllm.LLM` (one call at a time, kept for benchmarks). Both run on the CPU build on a laptop and the CUDA build on a GPU node.
Each prompt is templated and tokenized once: its length is checked on the ids, which then go
to vLLM as they are. Tests of the logic around the engine may use a scripted engine, but the
pipeline always runs the real one.
The engine's arguments come from `arguments.py`, placement from `placement.py`, the Ray stage
that holds an engine is in `stage.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
from dataclasses import dataclass, field
from typing import Protocol

from prefgen.config import EngineConfig, SamplingConfig
from prefgen.engines.arguments import engine_kwargs, in_engine_core, use_cpu_threads
from prefgen.prompts import Message


@dataclass
class Request:
    """One conversation to complete `n` times with its own sampling settings.

    Sampling travels with the request, so one engine serves every role its model plays."""

    messages: list[Message]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    n: int = 1
    json_schema: dict | None = None
    adapter: str | None = None  # a LoRA adapter of the engine's model (its name under `adapters:`); none: the base


@dataclass
class Result:
    texts: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)  # per text: "stop", or "length" if cut off
    tokens: int = 0
    error: str | None = None  # set instead of texts when the prompt does not fit (too long for the context)
    failed: str | None = None  # set instead of texts when an endpoint could not serve the request (HTTP status)


class ChatEngine(Protocol):
    def chat(self, requests: list[Request]) -> list[Result]: ...


class AsyncChatEngine(Protocol):
    async def chat(self, requests: list[Request]) -> list[Result]: ...


def prompt_ids(tokenizer, messages: list[Message]) -> list[int]:
    """The conversation's prompt as token ids, chat template and generation prompt applied."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in newer transformers
        ids = ids["input_ids"]
    return list(ids)


class TemplateRefused(RuntimeError):
    """A model's chat template refuses the conversation a role sends (Gemma's raises on a system message)."""


def template_refusal(tokenizer, messages: list[Message]) -> str | None:
    """Why the tokenizer's chat template cannot render `messages`, or None if it can. Roles try
    theirs once at engine start (`ModelStage`), so a refusal stops the run instead of every row."""
    try:
        prompt_ids(tokenizer, messages)
    except Exception as exc:  # noqa: BLE001 - a template raises whatever its author chose
        return f"{type(exc).__name__}: {exc}"
    return None


def length_error(prompt_tokens: int, max_model_len: int, max_tokens: int) -> str | None:
    """Why a prompt cannot run (it and `max_tokens` exceed the context), or None if it fits."""
    budget = max_model_len - max_tokens
    if prompt_tokens <= budget:
        return None
    return (f"prompt has {prompt_tokens} tokens; max_model_len {max_model_len} "
            f"leaves {budget} after max_tokens {max_tokens}")


def sampling_params(request: Request):
    """vLLM's SamplingParams for a request; every completion returned at once, when all are done."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

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
        repetition_penalty=s.repetition_penalty,
        structured_outputs=structured,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def batch_usage_context():
    """The usage context the pipeline's engine is built for: offline batch work, as `vllm.LLM`'s.
    vLLM sizes its scheduler by it: `LLM`'s lets a step hold 256 sequences and 4,096 tokens on a
    CPU (1,024 and 16,384 on a GPU of 70 GB or more), an engine's own default 128 and 2,048: half
    the floor's limits, and on 48 rows new prompts waited a third of the time for the token budget
    (README, Benchmarks). A config's `extra: {max_num_seqs: ...}` still sets it."""
    from vllm.usage.usage_lib import UsageContext

    return UsageContext.LLM_CLASS


def token_prompt(ids: list[int]):
    """A prompt vLLM takes as it is, without applying a template or tokenizing again."""
    try:
        from vllm.inputs.engine import tokens_input
    except ImportError:  # pragma: no cover - other vLLM layouts
        return {"prompt_token_ids": ids}
    return tokens_input(ids)


def lora_requests(adapters: dict | None) -> dict:
    """vLLM's `LoRARequest` per adapter name (ids from 1, as vLLM wants), built once per engine."""
    if not adapters:
        return {}
    from vllm.lora.request import LoRARequest

    return {name: LoRARequest(name, i, spec.path) for i, (name, spec) in enumerate(sorted(adapters.items()), 1)}


def lora_of(loras: dict, request: Request):
    """The `LoRARequest` a request runs on (None: the base model)."""
    if request.adapter is None:
        return None
    if request.adapter not in loras:
        raise ValueError(f"adapter {request.adapter!r} is not served by this engine (it serves: "
                         f"{', '.join(loras) or 'no adapter'})")
    return loras[request.adapter]


def result_of(output) -> Result:
    """A Result from vLLM's finished RequestOutput (its n completions)."""
    return Result(
        texts=[c.text for c in output.outputs],
        finish_reasons=[c.finish_reason or "stop" for c in output.outputs],
        tokens=sum(len(c.token_ids) for c in output.outputs),
    )


def tokenized(tokenizer, requests: list[Request], max_model_len: int) -> tuple[list[Result], list[tuple[int, list[int]]]]:
    """Each prompt tokenized once: Results holding the length errors, and (index, ids) of those that fit."""
    results = [Result() for _ in requests]
    runnable = []
    for i, req in enumerate(requests):
        ids = prompt_ids(tokenizer, req.messages)
        results[i].error = length_error(len(ids), max_model_len, req.sampling.max_tokens)
        if results[i].error is None:
            runnable.append((i, ids))
    return results, runnable


class VllmEngine:
    """A resident `vllm.LLM`, one `chat` call at a time; every request brings its own sampling, `n` and schema."""

    def __init__(self, source: str, eng: EngineConfig, device: str, adapters: dict | None = None):
        from vllm import LLM

        self.engine_cfg = eng
        use_cpu_threads(device)
        self.llm = LLM(**engine_kwargs(source, eng, device, adapters))
        self.loras = lora_requests(adapters)
        self.tokenizer = self.llm.get_tokenizer()

    def prompt_tokens(self, messages: list[Message]) -> int:
        return len(prompt_ids(self.tokenizer, messages))

    def chat(self, requests: list[Request]) -> list[Result]:
        results, runnable = tokenized(self.tokenizer, requests, self.engine_cfg.max_model_len)
        if runnable:
            outputs = self.llm.generate([token_prompt(ids) for _, ids in runnable],
                                        [sampling_params(requests[i]) for i, _ in runnable], use_tqdm=False,
                                        lora_request=[lora_of(self.loras, requests[i]) for i, _ in runnable])
            for (i, _), out in zip(runnable, outputs):
                results[i] = result_of(out)
        return results


class AsyncVllmEngine:
    """A resident vLLM `AsyncLLM` (or `SteppedLLM`): every `chat` call's requests join the engine's one queue.

    Callers (several batches of an actor, a judge's retries) await `chat` concurrently in the
    actor's event loop, so vLLM's continuous batching runs across their boundaries and the
    engine does not drain at the end of each call."""

    def __init__(self, source: str, eng: EngineConfig, device: str, adapters: dict | None = None):
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.engine_cfg = eng
        use_cpu_threads(device)
        kwargs = {"disable_log_stats": True, **engine_kwargs(source, eng, device, adapters)}
        batch_work = batch_usage_context()
        if in_engine_core(kwargs):  # the CPU build's one rank: no engine-core process to spawn (stepped.py)
            from vllm import EngineArgs

            from prefgen.engines.stepped import SteppedLLM

            self.llm = SteppedLLM.from_engine_args(EngineArgs(**kwargs), batch_work)
        else:
            self.llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs), usage_context=batch_work)
        self.loras = lora_requests(adapters)
        self.tokenizer = self.llm.get_tokenizer()
        self._ids = itertools.count()
        self._tokenizer_lock = threading.Lock()

    def _tokenized(self, requests: list[Request]):
        with self._tokenizer_lock:  # one caller at a time: a fast tokenizer is not to be shared across threads
            return tokenized(self.tokenizer, requests, self.engine_cfg.max_model_len)

    async def _complete(self, ids: list[int], request: Request) -> Result:
        final = None
        async for out in self.llm.generate(token_prompt(ids), sampling_params(request), f"prefgen-{next(self._ids)}",
                                           lora_request=lora_of(self.loras, request)):
            final = out
        if final is None:
            raise RuntimeError("vLLM ended a request without output")
        return result_of(final)

    async def chat(self, requests: list[Request]) -> list[Result]:
        # Templating and tokenizing is CPU work: off the event loop, which feeds the engine.
        results, runnable = await asyncio.to_thread(self._tokenized, requests)
        pending = [asyncio.ensure_future(self._complete(ids, requests[i])) for i, ids in runnable]
        try:
            outputs = await asyncio.gather(*pending)
        except BaseException:  # one request failed: abort the others instead of leaving them running
            for task in pending:
                task.cancel()
            raise
        for (i, _), result in zip(runnable, outputs):
            results[i] = result
        return results

    def scheduler_limits(self) -> dict:
        """How wide a step of this engine may be: sequences and tokens (vLLM's scheduler config)."""
        sched = self.llm.vllm_config.scheduler_config
        return {"max_num_seqs": sched.max_num_seqs, "max_num_batched_tokens": sched.max_num_batched_tokens}

    def step_summary(self) -> dict | None:
        """The engine's steps (`step_log.py`) where they are seen from here (`SteppedLLM`); None
        where `AsyncLLM`'s engine core steps in a process of its own."""
        steps = getattr(self.llm, "steps", None)
        return steps.summary() if steps is not None else None

    def shutdown(self, timeout_s: float = 15.0) -> None:
        """Stop the engine core and its worker in order (`engines/exit.py`). vLLM kills the engine
        core after `timeout_s`; its default, 5 s, killed one that had stopped its worker in 3 s and
        was still exiting (2 cores, a run's last batch just done)."""
        self.llm.shutdown(timeout=timeout_s)


def engine_dead(exc: Exception) -> bool:
    """Whether vLLM's engine died (the actor must be replaced); without vLLM loaded it cannot have."""
    exceptions = sys.modules.get("vllm.v1.engine.exceptions")
    if exceptions is None:
        return "EngineDead" in type(exc).__name__
    return isinstance(exc, exceptions.EngineDeadError)
