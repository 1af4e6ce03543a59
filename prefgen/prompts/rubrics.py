"""Judge rubrics: what an aspect asks about and what earns each rating, level by level.

The built-in rubrics are UltraFeedback's aspects (`overall`, `helpfulness`, `honesty`,
`instruction-following`, `truthfulness`) and the mission's simplified `mission-overall`, each a
YAML file under `builtin/rubrics/` in the same shape a config's own rubric takes:

    description: what the aspect judges
    levels: {5: what earns a 5, 4: ..., 1: ...}   # the integers 1..N, every one described
    not_applicable: when "N/A" may be answered     # optional; N/A is recorded as missing
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prefgen.prompts.templates import BUILTIN_DIR, read_yaml

MAX_LEVELS = 10
ASPECT_ALIASES = {"overall-rating": "overall"}  # distilabel's name for UltraFeedback's overall rating


class Rubric(BaseModel):
    """One aspect's rubric; `{file: path}` loads it from a YAML file of the same shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1, description="What the aspect judges, told to the judge as is.")
    levels: dict[int, str] = Field(
        description=f"Every rating of the scale and what earns it: the integers 1..N (2 <= N <= {MAX_LEVELS}), "
        "each described; the judge sees them from N down to 1."
    )
    not_applicable: str | None = Field(
        None, description="When the judge may answer N/A instead of a number (recorded as missing); none: never."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data):
        if isinstance(data, dict) and "file" in data:
            if len(data) > 1:
                raise ValueError("give either file or the rubric's keys, not both")
            loaded = read_yaml(data["file"], "rubric")
            if not isinstance(loaded, dict):
                raise ValueError(f"rubric file {data['file']!r} must hold a mapping with description and levels")
            return loaded
        return data

    @field_validator("levels")
    @classmethod
    def _whole_scale(cls, levels: dict[int, str]) -> dict[int, str]:
        top = max(levels, default=0)
        if not 2 <= top <= MAX_LEVELS or sorted(levels) != list(range(1, top + 1)):
            raise ValueError(f"levels must be the integers 1..N with 2 <= N <= {MAX_LEVELS}, each described; "
                             f"got {sorted(levels)}")
        empty = [level for level, text in levels.items() if not text.strip()]
        if empty:
            raise ValueError(f"levels {empty} have no description")
        return levels

    @property
    def scale(self) -> tuple[int, int]:
        return 1, max(self.levels)

    @property
    def allows_na(self) -> bool:
        return self.not_applicable is not None


BUILTIN_ASPECTS = ("overall", "helpfulness", "honesty", "instruction-following", "truthfulness", "mission-overall")
BUILTIN_RUBRICS: dict[str, Rubric] = {
    name: Rubric.model_validate(read_yaml(BUILTIN_DIR / "rubrics" / f"{name}.yaml", "rubric")) for name in BUILTIN_ASPECTS
}


def aspect_name(name: str) -> str:
    """The canonical name of an aspect (`overall-rating` is `overall`)."""
    return ASPECT_ALIASES.get(name, name)


def rubric_for(aspect: str, custom: dict[str, Rubric] | None = None) -> Rubric:
    """A config's own rubric for the aspect, else the built-in one (KeyError if neither)."""
    name = aspect_name(aspect)
    return (custom or {}).get(name) or BUILTIN_RUBRICS[name]
