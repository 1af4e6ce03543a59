"""The run configuration: pydantic models loaded from one YAML file and validated up front.

This module holds the whole (`PipelineConfig`: models by name, roles, pairing, input, output,
Ray) and resolves the roles' model names; model declarations live in `prefgen/models/`, each
role's config beside its task (`prefgen/roles/<kind>/config.py`), the input section in
`input.py`, reading the YAML file and naming bad keys in `load.py`, the checks across keys in
`checks.py`, and the digest in `digest.py`.

Every model forbids unknown keys, so a typo fails before any engine starts, with the dotted
path of the bad key in the message (`generators.1.sampling.temprature: Extra inputs are not
permitted`). Defaults run as they are: `PipelineConfig()` is the embedded default (local Ray,
vLLM's CPU build, the small embedded model, the sample instructions).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    ValidationError,
    model_validator,
)

from prefgen.models.declarations import (  # noqa: F401 - the config's classes, importable from here
    DEFAULT_MODEL,
    MODEL_KINDS,
    EndpointModel,
    ModelSpec,
    RewardModel,
    VllmModel,
    check_source,
)
from prefgen.models.settings import EngineConfig, SamplingConfig, Strict, check_name  # noqa: F401 - likewise
from prefgen.roles.config import RoleConfig
from prefgen.roles.evolve.config import CRITERIA, EvolutionConfig, default_evolution  # noqa: F401
from prefgen.roles.generate.config import GeneratorConfig, default_generators
from prefgen.roles.judge.config import ASPECTS, REWARD_IGNORED_KEYS, JudgeConfig  # noqa: F401
from prefgen.roles.verify.config import VerificationConfig
from prefgen.config.input import InputConfig  # noqa: F401 - importable from here
from prefgen.config.load import ConfigError, apply_overrides, format_errors, read_yaml
from prefgen.config.checks import check_adapter_of, few_candidates, never_output
from prefgen.config.digest import config_digest, digest_parts
from prefgen.config.family import self_preference_warnings


class PairingConfig(Strict):
    strategy: Literal["best_vs_worst", "best_vs_random_lower", "all_pairs"] = "best_vs_worst"
    min_margin: float = Field(1.0, gt=0, description="Smallest chosen-minus-rejected rating that pairs.")
    length_matched: bool = Field(
        False, description="Among qualifying rejected candidates prefer the one closest in length to the chosen."
    )
    allow_truncated_chosen: bool = Field(
        False, description="Let a candidate cut off at max_tokens be the chosen one (it may always be the rejected)."
    )
    verification: VerificationConfig = Field(default_factory=VerificationConfig)


class OutputConfig(Strict):
    path: str = Field("prefgen-output", description="Directory or URI (s3://, gs://, file://) for the dataset.")
    overwrite: bool = Field(
        False, description="Start fresh: delete what is at path. Without it a run at path of the same config resumes."
    )
    shared_mount: bool = Field(
        False, description="A local path that is one shared mount on every Ray node (NFS, a cluster filesystem): "
        "without it a local path on a cluster of more than one node is refused, as each node would write to "
        "its own disk. URIs (s3://, gs://) need no such key.",
    )


class RayConfig(Strict):
    address: str | None = Field(None, description="Cluster to join; none: RAY_ADDRESS or a new local Ray.")
    num_cpus: int | None = Field(None, ge=1, description="Logical CPUs of a new local Ray; none: enough for all engines.")
    dashboard: bool = Field(
        False, description="Start Ray's dashboard (http://127.0.0.1:8265) with a new local Ray. Off, a local Ray "
        "started in 7.4 s instead of 10.6 and its processes took 10.7 CPU seconds instead of 15.3 in the 45 s after, "
        "while the engine starts beside them (2-core CPU, benchmarks/local_ray.py); a joined cluster keeps its own.",
    )
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
        2, ge=0, description="Times a batch is retried on a restarted engine actor after its actor died; the "
        "batches still lost then (their node gone, say) go through a fresh dataset (new actors, on the nodes left) "
        "as many times more before their rows are rejected as worker_failed."
    )
    placement_timeout_s: float = Field(
        600.0, gt=0, description="Seconds an engine stage may wait with no node able to hold one of its replicas "
        "(its node lost, or an autoscaler that never adds one); then the run stops (exit 3) naming what is missing.",
    )
    stop_grace_s: float = Field(
        30.0, ge=0, description="After SIGTERM or Ctrl-C (SIGINT): seconds the run keeps committing the batches "
        "in flight (starting none) before it stops (exit 4, resumable); a second signal stops at once. Inside a "
        "Ray job it is cut to end 1.5 s before ray job stop's SIGKILL (RAY_JOB_STOP_WAIT_TIME_S, default 3).",
    )
    max_failed_starts: int = Field(
        3, ge=1, description="Starts in a row an engine actor may die in before its engine is ready (e.g. "
        "out of memory while loading its model); past that the run stops with an error naming the stage, "
        "and resumes when rerun. An actor that dies while working is always restarted.",
    )


class PipelineConfig(Strict):
    input: InputConfig = Field(default_factory=InputConfig)
    models: dict[str, ModelSpec] = Field(
        default_factory=dict,
        description="Models declared once by name; roles refer to them by name. Roles that give a "
        "source instead are added here under a derived name.",
    )
    generators: list[GeneratorConfig] = Field(
        default_factory=default_generators,
        description="Models that answer each prompt; none ([]): only the input's responses (input.responses) "
        "are rated.",
    )
    evolution: EvolutionConfig = Field(default_factory=default_evolution)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
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
            try:
                check_name(name, "model")
            except ValueError as err:
                raise ValueError(f"models.{name}: {err}") from None
        declared = list(self.models)
        for key, role in self.roles_by_key():
            role.model = self._declare(key, role, declared)
            role.engine = None
            check_adapter_of(key, role, role.model, self.models[role.model])
        return self

    def _declare(self, key: str, role: RoleConfig, declared: list[str]) -> str:
        if role.adapter is not None and role.model not in self.models and not (role.model is None and declared):
            raise ValueError(f"{key}.adapter: an adapter is one of a model's `adapters:`; declare the model under "
                             f"`models:` with it and name that model here")
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
        base = re.sub(r"[^A-Za-z0-9_.\-]", "-", spec.source.rstrip("/").rsplit("/", 1)[-1]) or "model"
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

    def model_of(self, role: RoleConfig) -> VllmModel | RewardModel | EndpointModel:
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

    @model_validator(mode="after")
    def _can_produce_output(self) -> PipelineConfig:
        problems = never_output(self)
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @property
    def judges(self) -> list[JudgeConfig]:
        return [self.judge, *self.jury]

    def warnings(self, provided_models: list[str] = ()) -> list[str]:
        """Legal but risky settings, said once at the start of a run. `provided_models`: the models the
        input's provided responses name, writers of candidates like the generators."""
        writers = [*self.generators, *([self.evolution] if self.evolution.enabled else [])]
        found = self_preference_warnings([(j.name, self.model_of(j).source) for j in self.judges],
                                         [self.model_of(r).source for r in writers] + list(provided_models))
        found += [w for w in [few_candidates(self)] if w]
        if (len(self.judges) == 1 and isinstance(self.model_of(self.judge), RewardModel)
                and "min_margin" not in self.pairing.model_fields_set):
            found.append(f"judge {self.judge.name!r} is a reward model: ratings are its raw scores, and "
                         f"pairing.min_margin ({self.pairing.min_margin:g}) is in those units; set it for this model")
        return found

    def digest(self) -> str:
        """A short hash of everything that shapes the output, placement excluded (see `config/digest.py`)."""
        return config_digest(self)

    def digest_parts(self) -> dict[str, str]:
        """Per dotted key a short hash of what the digest covers: a refused resume names the keys that differ."""
        return digest_parts(self)


def parse_config(data: dict | None, source: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(format_errors(source, err)) from None


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> PipelineConfig:
    """Read a YAML file (none: the defaults), apply dotted-key overrides, and validate."""
    data, source = read_yaml(path) if path is not None else ({}, "defaults")
    apply_overrides(data, overrides or {}, source)
    return parse_config(data, source)
