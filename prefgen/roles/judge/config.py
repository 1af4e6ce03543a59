"""The judges' config: `judge:` and each entry under `jury:` is a `JudgeConfig` (aspects, rubrics,
orders, retries, sampling), on an LLM or a reward model."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from prefgen.models.declarations import RewardModel
from prefgen.models.settings import SamplingConfig, check_name
from prefgen.prompts import (
    ASPECT_ALIASES,
    BUILTIN_ASPECTS,
    Rubric,
    aspect_name,
    joint_judge_prompt,
    joint_schema,
    judge_prompt,
    judgment_schema,
    rubric_for,
)
from prefgen.roles.config import RoleConfig

ASPECTS = BUILTIN_ASPECTS


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

    def shaping(self, model) -> dict:
        node = super().shaping(model)
        # the rubrics in use are in the rendered prompts; unused ones change nothing
        node["rubrics"] = {a: r for a, r in node["rubrics"].items() if a in self.aspects}
        return node

    def prompts_sent(self, model) -> dict[str, str] | None:
        """Per aspect, the judge's prompt and answer schema as sent, around placeholder texts; none on a reward
        model, which reads no prompt."""
        if isinstance(model, RewardModel):
            return None
        rendered = {}
        for aspect in self.aspects:
            rubric = rubric_for(aspect, self.rubrics)
            if self.mode == "single":
                messages = judge_prompt("{instruction}", "{response}", aspect, self.rationales, "{nonce}", rubric)
                schema = judgment_schema(self.rationales, rubric.allows_na, rubric.scale)
            else:
                labelled = [("A", "{response A}"), ("B", "{response B}")]
                messages = joint_judge_prompt("{instruction}", labelled, aspect, self.rationales, "{nonce}", rubric)
                schema = joint_schema(["A", "B"], self.rationales, rubric.allows_na, rubric.scale)
            rendered[aspect] = json.dumps({"messages": messages, "schema": schema if self.guided else None},
                                          sort_keys=True)
        return rendered

    def calls_per_row(self, model, candidates: int) -> dict[str, dict[str, float]]:
        """What this judge adds to the plan per input row: a reward model scores each candidate once; an LLM
        judge asks once per aspect and order (joint) or per aspect and candidate (single, balanced)."""
        if isinstance(model, RewardModel):
            n = candidates
        else:
            per_aspect = candidates if self.mode == "single" or self.permutations == "balanced" else self.permutations
            n = per_aspect * len(self.aspects)
        return {f"judge:{self.name}": {"requests": n, "outputs": n}}


# Judge keys a reward model has no use for: it reads no prompt and writes no answer.
REWARD_IGNORED_KEYS = ("rubrics", "aspects", "combine", "mode", "permutations", "rationales", "guided", "max_retries",
                       "sampling")
