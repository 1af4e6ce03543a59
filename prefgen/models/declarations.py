"""How models are declared: one entry per model under `models:`, with its kind, its source and
the settings of its engine (placement included), and the sampling settings a role asks with.

A kind is one class in the `ModelSpec` union, told apart by `kind`: `vllm` (a chat model in a
vLLM engine inside the job), `reward_model` (a sequence-classification model scoring
responses) and `endpoint` (a chat model behind an OpenAI-compatible HTTP API, `engines/endpoint.py`). Roles (`roles/<kind>/config.py`) refer to these declarations by name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from prefgen.models.adapters import AdapterSpec, check_adapters
from prefgen.models.embedded import EMBEDDED_MODELS, EMBEDDED_SCHEME, is_embedded

DEFAULT_MODEL = EMBEDDED_SCHEME + "SmolLM2-135M-Instruct"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# Names that end up in ids and file names (models, generators, judges): `<row>/<generator>/<k>`,
# `judge:<name>`, `_stats/<model>-*.json`. No '/', ':', '#', spaces or other punctuation.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise ValueError(f"a {what} name is 1 to 64 letters, digits, '.', '_' or '-' (ASCII), starting with a "
                         f"letter or digit, as it is used in ids and file names; got {value!r}")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class EngineConfig(Strict):
    """How one vLLM engine is built and placed; one engine per replica."""

    dtype: str = Field(
        "auto",
        description="Weights dtype (bfloat16, float16, float32, or auto). auto: the checkpoint's own on a GPU; on a "
        "CPU bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX), else float32, which such CPUs run "
        "about twice as fast.",
    )
    max_model_len: int = Field(4096, gt=0, description="Context length; longer prompts are rejected before the engine.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica (tensor parallelism, one node).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    enforce_eager: bool = Field(True, description="Skip CUDA graph capture: faster start, slower decode.")
    replicas: int | tuple[int, int] = Field(
        1,
        description="Engine actors serving this model's stage: a number, or [min, max] for a pool that "
        "grows with the work (the autoscaler adds nodes for it).",
    )
    gpus_per_replica: float | None = Field(
        None,
        gt=0,
        description="GPUs one replica holds; none: tensor_parallel_size. Below 1 (e.g. 0.5) shares a GPU "
        "with another engine; gpu_memory_utilization must then fit the share.",
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto: GPU if the Ray cluster has GPUs, else vLLM's CPU build."
    )
    accelerator_type: str | None = Field(
        None,
        description="GPU model every replica must land on, as Ray names it (A10G, L4, A100, H100, ...); "
        "none: any GPU. GPU stages only.",
    )
    cpus_per_replica: float = Field(1.0, gt=0, description="Logical Ray CPUs each engine actor holds.")
    cpu_kv_cache_gib: float = Field(2.0, gt=0, description="KV cache size of an engine on the CPU build, GiB (passed as kv_cache_memory_bytes).")
    cpu_threads: int | None = Field(
        None,
        gt=0,
        description="Threads the CPU build computes with; none: OMP_NUM_THREADS of the driver's environment if set, "
        "else every core of the node the engine runs on (Ray's own default would be cpus_per_replica).",
    )
    batch_size: int = Field(16, ge=1, description="Instructions per batch sent to one engine actor.")
    batches_in_flight: int = Field(
        4,
        ge=1,
        description="Batches one engine actor works on at once; their requests share the engine's queue, so "
        "it does not drain at the end of each batch. batch_size x batches_in_flight should cover the "
        "engine's max_num_seqs.",
    )
    seed: int | None = Field(
        None,
        description="Seeds the engine once (vLLM's CPU build rejects per-request seeds).",
    )
    extra: dict = Field(default_factory=dict, description="Further keyword arguments for vllm.LLM.")

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        if self.accelerator_type and self.device == "cpu":
            raise ValueError(f"accelerator_type {self.accelerator_type!r} needs device gpu or auto, not cpu")
        low, high = self.replica_range
        if not 1 <= low <= high:
            raise ValueError(f"replicas: {self.replicas!r} must be a number >= 1 or [min, max] with 1 <= min <= max")
        share = self.gpus_per_replica
        if share is not None:
            if share < 1 and self.tensor_parallel_size > 1:
                raise ValueError("gpus_per_replica: a fraction of a GPU holds one rank; tensor_parallel_size must be 1")
            if share >= 1 and share != self.tensor_parallel_size:
                raise ValueError(f"gpus_per_replica: {share:g} whole GPUs must equal tensor_parallel_size "
                                 f"({self.tensor_parallel_size})")
            if share < 1 and self.gpu_memory_utilization > share + 1e-9:
                raise ValueError(f"gpu_memory_utilization: {self.gpu_memory_utilization:g} of the GPU's memory does "
                                 f"not fit a replica holding {share:g} of it; set it to at most {share:g}")
        return self

    @property
    def replica_range(self) -> tuple[int, int]:
        return (self.replicas, self.replicas) if isinstance(self.replicas, int) else tuple(self.replicas)


# Every engine key is on one side, decided here and nowhere else (`digest.py` reads these):
# - placement: where an engine runs, how many, how big and how fast; a killed run may resume with
#   other values (more replicas, another GPU type, a bigger batch). They change no prompt, no
#   sampling setting and no weight; a sampled answer differs between runs anyway.
# - output: what the model computes, so what it writes; a resume with other values is refused.
#   `dtype` and `seed` change the numbers, `max_model_len` which prompts are rejected as too long,
#   and `extra` may hold any vLLM argument (quantization, a chat template...), so all of it counts.
ENGINE_PLACEMENT_KEYS = frozenset({
    "tensor_parallel_size", "gpu_memory_utilization", "enforce_eager", "replicas", "gpus_per_replica", "device",
    "accelerator_type", "cpus_per_replica", "cpu_kv_cache_gib", "cpu_threads", "batch_size", "batches_in_flight",
})
ENGINE_OUTPUT_KEYS = frozenset({"dtype", "max_model_len", "seed", "extra"})
_unsorted = set(EngineConfig.model_fields) ^ (ENGINE_PLACEMENT_KEYS | ENGINE_OUTPUT_KEYS)
if _unsorted or ENGINE_PLACEMENT_KEYS & ENGINE_OUTPUT_KEYS:  # a new engine key must be put on one side
    raise AssertionError(f"engine keys not sorted into placement or output: {sorted(_unsorted)}")


class SamplingConfig(Strict):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, gt=0)
    repetition_penalty: float = Field(
        1.0,
        gt=0,
        description="vLLM's repetition penalty: above 1 makes tokens already in the prompt or the answer less "
        "likely, which stops a small model looping on a phrase until max_tokens; 1.0 is off. Endpoint "
        "models send it as the extra body field `repetition_penalty` (vLLM's OpenAI server takes it), "
        "only when it is not 1.0.",
    )


def check_source(value: str) -> str:
    """A model source: an embedded:// model, a local folder (made absolute), or a hub id."""
    if is_embedded(value):
        name = value[len(EMBEDDED_SCHEME):]
        if name not in EMBEDDED_MODELS:
            raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
        return value
    path = Path(value).expanduser()
    if path.is_dir():
        return str(path)
    looks_like_path = value.startswith(("/", ".", "~")) or value.count("/") != 1
    if looks_like_path or not _HUB_ID.match(value):
        raise ValueError(f"model path {value!r} does not exist (and is not a hub id like 'org/name')")
    return value


class VllmModel(Strict):
    """A model served by vLLM engines inside the job: declared once, used by any number of roles.

    Roles on one model with the same engine settings share one engine (one per replica)."""

    kind: Literal["vllm"] = Field("vllm", description="How the model is served: vllm (an engine in the job).")
    source: str = Field(DEFAULT_MODEL, description="Local folder, Hugging Face hub id, or embedded://NAME.")
    engine: EngineConfig = Field(default_factory=EngineConfig)
    adapters: dict[str, AdapterSpec] = Field(
        default_factory=dict,
        description="LoRA adapters served on this model's engine, by name: a folder, or {path, rank}. A role "
        "names one with `adapter:`; all share the one engine (models/adapters.py).",
    )

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: str) -> str:
        return check_source(value)

    @model_validator(mode="after")
    def _adapters_fit(self) -> VllmModel:
        for name in self.adapters:
            check_name(name, "adapter")
        if self.adapters:
            check_adapters(self.source, self.adapters)
        return self

    def engine_key(self) -> str:
        """What makes two declarations one engine: the source and every engine setting."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


JURY_SCALE = (1.0, 5.0)  # a reward score beside other judges is mapped onto this range, per row


class _ServesNoAdapters(Strict):
    """A model kind that cannot serve LoRA adapters: `adapters:` on it is refused, saying why."""

    @model_validator(mode="before")
    @classmethod
    def _no_adapters(cls, value):
        return refuse_adapters(_model_kind(value), value)


class RewardModel(_ServesNoAdapters):
    """A sequence-classification reward model (one output label) served by vLLM's pooling runner.

    Only judges may use it: it scores each (instruction, response) with one number in its own
    units, which become the judgment's rating (see `prefgen/roles/judge/reward.py` for how scores combine)."""

    kind: Literal["reward_model"] = Field(description="reward_model: a scoring head, run by vLLM's pooling runner.")
    source: str = Field(description="Local folder or Hugging Face hub id of a *ForSequenceClassification model.")
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: str) -> str:
        if is_embedded(value):
            raise ValueError(f"{value!r} is a chat model, not a reward model")
        return check_source(value)

    def engine_key(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


class EndpointModel(_ServesNoAdapters):
    """A chat model behind an OpenAI-compatible API (a hosted API, a gateway, a vLLM server you run).

    Its stage is one CPU actor (no GPU) that holds at most `max_in_flight` requests open: the
    limit is the endpoint's as a whole (see `engines/endpoint.py`). The key is never part of the config:
    only the name of the environment variable, or the path of the file, the worker reads it from."""

    kind: Literal["endpoint"] = Field(description="endpoint: an OpenAI-compatible chat API, called over HTTP.")
    base_url: str = Field(description="The API's base URL, up to /v1 (e.g. https://api.openai.com/v1).")
    model: str = Field(description="The model name the server knows (the request's `model`).")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key, read on the worker; not the key.")
    api_key_file: str | None = Field(
        None, description="Path of a file holding the API key, read on the worker (e.g. a mounted Secret).")
    timeout_s: float = Field(120.0, gt=0, description="Seconds one HTTP request may take; a timeout is retried.")
    max_in_flight: int = Field(16, ge=1, description="Requests open at once against this endpoint, whole run.")
    retries: int = Field(5, ge=0, description="Retries of a request after 429, 5xx, a timeout or a lost connection.")
    backoff_s: float = Field(1.0, gt=0, description="First retry's wait (doubling, capped at 60 s); Retry-After wins.")
    max_failure_rate: float = Field(
        0.5, gt=0, le=1,
        description="Stop the run when more than this share of the last 20 requests failed after their retries.")
    price_prompt_per_mtok: float | None = Field(None, ge=0, description="Price per million prompt tokens.")
    price_completion_per_mtok: float | None = Field(None, ge=0, description="Price per million completion tokens.")
    batch_size: int = Field(16, ge=1, description="Instructions per batch sent to the endpoint's actor.")
    batches_in_flight: int = Field(8, ge=1, description="Batches the endpoint's actor works on at once.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_key_source(self) -> EndpointModel:
        if self.api_key_env and self.api_key_file:
            raise ValueError("api_key_env and api_key_file: give one of them, not both")
        if self.api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            raise ValueError(f"api_key_env: {self.api_key_env[:3]}... is not the name of an environment variable "
                             "(give the variable's name, never the key itself)")
        return self

    @property
    def source(self) -> str:
        """What the candidates' `model` says, and what the family check reads: the served model's name."""
        return self.model

    @property
    def engine(self) -> EngineConfig:
        """The stage's placement in the terms every stage has: one CPU actor, never a GPU."""
        return EngineConfig(device="cpu", replicas=1, batch_size=self.batch_size,
                            batches_in_flight=self.batches_in_flight, cpus_per_replica=0.25)

    def engine_key(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def why_no_adapters(kind: str) -> str:
    """Why a model of `kind` (not `vllm`) serves no LoRA adapter, and what to do instead."""
    if kind == "endpoint":
        return ("vLLM's OpenAI server takes adapters as model names (--lora-modules NAME=PATH): declare one "
                "endpoint model per adapter, its `model` the adapter's name")
    return "a reward model scores with its own head"


def refuse_adapters(kind: str, value):
    """A clear refusal of `adapters:` on a model that is not `kind: vllm` (a before-validator)."""
    if isinstance(value, dict) and "adapters" in value:
        raise ValueError(f"adapters: LoRA adapters are served on kind vllm models only; {why_no_adapters(kind)}")
    return value


def _model_kind(value) -> str:
    """The `kind` of a model declaration; a declaration without one is a vLLM model."""
    return value.get("kind", "vllm") if isinstance(value, dict) else getattr(value, "kind", "vllm")


MODEL_KINDS = ("vllm", "reward_model", "endpoint")
ModelSpec = Annotated[
    Annotated[VllmModel, Tag("vllm")] | Annotated[RewardModel, Tag("reward_model")]
    | Annotated[EndpointModel, Tag("endpoint")],
    Discriminator(_model_kind),
]
