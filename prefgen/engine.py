"""vLLM engines: the one interface the tasks call, and its implementation on `vllm.LLM`.

`ChatEngine` takes a batch of conversations, each with its own sampling settings, `n` and
optional JSON schema, and returns the completions with their finish reasons. `VllmEngine`
implements it on `vllm.LLM` (the CPU build on a laptop, the CUDA build on a GPU node); tests of
the logic around it may use a scripted engine, but the pipeline always runs the real one.
Placement lives in `placement.py`, the Ray stage that holds an engine in `stage.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from prefgen.config import EngineConfig, SamplingConfig
from prefgen.prompts import Message


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


def engine_dead(exc: Exception) -> bool:
    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:  # pragma: no cover - other vLLM layouts
        return "EngineDead" in type(exc).__name__
    return isinstance(exc, EngineDeadError)
