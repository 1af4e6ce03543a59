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

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from prefgen.models.adapters import AdapterSpec, check_adapters
from prefgen.models.embedded import EMBEDDED_MODELS, EMBEDDED_SCHEME, is_embedded
from prefgen.models.settings import EngineConfig, Strict, check_name

DEFAULT_MODEL = EMBEDDED_SCHEME + "SmolLM2-135M-Instruct"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


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
