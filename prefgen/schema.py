"""Column names and Arrow schemas of the rows that flow through the pipeline, defined once.

A *work row* is one instruction on its way: its id, text, where it came from, and the list of
candidates that the stages fill in. A row that cannot go on carries a `reject_reason` and
passes untouched through later stages to the rejects output. Stages exchange batches as
`pyarrow.Table`s built against these schemas, so nested columns keep their exact types.
"""

from __future__ import annotations

import pyarrow as pa

# The version of what an output folder holds (the columns below, commits, manifest). Bump it when
# they change: a run written under another version is not resumed (see `runstate.py`).
# 2: provided candidates and conversations (`messages`); commits rolled into segments, shards merged
# at the end of a run (commits.py, compaction.py).
OUTPUT_SCHEMA_VERSION = 2

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

# One rating of one candidate: by one judge, on one aspect, under one shown order.
JUDGMENT = pa.struct(
    [
        ("judge", pa.string()),
        ("aspect", pa.string()),
        ("permutation", pa.int64()),
        ("position", pa.int64()),  # 0-based place in the order shown to the judge
        ("label", pa.string()),
        ("order_seed", pa.int64()),  # seed of the shuffle that gave that order (joint mode)
        ("rating", pa.float64()),  # null: not applicable, or the judgment failed (see error)
        ("not_applicable", pa.bool_()),
        ("rationale", pa.string()),
        ("raw", pa.string()),  # the judge's answer as written
        ("error", pa.string()),
        ("attempts", pa.int64()),
        ("retried_because", pa.string()),  # what was wrong with the answers before this one
        ("max_tokens", pa.int64()),  # the answer limit of the attempt recorded here
        ("truncated", pa.bool_()),  # the answer recorded here (raw) was cut off at max_tokens
        ("truncated_answers", pa.int64()),  # answers of this call cut off at max_tokens, kept or not
    ]
)

CANDIDATE = pa.struct(
    [
        # "<row id>/<generator>/<k>"; provided: "<row id>/input.<column>/<k>"; evolved: "<parent>/e<round>"
        ("candidate_id", pa.string()),
        ("text", pa.string()),
        ("model", pa.string()),  # provided: the model the input names, else null
        ("generator", pa.string()),  # generator name, "evolver", or a provided response's input column
        ("origin", pa.string()),  # "generated" | "evolved" | "provided" (read from the input)
        ("parent_id", pa.string()),
        ("criterion", pa.string()),
        ("truncated", pa.bool_()),  # the text was cut off at max_tokens (finish reason "length")
        ("rating", pa.float64()),  # combined over permutations, aspects and judges
        ("rating_spread", pa.float64()),  # largest max-min over permutations of one judge/aspect
        ("judge_agreement", pa.float64()),  # max-min of the judges' ratings (a jury only)
        ("rationale", pa.string()),
        ("judge_error", pa.string()),
        ("judgments", pa.list_(JUDGMENT)),
    ]
)
CANDIDATE_FIELDS = [f.name for f in CANDIDATE]

# `instruction`: the prompt as the evolver and judge see it (a conversation as a transcript, see
# input_rows.conversation_text); `messages`: the prompt as a message list (one user turn for a plain
# instruction, null for an input row that could not be read).
SOURCE_FIELDS = [("id", pa.string()), ("instruction", pa.string()), ("messages", pa.list_(MESSAGE)),
                 ("source", pa.string()), ("line", pa.int64())]

WORK_ROW = pa.schema(
    SOURCE_FIELDS
    + [
        ("candidates", pa.list_(CANDIDATE)),
        ("output_tokens", pa.int64()),  # tokens the engines generated for this row, all stages
        ("reject_reason", pa.string()),
        ("reject_detail", pa.string()),
    ]
)

PAIR_ROW = pa.schema(
    [
        ("id", pa.string()),
        ("pair_id", pa.string()),
        ("prompt", pa.list_(MESSAGE)),
        ("chosen", pa.list_(MESSAGE)),
        ("rejected", pa.list_(MESSAGE)),
        ("chosen_rating", pa.float64()),
        ("rejected_rating", pa.float64()),
        ("chosen_model", pa.string()),
        ("rejected_model", pa.string()),
        ("chosen_candidate_id", pa.string()),
        ("rejected_candidate_id", pa.string()),
        ("candidates", pa.list_(CANDIDATE)),
        ("source", pa.string()),
        ("line", pa.int64()),
    ]
)

REJECT_ROW = pa.schema(
    SOURCE_FIELDS
    + [
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("candidates", pa.list_(CANDIDATE)),
    ]
)

# Reasons a row is rejected, each a stable string that lands in the rejects output.
REJECT_MISSING_FIELD = "missing_field"
REJECT_NOT_STRING = "instruction_not_string"
REJECT_EMPTY = "empty_instruction"
REJECT_DUPLICATE = "duplicate_instruction"  # the same prompt (and the same provided responses)
REJECT_BAD_CONVERSATION = "malformed_conversation"  # detail names the turn: messages[2].role
REJECT_LAST_TURN_NOT_USER = "last_turn_not_user"
REJECT_EMPTY_TURN = "empty_turn"
REJECT_MISSING_RESPONSE = "missing_response"  # a provided response (input.responses) is absent or null
REJECT_RESPONSE_NOT_TEXT = "response_not_text"
REJECT_EMPTY_RESPONSE = "empty_response"
REJECT_TOO_FEW_CANDIDATES = "too_few_candidates"  # provided + generated responses of the row are fewer than 2
REJECT_NEAR_DUPLICATE = "near_duplicate"  # nearly repeats an earlier kept row (detail: its file and line)
REJECT_CONTAMINATED = "contaminated"  # overlaps a benchmark item (detail: the benchmark file and line)
REJECT_BAD_JSON = "malformed_json"
REJECT_BAD_UTF8 = "invalid_utf8"
REJECT_TOO_LONG = "prompt_too_long"
REJECT_NO_CANDIDATES = "no_candidates"
REJECT_TOO_FEW_RATED = "too_few_rated"
REJECT_ALL_TIED = "all_tied"
REJECT_IDENTICAL = "identical_texts"
REJECT_MARGIN = "margin_below_min"
REJECT_CHOSEN_TRUNCATED = "chosen_truncated"  # every qualifying chosen was cut off at max_tokens
REJECT_STAGE_ERROR = "stage_error"
REJECT_WORKER_FAILED = "worker_failed"  # an engine fault: the batch failed on every retry
REJECT_WRITE_FAILED = "write_failed"  # storage: the batch's shards could not be written after retries
REJECT_REQUEST_FAILED = "request_failed"  # an endpoint request failed after its retries (detail: HTTP status)
# Rejects for a fault rather than for the row: a rerun of the same command redoes their rows (their
# commits are marked `fault` and retired when a run resumes, see commits.py).
FAULT_REASONS = (REJECT_WORKER_FAILED, REJECT_WRITE_FAILED, REJECT_REQUEST_FAILED)
# Not an output reason: marks the rows of a batch an endpoint stopped; such a batch is not written
# or committed, and the run stops (see endpoint.py).
STOPPED = "_stopped"


def candidate(**fields) -> dict:
    """A candidate dict with every field present (missing ones None)."""
    unknown = set(fields) - set(CANDIDATE_FIELDS)
    if unknown:
        raise KeyError(f"unknown candidate fields: {sorted(unknown)}")
    return {name: fields.get(name) for name in CANDIDATE_FIELDS}


def reject_row(row: dict, reason: str, detail: str | None) -> dict:
    """A rejects-output row for an input row or work row, with its reason."""
    return {
        "id": row["id"],
        "instruction": row["instruction"],
        "messages": row.get("messages"),
        "source": row["source"],
        "line": row["line"],
        "reason": reason,
        "detail": detail,
        "candidates": row.get("candidates") or [],
    }


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)
