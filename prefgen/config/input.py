"""The `input` section of the config: where the rows are, and what of each row is the prompt and
what its provided responses (see `input/rows.py` for how a row's values are read)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from prefgen.models.settings import Strict
from prefgen.config.screen import BenchmarkFile, ContaminationConfig, NearDuplicateConfig


class InputConfig(Strict):
    path: str | None = Field(None, description="JSONL, Parquet, CSV file or datasets folder; none: the bundled sample.")
    field: str = Field("instruction", description="Column holding the prompt: an instruction (text) or a "
                       "conversation (a list of {role, content} messages whose last turn is the user's).")
    limit: int | None = Field(None, ge=1, description="Use only the first N rows.")
    format: Literal["auto", "jsonl", "parquet", "csv", "datasets"] = "auto"
    responses: list[str] = Field(
        default_factory=list,
        description="Columns holding responses to rate as candidates (origin: provided): each a response (text, "
        "{text, model}, or a TRL message list) or a list of responses.",
    )
    preference: bool = Field(
        False, description="TRL preference rows to re-judge: field defaults to 'prompt' and responses to "
        "[chosen, rejected], each a string or a message list.",
    )
    near_duplicates: NearDuplicateConfig = Field(default_factory=NearDuplicateConfig)
    decontaminate: list[BenchmarkFile] = Field(default_factory=list, description="Benchmark prompt files.")
    contamination: ContaminationConfig = Field(default_factory=ContaminationConfig)

    @field_validator("responses")
    @classmethod
    def _response_columns(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if any(not column.strip() for column in value):
            raise ValueError(f"a column name cannot be empty (item {[c.strip() for c in value].index('')})")
        repeated = sorted({c for c in value if value.count(c) > 1})
        if repeated:
            raise ValueError(f"columns given twice: {repeated}")
        if info.data.get("field") in value:
            raise ValueError(f"{info.data['field']!r} is the prompt's column (input.field), not a response column")
        return value

    @model_validator(mode="after")
    def _preference_columns(self) -> InputConfig:
        if self.preference:
            if "field" not in self.model_fields_set:
                self.field = "prompt"
            if "responses" not in self.model_fields_set:
                self.responses = ["chosen", "rejected"]
        if self.field in self.responses:
            raise ValueError(f"input.field: {self.field!r} is also a response column (input.responses)")
        return self
