"""Config of the input screening: near-duplicate removal and benchmark decontamination.

Both live under `input:`, since they decide which input rows go on:

    input:
      near_duplicates: {threshold: 0.8}          # on by default
      decontaminate: [gsm8k_test.jsonl, {path: mmlu.parquet, field: question}]
      contamination: {ngram: 8, threshold: 0.5}  # Tulu 3's setting

The defaults and where they come from are in README.md (Input screening).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from prefgen.models.settings import Strict

# Fields tried, in order, when a benchmark file names no field: the names benchmarks use for the prompt.
BENCHMARK_FIELDS = ("prompt", "instruction", "question", "problem", "input", "text")


class NearDuplicateConfig(Strict):
    enabled: bool = Field(True, description="Reject rows that nearly repeat an earlier row (MinHash + LSH).")
    threshold: float = Field(
        0.8, gt=0, le=1, description="Estimated Jaccard similarity of word shingles at or above which a row "
        "is a near-duplicate of an earlier kept row.",
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (memory: 4 bytes each per row).")
    ngram: int = Field(1, ge=1, le=10, description="Words per shingle; 1 compares the prompts' sets of words.")
    distributed_above: int = Field(
        100_000, ge=1, description="Inputs with more usable rows than this compute their signatures and "
        "benchmark matches as a Ray Data stage (a cluster shares the work); smaller ones in process. "
        "Both give the same decisions.",
    )


class BenchmarkFile(Strict):
    path: str = Field(description="JSONL, Parquet, CSV file or datasets folder of benchmark prompts (local or URI).")
    field: str | None = Field(
        None, description=f"Text field; none: the first of {', '.join(BENCHMARK_FIELDS)} the file has."
    )
    format: Literal["auto", "jsonl", "parquet", "csv", "datasets"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _path_alone(cls, value):
        return {"path": value} if isinstance(value, str) else value


class ContaminationConfig(Strict):
    ngram: int = Field(8, ge=1, le=50, description="Words per n-gram shared with a benchmark item (Tulu 3: 8).")
    threshold: float = Field(
        0.5, ge=0, lt=1, description="A row is contaminated when more than this share of one benchmark item's "
        "words lie in n-grams the row shares with it (Tulu 3: 0.5).",
    )
