"""Column names and Arrow schemas of the rows that flow through the pipeline, defined once.

A *work row* is one instruction on its way: its id, text, where it came from, and the list of
candidates that the stages fill in. A row that cannot go on carries a `reject_reason` and
passes untouched through later stages to the rejects output. Stages exchange batches as
`pyarrow.Table`s built against these schemas, so nested columns keep their exact types.
"""

from __future__ import annotations

import pyarrow as pa

# The version of what an output folder holds (the columns below, commits, manifest). Bump it when
# they change: a run written under another version is not resumed (see `output/runstate.py`).
# 2: provided candidates and conversations (`messages`); commits rolled into segments, shards merged
# at the end of a run (output/commits.py, output/compaction.py).
# 3: a candidate's `failed_orders`; a judgment's `nonce`, `uninformative`, `uninformative_answers`.
# 4: pair verification: a work row's and a reject row's `verdicts`, a pair's `verified` and `verdicts`.
OUTPUT_SCHEMA_VERSION = 4

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
        ("nonce", pa.string()),  # the call's block nonce (random per call): the prompt can be rebuilt
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
        # the answer kept rated every candidate alike with rationales of a few characters (after a retry)
        ("uninformative", pa.bool_()),
        ("uninformative_answers", pa.int64()),  # such answers of this call, kept or not
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
        # orders that failed while another order of the same judge/aspect rated it: its rating rests on
        # fewer orders and position is not cancelled for it (0: none; null: never judged)
        ("failed_orders", pa.int64()),
        ("judge_agreement", pa.float64()),  # max-min of the judges' ratings (a jury only)
        ("rationale", pa.string()),
        ("judge_error", pa.string()),
        ("judgments", pa.list_(JUDGMENT)),
    ]
)
CANDIDATE_FIELDS = [f.name for f in CANDIDATE]

# One verdict of the pair check (roles/verify/task.py): the judge shown a pair's chosen and rejected side by side
# in one order, naming the better one.
VERDICT = pa.struct(
    [
        ("judge", pa.string()),
        ("chosen_candidate_id", pa.string()),  # the pair as pairing formed it from the ratings
        ("rejected_candidate_id", pa.string()),
        ("order", pa.int64()),  # 0: the chosen shown first (as A), 1: the rejected shown first
        ("first_shown", pa.string()),  # the candidate id shown as A
        ("better", pa.string()),  # the candidate id the judge named; null if no verdict was had (see error)
        ("label", pa.string()),  # the label it named: A or B
        ("reason", pa.string()),
        ("nonce", pa.string()),  # the call's block nonce: the prompt can be rebuilt
        ("raw", pa.string()),  # the judge's answer as written
        ("error", pa.string()),
        ("attempts", pa.int64()),
        ("truncated", pa.bool_()),  # the answer recorded here was cut off at max_tokens
    ]
)

# `instruction`: the prompt as the evolver and judge see it (a conversation as a transcript, see
# input/rows.py, conversation_text); `messages`: the prompt as a message list (one user turn for a plain
# instruction, null for an input row that could not be read).
SOURCE_FIELDS = [("id", pa.string()), ("instruction", pa.string()), ("messages", pa.list_(MESSAGE)),
                 ("source", pa.string()), ("line", pa.int64())]

WORK_ROW = pa.schema(
    SOURCE_FIELDS
    + [
        ("candidates", pa.list_(CANDIDATE)),
        ("output_tokens", pa.int64()),  # tokens the engines generated for this row, all stages
        ("verdicts", pa.list_(VERDICT)),  # the pair check's, two per provisional pair; null: not checked
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
        # the pair check: true when the judge named the chosen in both orders; false: kept although it did not
        # (pairing.verification.on_fail: flag); null: not checked (verification off, or a reward-model judge)
        ("verified", pa.bool_()),
        ("verdicts", pa.list_(VERDICT)),  # this pair's two verdicts (order 0 and 1)
    ]
)

REJECT_ROW = pa.schema(
    SOURCE_FIELDS
    + [
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("candidates", pa.list_(CANDIDATE)),
        ("verdicts", pa.list_(VERDICT)),  # the pair check's verdicts of the row's pairs (`unverified`)
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
# all tied because a judge's answer rated every candidate alike with rationales that say nothing
REJECT_UNINFORMATIVE = "uninformative_judgment"
REJECT_IDENTICAL = "identical_texts"
REJECT_MARGIN = "margin_below_min"
REJECT_CHOSEN_TRUNCATED = "chosen_truncated"  # every qualifying chosen was cut off at max_tokens
# no pair held under the pair check: the verdict flipped with the order, named the rejected, or failed
REJECT_UNVERIFIED = "unverified"
REJECT_STAGE_ERROR = "stage_error"
REJECT_WORKER_FAILED = "worker_failed"  # an engine fault: the batch failed on every retry
REJECT_WRITE_FAILED = "write_failed"  # storage: the batch's shards could not be written after retries
REJECT_REQUEST_FAILED = "request_failed"  # an endpoint request failed after its retries (detail: HTTP status)
# Rejects for a fault rather than for the row: a rerun of the same command redoes their rows (their
# commits are marked `fault` and retired when a run resumes, see output/commits.py).
FAULT_REASONS = (REJECT_WORKER_FAILED, REJECT_WRITE_FAILED, REJECT_REQUEST_FAILED)
# Not an output reason: marks the rows of a batch an endpoint stopped; such a batch is not written
# or committed, and the run stops (see engines/endpoint.py).
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
        "verdicts": row.get("verdicts") or [],
    }


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)
