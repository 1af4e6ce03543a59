"""The generators' config: one `GeneratorConfig` per entry under `generators:`, and the default pool."""

from __future__ import annotations

from pydantic import Field, field_validator

from prefgen.models.settings import SamplingConfig, check_name
from prefgen.prompts import GENERATION_FIELDS, resolve_template
from prefgen.roles.config import RoleConfig


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

    def calls_per_row(self) -> dict[str, dict[str, float]]:
        """What this generator adds to the plan: engine requests and outputs per input row."""
        return {f"generate:{self.name}": {"requests": 1, "outputs": self.num_completions}}


# The embedded default's generators' user turn: the length asked for where a small model heeds it.
SHORT_ANSWER_TEMPLATE = "{instruction}\n\nAnswer in two or three sentences."


def default_generators() -> list[GeneratorConfig]:
    """The embedded default's pool: two generator settings of the embedded model that ask for short
    answers (a 135M model rambles past any limit otherwise, and a cut-off answer is never chosen). It
    ignored "at most 80 words" in the system prompt (21 of 48 candidates cut off), and "two or three
    short sentences" there too (12 of 48: benchmarks/results/default_run-*.json); so the length is
    asked for last in the user's turn (`template`). At temperature 0.3 the focused one loops on the
    same instructions run after run: a repetition penalty ends that (on the creative one, at 1.0, it
    makes answers drift; README, Benchmarks: the default run)."""
    return [
        GeneratorConfig(name="smol-focused", system_prompt="Answer accurately and briefly.",
                        template=SHORT_ANSWER_TEMPLATE,
                        sampling=SamplingConfig(temperature=0.3, max_tokens=256, repetition_penalty=1.1)),
        GeneratorConfig(
            name="smol-creative",
            system_prompt="You are a creative assistant. Answer with one vivid, concrete example.",
            template=SHORT_ANSWER_TEMPLATE, sampling=SamplingConfig(temperature=1.0, max_tokens=256),
        ),
    ]
