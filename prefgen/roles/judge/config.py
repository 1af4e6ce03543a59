"""The roles a run's models play: generators, the evolver, judges and jurors. Each names a model
declared under `models:` (or gives a source as shorthand) and carries its own sampling, prompts
and rules; `config/__init__.py` resolves the names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from prefgen.models.declarations import EngineConfig, SamplingConfig, Strict, check_name
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

CRITERIA = tuple(EVOL_CRITERIA)
ASPECTS = BUILTIN_ASPECTS


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

    @field_validator("name")
    @classmethod
    def _usable_name(cls, value: str | None) -> str | None:
        if value == "evolver":
            raise ValueError("'evolver' is the generator name of evolved candidates; choose another")
        return None if value is None else check_name(value, "generator")


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

    @field_validator("name")
    @classmethod
    def _usable_name(cls, value: str) -> str:
        return check_name(value, "judge")

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


class VerificationConfig(Strict):
    """The pair check (`pairing.verification`, see `roles/verify/task.py`): the judge under `judge:` sees each pair's
    chosen and rejected side by side, in both orders, and names the better one."""

    enabled: bool | Literal["auto"] = Field(
        "auto",
        description="auto: on when the judge under `judge:` is a generative model (vllm or endpoint), off for a "
        "reward-model judge, which has no verdict to give; true: on (refused for a reward-model judge); false: off.",
    )
    on_fail: Literal["reject", "flag"] = Field(
        "reject",
        description="A pair whose verdict flips with the order, names the rejected answer in both orders, or could "
        "not be had: reject (its row goes to rejects as `unverified` when no pair of it holds) or flag (kept, "
        "`verified: false`).",
    )
