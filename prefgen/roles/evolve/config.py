"""The evolver's config (`evolution:`): rounds, criteria, the rewrite template and its sampling."""

from __future__ import annotations

from pydantic import Field, field_validator

from prefgen.models.settings import SamplingConfig
from prefgen.prompts import DEFAULT_REWRITE, EVOL_CRITERIA, REWRITE_FIELDS, REWRITE_TEMPLATES, load_criteria, resolve_template
from prefgen.roles.config import RoleConfig

CRITERIA = tuple(EVOL_CRITERIA)


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

    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_tokens=320),
        description="A rewrite adds to its answer, so it gets more room than a generator's default 256 tokens.",
    )

    @field_validator("criteria", mode="before")
    @classmethod
    def _load_criteria(cls, value):
        return load_criteria(value)

    @field_validator("template")
    @classmethod
    def _resolve_template(cls, value: str) -> str:
        return resolve_template(value, REWRITE_FIELDS, REWRITE_TEMPLATES)

    def calls_per_row(self, originals: int) -> dict[str, dict[str, float]]:
        """What evolution adds to the plan per input row: each original candidate (generated or provided)
        rewritten once a round."""
        if not self.enabled:
            return {}
        n = originals * self.num_evolutions
        return {"evolve": {"requests": n, "outputs": n}}


def default_evolution() -> EvolutionConfig:
    """The embedded default's evolver: EvolQuality's prompt closed by the same request for two or
    three sentences its generators get (`evol-quality-short`), with the room every rewrite gets."""
    return EvolutionConfig(template="evol-quality-short")
