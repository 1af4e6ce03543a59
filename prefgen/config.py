"""The run configuration: pydantic models loaded from one YAML file and validated up front.

Every model forbids unknown keys, so a typo fails before any engine starts, with the dotted
path of the bad key in the message (`generators.1.sampling.temprature: Extra inputs are not
permitted`). Defaults run as they are: `PipelineConfig()` is the embedded default (local Ray,
vLLM's CPU build, the small embedded model, the sample instructions).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from prefgen.embedded import EMBEDDED_MODELS, EMBEDDED_SCHEME, is_embedded
from prefgen.prompts import (
    ASPECT_ALIASES,
    BUILTIN_ASPECTS,
    DEFAULT_REWRITE,
    EVOL_CRITERIA,
    GENERATION_FIELDS,
    REWRITE_FIELDS,
    REWRITE_TEMPLATES,
    Rubric,
    aspect_name,
    load_criteria,
    resolve_template,
)

DEFAULT_MODEL = EMBEDDED_SCHEME + "SmolLM2-135M-Instruct"
CRITERIA = tuple(EVOL_CRITERIA)
ASPECTS = BUILTIN_ASPECTS
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the file and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class EngineConfig(Strict):
    """How one vLLM engine is built and placed; one engine per replica."""

    dtype: str = Field("bfloat16", description="Weights dtype passed to vLLM (auto, bfloat16, float16).")
    max_model_len: int = Field(2048, gt=0, description="Context length; longer prompts are rejected before the engine.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica (tensor parallelism, one node).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    enforce_eager: bool = Field(True, description="Skip CUDA graph capture: faster start, slower decode.")
    replicas: int = Field(1, ge=1, description="Engine actors serving this model's stage in parallel.")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto: GPU if the Ray cluster has GPUs, else vLLM's CPU build."
    )
    accelerator_type: str | None = Field(
        None,
        description="GPU model every replica must land on, as Ray names it (A10G, L4, A100, H100, ...); "
        "none: any GPU. GPU stages only.",
    )
    cpus_per_replica: float = Field(1.0, gt=0, description="Logical Ray CPUs each engine actor holds.")
    cpu_kv_cache_gib: float = Field(2.0, gt=0, description="KV cache size on the CPU build (VLLM_CPU_KVCACHE_SPACE).")
    batch_size: int = Field(16, ge=1, description="Instructions per batch sent to one engine actor.")
    seed: int | None = Field(
        None,
        description="Seeds the engine once (vLLM's CPU build rejects per-request seeds).",
    )
    extra: dict = Field(default_factory=dict, description="Further keyword arguments for vllm.LLM.")

    @model_validator(mode="after")
    def _accelerator_needs_gpu(self) -> EngineConfig:
        if self.accelerator_type and self.device == "cpu":
            raise ValueError(f"accelerator_type {self.accelerator_type!r} needs device gpu or auto, not cpu")
        return self


class SamplingConfig(Strict):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, gt=0)


class ModelConfig(Strict):
    """A model and how it runs: the shared part of generators, the evolver and the judge."""

    model: str = Field(DEFAULT_MODEL, description="Local folder, Hugging Face hub id, or embedded://NAME.")
    engine: EngineConfig = Field(default_factory=EngineConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
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


class GeneratorConfig(ModelConfig):
    name: str | None = Field(None, description="Label of this generator in the output; default gen<N>.")
    system_prompt: str | None = None
    num_completions: int = Field(1, ge=1, le=16, description="Completions per instruction.")
    template: str | None = Field(
        None,
        description="The user message: text holding {instruction}, or the path of a file holding it (read "
        "once, at load; relative to the working directory); none: the instruction as it is.",
    )

    @field_validator("template")
    @classmethod
    def _resolve_template(cls, value: str | None) -> str | None:
        return None if value is None else resolve_template(value, GENERATION_FIELDS)


class EvolutionConfig(ModelConfig):
    enabled: bool = True
    num_evolutions: int = Field(1, ge=1, le=8, description="Rewrite rounds; each round rewrites the last.")
    criteria: dict[str, str] = Field(
        default_factory=lambda: ["helpfulness", "relevance", "deepening", "creativity", "details"],
        description="Criteria a rewrite targets; each round draws one per candidate (seeded by its id). A list of "
        f"built-in names ({', '.join(CRITERIA)}) and {{name: text}} entries of your own, or the path of a YAML "
        "file holding such a list or a name: text mapping; loaded into name: text.",
    )
    keep_original: bool = Field(True, description="Keep the unevolved completions as candidates.")
    template: str = Field(
        DEFAULT_REWRITE,
        description=f"The rewrite prompt: a built-in name ({', '.join(REWRITE_TEMPLATES)}; mission is the course's "
        "simplified rewriter), text holding {instruction}, {response} and optionally {criterion} (the drawn "
        "criterion's text), or the path of a file holding it; loaded into the template's text.",
    )

    @field_validator("criteria", mode="before")
    @classmethod
    def _load_criteria(cls, value):
        return load_criteria(value)

    @field_validator("template")
    @classmethod
    def _resolve_template(cls, value: str) -> str:
        return resolve_template(value, REWRITE_FIELDS, REWRITE_TEMPLATES)


class JudgeConfig(ModelConfig):
    name: str = Field("judge", description="Label of this judge in the judgments.")
    rubrics: dict[str, Rubric] = Field(
        default_factory=dict,
        description="Rubrics of your own by aspect name, each {description, levels: {N: text, ..., 1: text}, "
        "not_applicable} or {file: path/to/rubric.yaml}; list the name in aspects to use it. A name of a "
        "built-in aspect replaces its rubric. Ratings of aspects on different scales are combined as they are.",
    )
    aspects: list[str] = Field(
        default_factory=lambda: ["overall"],
        min_length=1,
        description=f"Aspects, each rated in its own call: built-in ({', '.join(ASPECTS)}; overall-rating is an "
        "alias of overall; mission-overall is the course's simplified judge) or names defined under rubrics.",
    )
    combine: Literal["mean", "min"] = Field("mean", description="How aspect ratings combine into one.")
    mode: Literal["joint", "single"] = Field(
        "joint", description="joint: all candidates in one call under labels; single: one per call."
    )
    permutations: int = Field(1, ge=1, le=8, description="Shuffled orders judged and averaged (joint mode).")
    rationales: bool = Field(True, description="Ask for a rationale with each rating.")
    guided: bool = Field(True, description="Constrain the answer to a JSON schema (vLLM structured outputs).")
    max_retries: int = Field(2, ge=0, description="Re-asks for an answer that does not validate.")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=512))

    @field_validator("aspects")
    @classmethod
    def _known_aspects(cls, aspects: list[str], info: ValidationInfo) -> list[str]:
        aspects = [aspect_name(a) for a in aspects]
        if "rubrics" not in info.data:  # the rubrics failed: their error says why
            return aspects
        known = set(ASPECTS) | set(info.data["rubrics"])
        unknown = [a for a in aspects if a not in known]
        if unknown:
            raise ValueError(f"unknown aspects {unknown}; built-in: {', '.join(ASPECTS)} (alias: "
                             f"{', '.join(ASPECT_ALIASES)}), or define them under judge rubrics")
        return aspects

    @model_validator(mode="after")
    def _check(self) -> JudgeConfig:
        if len(set(self.aspects)) != len(self.aspects):
            raise ValueError(f"aspects: repeated in {self.aspects}")
        if self.mode == "single" and self.permutations > 1:
            raise ValueError("permutations: shuffled orders apply to mode 'joint' only")
        return self


class PairingConfig(Strict):
    strategy: Literal["best_vs_worst", "best_vs_random_lower", "all_pairs"] = "best_vs_worst"
    min_margin: float = Field(1.0, gt=0, description="Smallest chosen-minus-rejected rating that pairs.")
    length_matched: bool = Field(
        False, description="Among qualifying rejected candidates prefer the one closest in length to the chosen."
    )


class InputConfig(Strict):
    path: str | None = Field(None, description="JSONL, Parquet, CSV file or datasets folder; none: the bundled sample.")
    field: str = Field("instruction", description="Column holding the instruction.")
    limit: int | None = Field(None, ge=1, description="Use only the first N rows.")
    format: Literal["auto", "jsonl", "parquet", "csv", "datasets"] = "auto"


class OutputConfig(Strict):
    path: str = Field("prefgen-output", description="Directory or URI (s3://, gs://, file://) for the dataset.")
    overwrite: bool = Field(
        False, description="Start fresh: delete what is at path. Without it a run at path of the same config resumes."
    )


class RayConfig(Strict):
    address: str | None = Field(None, description="Cluster to join; none: RAY_ADDRESS or a new local Ray.")
    num_cpus: int | None = Field(None, ge=1, description="Logical CPUs of a new local Ray; none: enough for all engines.")
    expected_resources: dict[str, float] = Field(
        default_factory=dict,
        description="What an autoscaling cluster can grow to, e.g. {GPU: 6, CPU: 80}: placement checks "
        "and auto mode use it where the cluster has less at start (its workers may start at zero).",
    )
    mode: Literal["auto", "streaming", "phased"] = Field(
        "auto",
        description="streaming: every stage's engines at once; phased: one stage at a time, results "
        "materialised in between; auto: phased when the GPUs cannot hold every stage at once.",
    )
    max_batch_retries: int = Field(
        2, ge=0, description="Times a batch is retried on a new engine actor after its actor died."
    )


class PipelineConfig(Strict):
    input: InputConfig = Field(default_factory=InputConfig)
    generators: list[GeneratorConfig] = Field(
        default_factory=lambda: [
            GeneratorConfig(name="smol-focused", sampling=SamplingConfig(temperature=0.3, max_tokens=128)),
            GeneratorConfig(
                name="smol-creative",
                system_prompt="You are a creative assistant. Answer with vivid, concrete examples.",
                sampling=SamplingConfig(temperature=1.0, max_tokens=128),
            ),
        ],
        min_length=1,
    )
    evolution: EvolutionConfig = Field(default_factory=lambda: EvolutionConfig(sampling=SamplingConfig(max_tokens=160)))
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    jury: list[JudgeConfig] = Field(
        default_factory=list, description="Further judges; their ratings are averaged with the judge's."
    )
    pairing: PairingConfig = Field(default_factory=PairingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    seed: int = Field(0, description="Run seed for every seeded choice (evolution criteria, pairing).")

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineConfig:
        for i, gen in enumerate(self.generators):
            gen.name = gen.name or f"gen{i}"
        for i, juror in enumerate(self.jury):
            juror.name = f"juror{i + 1}" if juror.name == "judge" else juror.name
        for key, names in (("generators", [g.name for g in self.generators]), ("jury", [j.name for j in self.judges])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{key}: names must be unique, repeated: {dupes}")
        return self

    @property
    def judges(self) -> list[JudgeConfig]:
        return [self.judge, *self.jury]

    def warnings(self) -> list[str]:
        """Legal but risky settings, said once at the start of a run."""
        makers = {g.model for g in self.generators} | ({self.evolution.model} if self.evolution.enabled else set())
        return [
            f"judge '{j.name}' uses {j.model}, which also writes candidates: it may favour its own outputs "
            "(self-preference); use a different model or add a jury"
            for j in self.judges
            if j.model in makers
        ]

    def digest(self) -> str:
        """A short hash of everything that shapes the output (paths and Ray placement excluded)."""
        shaping = self.model_dump(exclude={"output": True, "ray": True, "input": {"path"}})
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {key}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: dict | None, source: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from None


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> PipelineConfig:
    """Read a YAML file (none: the defaults), apply dotted-key overrides, and validate."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_config(data, source)
