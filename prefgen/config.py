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
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from prefgen.embedded import EMBEDDED_MODELS, EMBEDDED_SCHEME, is_embedded
from prefgen.family import self_preference_warnings
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
    cpu_kv_cache_gib: float = Field(2.0, gt=0, description="KV cache size on the CPU build (VLLM_CPU_KVCACHE_SPACE).")
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


class SamplingConfig(Strict):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, gt=0)


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

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: str) -> str:
        return check_source(value)

    def engine_key(self) -> str:
        """What makes two declarations one engine: the source and every engine setting."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


class RewardModel(Strict):
    """A sequence-classification reward model (one output label) served by vLLM's pooling runner.

    Only judges may use it: it scores each (instruction, response) with one number in its own
    units, which become the judgment's rating (see `prefgen/reward.py` for how scores combine)."""

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


def _model_kind(value) -> str:
    """The `kind` of a model declaration; a declaration without one is a vLLM model."""
    return value.get("kind", "vllm") if isinstance(value, dict) else getattr(value, "kind", "vllm")


MODEL_KINDS = ("vllm", "reward_model")
ModelSpec = Annotated[
    Annotated[VllmModel, Tag("vllm")] | Annotated[RewardModel, Tag("reward_model")],
    Discriminator(_model_kind),
]


class RoleConfig(Strict):
    """What every role (generator, evolver, judge, juror) has: a model and its own sampling."""

    model: str | None = Field(
        None,
        description="Name of a model under `models:`; or, as shorthand, a source (local folder, hub id, "
        "embedded://NAME) with this role's `engine:`. None: the only declared model, else the embedded default.",
    )
    engine: EngineConfig | None = Field(
        None, description="Shorthand only (model given as a source): the engine settings of that model."
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class GeneratorConfig(RoleConfig):
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


class EvolutionConfig(RoleConfig):
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


class JudgeConfig(RoleConfig):
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
    permutations: int | Literal["balanced"] = Field(
        2,
        description="Orders judged and averaged (joint mode), chosen so position effects cancel: 1 = one seeded "
        "shuffle (position bias not cancelled), 2 = a seeded "
        "shuffle and its reverse, k = such mirrored pairs (an odd k ends with one unmirrored shuffle); "
        "balanced = every rotation of the shuffle (one order per candidate, each shown once in every position).",
    )
    rationales: bool = Field(True, description="Ask for a rationale with each rating.")
    guided: bool = Field(True, description="Constrain the answer to a JSON schema (vLLM structured outputs).")
    max_retries: int = Field(2, ge=0, description="Re-asks for an answer that does not validate.")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=512))

    @field_validator("permutations", mode="before")
    @classmethod
    def _orders(cls, value):
        if value == "balanced":
            return value
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        if isinstance(value, str) and value.strip().isdigit():
            number = int(value)
        if number is None or not 1 <= number <= 8:
            raise ValueError(f"{value!r} is neither a number of orders from 1 to 8 nor 'balanced'")
        return number
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
        if self.mode == "single":
            if "permutations" in self.model_fields_set and self.permutations != 1:
                raise ValueError("permutations: shuffled orders apply to mode 'joint' only")
            self.permutations = 1  # one candidate per call: there is no order to cancel
        return self


class PairingConfig(Strict):
    strategy: Literal["best_vs_worst", "best_vs_random_lower", "all_pairs"] = "best_vs_worst"
    min_margin: float = Field(1.0, gt=0, description="Smallest chosen-minus-rejected rating that pairs.")
    length_matched: bool = Field(
        False, description="Among qualifying rejected candidates prefer the one closest in length to the chosen."
    )
    allow_truncated_chosen: bool = Field(
        False, description="Let a candidate cut off at max_tokens be the chosen one (it may always be the rejected)."
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


# Judge keys a reward model has no use for: it reads no prompt and writes no answer.
REWARD_IGNORED_KEYS = ("rubrics", "aspects", "combine", "mode", "permutations", "rationales", "guided", "max_retries",
                       "sampling")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*$")


class PipelineConfig(Strict):
    input: InputConfig = Field(default_factory=InputConfig)
    models: dict[str, ModelSpec] = Field(
        default_factory=dict,
        description="Models declared once by name; roles refer to them by name. Roles that give a "
        "source instead are added here under a derived name.",
    )
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
    # The laptop default judges one order: cheap, and its summary says when the small judge rates by
    # position. A judge you configure gets JudgeConfig's default, a shuffle and its reverse.
    judge: JudgeConfig = Field(default_factory=lambda: JudgeConfig(permutations=1))
    jury: list[JudgeConfig] = Field(
        default_factory=list, description="Further judges; their ratings are averaged with the judge's."
    )
    pairing: PairingConfig = Field(default_factory=PairingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    seed: int = Field(0, description="Run seed for every seeded choice (evolution criteria, pairing).")

    @model_validator(mode="after")
    def _resolve_models(self) -> PipelineConfig:
        """Point every role at a declared model; shorthand sources become declarations."""
        for name in self.models:
            if not _MODEL_NAME.match(name):
                raise ValueError(f"models.{name}: a model name is letters, digits, '.', '_' or '-'")
        declared = list(self.models)
        for key, role in self.roles_by_key():
            role.model = self._declare(key, role, declared)
            role.engine = None
        return self

    def _declare(self, key: str, role: RoleConfig, declared: list[str]) -> str:
        if role.model in self.models:
            if role.engine is not None:
                raise ValueError(f"{key}.engine: model {role.model!r} is declared under models; "
                                 f"set its engine there (models.{role.model}.engine)")
            return role.model
        if role.model is None and role.engine is None and len(declared) == 1:
            return declared[0]
        if role.model is None and len(declared) > 1:
            raise ValueError(f"{key}.model: required, several models are declared ({', '.join(declared)})")
        try:
            spec = VllmModel(source=role.model or DEFAULT_MODEL, engine=role.engine or EngineConfig())
        except ValidationError as err:
            known = f"; declared models: {', '.join(self.models)}" if self.models else ""
            raise ValueError(f"{key}.model: {err.errors()[0]['msg'].removeprefix('Value error, ')}{known}") from None
        for name, other in self.models.items():
            if other.engine_key() == spec.engine_key():
                return name
        base = re.sub(r"[^\w.\-]", "-", spec.source.rstrip("/").rsplit("/", 1)[-1]) or "model"
        name, k = base, 1
        while name in self.models:
            k += 1
            name = f"{base}-{k}"
        self.models[name] = spec
        return name

    def roles_by_key(self) -> list[tuple[str, RoleConfig]]:
        """Every role in use, with its config key (`generators.0`, `evolution`, `judge`, `jury.1`)."""
        roles: list[tuple[str, RoleConfig]] = [(f"generators.{i}", g) for i, g in enumerate(self.generators)]
        if self.evolution.enabled:
            roles.append(("evolution", self.evolution))
        roles.append(("judge", self.judge))
        roles += [(f"jury.{i}", j) for i, j in enumerate(self.jury)]
        return roles

    def model_of(self, role: RoleConfig) -> VllmModel | RewardModel:
        return self.models[role.model]

    @model_validator(mode="after")
    def _reward_models_judge_only(self) -> PipelineConfig:
        """A reward model only judges, and the judge keys that shape LLM prompts are refused for it."""
        for key, role in self.roles_by_key():
            if not isinstance(self.model_of(role), RewardModel):
                continue
            if not isinstance(role, JudgeConfig):
                raise ValueError(f"{key}.model: {role.model!r} is a reward model; only judge and jury may use it")
            for name in REWARD_IGNORED_KEYS:
                default = JudgeConfig.model_fields[name].get_default(call_default_factory=True)
                if name in role.model_fields_set and getattr(role, name) != default:
                    raise ValueError(f"{key}.{name}: does not apply to a judge whose model ({role.model!r}) is a "
                                     "reward model (it scores each response once); remove the key")
        return self

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
        writers = [*self.generators, *([self.evolution] if self.evolution.enabled else [])]
        found = self_preference_warnings([(j.name, self.model_of(j).source) for j in self.judges],
                                         [self.model_of(r).source for r in writers])
        if (len(self.judges) == 1 and isinstance(self.model_of(self.judge), RewardModel)
                and "min_margin" not in self.pairing.model_fields_set):
            found.append(f"judge {self.judge.name!r} is a reward model: ratings are its raw scores, and "
                         f"pairing.min_margin ({self.pairing.min_margin:g}) is in those units; set it for this model")
        return found

    def digest(self) -> str:
        """A short hash of everything that shapes the output (paths and Ray placement excluded)."""
        shaping = self.model_dump(exclude={"output": True, "ray": True, "input": {"path"}, "models": True})
        # a role's model by what it is, not by the name it was declared under
        for key, role in self.roles_by_key():
            node = shaping
            for part in key.split("."):
                node = node[int(part)] if part.isdigit() else node[part]
            node["model"] = self.model_of(role).model_dump()
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc, msg = list(e["loc"]), e["msg"].removeprefix("Value error, ")
        if loc[:1] == ["models"] and len(loc) >= 3 and loc[2] in MODEL_KINDS:
            del loc[2]  # the union's tag: `models.a.source`, not `models.a.vllm.source`
        if loc[:1] == ["models"] and e["type"] == "union_tag_invalid":
            loc.append("kind")
            msg = f"unknown model kind {e['ctx']['tag']!r}; known: {', '.join(MODEL_KINDS)}"
        key = ".".join(str(p) for p in loc)
        lines.append(f"  {key}: {msg}" if key else f"  {msg}")  # checks across keys name their key
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
