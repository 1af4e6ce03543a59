"""Pairing: chosen/rejected pairs from rated candidates, in TRL's conversational format.

`select_pairs` is the rule, a pure function: it never pairs two candidates whose ratings tie or
whose texts are equal, and never pairs below the minimum margin. An instruction that yields
no pair gets the reason why, which sends it to the rejects output.
"""

from __future__ import annotations

from itertools import combinations

from prefgen.schema import (
    REJECT_ALL_TIED,
    REJECT_IDENTICAL,
    REJECT_MARGIN,
    REJECT_NO_CANDIDATES,
    REJECT_TOO_FEW_RATED,
)


def _same_text(a: dict, b: dict) -> bool:
    return " ".join(a["text"].split()) == " ".join(b["text"].split())


def select_pairs(candidates: list[dict], strategy: str, min_margin: float) -> tuple[list[tuple[dict, dict]], str | None]:
    """Return ([(chosen, rejected), ...], None), or ([], reason) when no pair qualifies.

    best_vs_worst: the one pair with the largest rating gap (ties broken by candidate id).
    all_pairs: every qualifying pair, largest gap first.
    """
    if not candidates:
        return [], REJECT_NO_CANDIDATES
    rated = sorted((c for c in candidates if c["rating"] is not None), key=lambda c: c["candidate_id"])
    if len(rated) < 2:
        return [], REJECT_TOO_FEW_RATED
    if len({c["rating"] for c in rated}) == 1:
        return [], REJECT_ALL_TIED
    ordered = []
    for a, b in combinations(rated, 2):
        if a["rating"] == b["rating"] or _same_text(a, b):
            continue
        chosen, rejected = (a, b) if a["rating"] > b["rating"] else (b, a)
        ordered.append((chosen, rejected))
    if not ordered:
        return [], REJECT_IDENTICAL
    pairs = [p for p in ordered if p[0]["rating"] - p[1]["rating"] >= min_margin]
    if not pairs:
        return [], REJECT_MARGIN
    pairs.sort(key=lambda p: (-(p[0]["rating"] - p[1]["rating"]), p[0]["candidate_id"], p[1]["candidate_id"]))
    return (pairs[:1] if strategy == "best_vs_worst" else pairs), None


def pair_row(row: dict, chosen: dict, rejected: dict, index: int) -> dict:
    """One output row: TRL conversational preference columns plus provenance."""
    return {
        "id": row["id"],
        "pair_id": f"{row['id']}-{index}",
        "prompt": [{"role": "user", "content": row["instruction"]}],
        "chosen": [{"role": "assistant", "content": chosen["text"]}],
        "rejected": [{"role": "assistant", "content": rejected["text"]}],
        "chosen_rating": chosen["rating"],
        "rejected_rating": rejected["rating"],
        "chosen_model": chosen["model"],
        "rejected_model": rejected["model"],
        "chosen_candidate_id": chosen["candidate_id"],
        "rejected_candidate_id": rejected["candidate_id"],
        "candidates": row["candidates"],
        "source": row["source"],
        "line": row["line"],
    }


def reject_row(row: dict, reason: str, detail: str | None) -> dict:
    return {
        "id": row["id"],
        "instruction": row["instruction"],
        "source": row["source"],
        "line": row["line"],
        "reason": reason,
        "detail": detail,
        "candidates": row.get("candidates") or [],
    }


def judge_errors(candidates: list[dict]) -> str | None:
    errors = [f"{c['candidate_id']}: {c['judge_error']}" for c in candidates if c["judge_error"]]
    return "; ".join(errors) or None


def split_rows(rows: list[dict], strategy: str, min_margin: float) -> tuple[list[dict], list[dict]]:
    """Work rows -> (pair rows, reject rows); every row lands in exactly one of the two."""
    pairs, rejects = [], []
    for row in rows:
        if row["reject_reason"]:
            rejects.append(reject_row(row, row["reject_reason"], row["reject_detail"]))
            continue
        selected, reason = select_pairs(row["candidates"], strategy, min_margin)
        if reason:
            rejects.append(reject_row(row, reason, judge_errors(row["candidates"])))
        pairs.extend(pair_row(row, c, r, i) for i, (c, r) in enumerate(selected))
    return pairs, rejects
