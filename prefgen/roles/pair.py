"""Pairing: chosen/rejected pairs from rated candidates, in TRL's conversational format.

`select_pairs` is the rule, a pure function. It never pairs two candidates whose ratings tie
or whose texts are equal, and never pairs below the minimum margin. Strategies:
- best_vs_worst: the best candidate against the worst qualifying one;
- best_vs_random_lower: the best against a random qualifying lower one, drawn from a generator
  seeded by (run seed, row id): reproducible, independent of batching, and different per row;
- all_pairs: every qualifying pair.
`length_matched` makes the best-* strategies prefer the qualifying rejected candidate whose
length is closest to the chosen's, to curb the judge's taste for longer answers.
A candidate cut off at `max_tokens` (`truncated`) is never the chosen one unless
`allow_truncated_chosen`: a model trained to prefer it would learn to stop mid-sentence. It may
still be the rejected one. A row whose qualifying pairs all have a truncated chosen is rejected
as `chosen_truncated`, so a too-tight `max_tokens` shows up in the counts.
An instruction that yields no pair gets the reason why, which sends it to the rejects output;
all tied because a judge rated every candidate alike with rationales that say nothing
(`judge.UNINFORMATIVE_RATIONALE_CHARS`) is `uninformative_judgment`, not `all_tied`.
With the pair check on (`pairing.verification`, see `verify.py`), `split_rows` keeps a pair only
when the judge named its chosen in both orders; a row none of whose pairs holds is `unverified`,
its verdicts in the reject's `detail` and `verdicts`; with `on_fail: flag` such pairs are kept
with `verified: false`.
"""

from __future__ import annotations

import hashlib
import random

from prefgen.schema import (
    REJECT_ALL_TIED,
    REJECT_CHOSEN_TRUNCATED,
    REJECT_IDENTICAL,
    REJECT_MARGIN,
    REJECT_NO_CANDIDATES,
    REJECT_TOO_FEW_RATED,
    REJECT_UNINFORMATIVE,
    REJECT_UNVERIFIED,
    reject_row,
)
from prefgen.roles.verify.verdicts import describe, outcome, pair_verdicts


def _same_text(a: dict, b: dict) -> bool:
    return " ".join(a["text"].split()) == " ".join(b["text"].split())


def row_rng(seed: int, row_id: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{seed}:{row_id}".encode()).digest()[:8], "big"))


STRATEGIES = ("best_vs_worst", "best_vs_random_lower", "all_pairs")  # config.PairingConfig.strategy


def select_pairs(
    candidates: list[dict],
    strategy: str,
    min_margin: float,
    length_matched: bool = False,
    rng: random.Random | None = None,
    allow_truncated_chosen: bool = False,
) -> tuple[list[tuple[dict, dict]], str | None]:
    """Return ([(chosen, rejected), ...], None), or ([], reason) when no pair qualifies."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pairing strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    if not candidates:
        return [], REJECT_NO_CANDIDATES
    rated = sorted((c for c in candidates if c["rating"] is not None), key=lambda c: c["candidate_id"])
    if len(rated) < 2:
        return [], REJECT_TOO_FEW_RATED
    if len({c["rating"] for c in rated}) == 1:
        return [], REJECT_UNINFORMATIVE if uninformative(rated) else REJECT_ALL_TIED
    distinct = [
        (a, b) if a["rating"] > b["rating"] else (b, a)
        for i, a in enumerate(rated)
        for b in rated[i + 1 :]
        if a["rating"] != b["rating"] and not _same_text(a, b)
    ]
    if not distinct:
        return [], REJECT_IDENTICAL
    pairs = [p for p in distinct if p[0]["rating"] - p[1]["rating"] >= min_margin]
    if not pairs:
        return [], REJECT_MARGIN
    pairs = [p for p in pairs if allow_truncated_chosen or not p[0].get("truncated")]
    if not pairs:
        return [], REJECT_CHOSEN_TRUNCATED
    pairs.sort(key=lambda p: (-(p[0]["rating"] - p[1]["rating"]), p[0]["candidate_id"], p[1]["candidate_id"]))
    if strategy == "all_pairs":
        return pairs, None
    # best-*: the highest-rated chosen that has a qualifying partner, then pick its rejected.
    top = max(p[0]["rating"] for p in pairs)
    chosen = min((p[0] for p in pairs if p[0]["rating"] == top), key=lambda c: c["candidate_id"])
    options = [r for c, r in pairs if c is chosen]  # worst first
    if length_matched:
        rejected = min(options, key=lambda r: (abs(len(r["text"]) - len(chosen["text"])), r["rating"], r["candidate_id"]))
    elif strategy == "best_vs_random_lower":
        rejected = (rng or random.Random(0)).choice(options)
    else:  # best_vs_worst
        rejected = options[0]
    return [(chosen, rejected)], None


def pair_row(row: dict, chosen: dict, rejected: dict, index: int, verified: bool | None = None,
             verdicts: list[dict] | None = None) -> dict:
    """One output row: TRL conversational preference columns plus provenance; `prompt` is the whole
    conversation for a multi-turn input; `verified` and `verdicts` the pair check's (None: not checked)."""
    return {
        "id": row["id"],
        "pair_id": f"{row['id']}-{index}",
        "prompt": row.get("messages") or [{"role": "user", "content": row["instruction"]}],
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
        "verified": verified,
        "verdicts": verdicts or [],
    }


def checked(row: dict, selected: list[tuple[dict, dict]], on_fail: str | None) -> tuple[list[tuple], list[str]]:
    """The pair check applied to a row's pairs: ([(chosen, rejected, verified, verdicts)] kept, [why refused]).
    `on_fail` None: no check (verified None); "reject": only verified pairs; "flag": all, marked."""
    if on_fail is None:
        return [(c, r, None, None) for c, r in selected], []
    if row.get("verdicts") is None:  # the check runs on every row that reaches pairing: a plan that skipped it
        raise ValueError(f"row {row['id']}: pairing.verification is on but the row carries no verdicts")
    kept, refused = [], []
    for c, r in selected:
        verdicts = pair_verdicts(row["verdicts"], c["candidate_id"], r["candidate_id"])
        verified = outcome(verdicts) == "verified"
        if verified or on_fail == "flag":
            kept.append((c, r, verified, verdicts))
        else:
            refused.append(describe(verdicts, c["candidate_id"], r["candidate_id"]))
    return kept, refused


def uninformative(candidates: list[dict]) -> list[dict]:
    """The judgments kept although they rated every candidate alike with rationales that say nothing."""
    return [j for c in candidates for j in c["judgments"] or [] if j.get("uninformative")]


def judge_errors(candidates: list[dict]) -> str | None:
    errors = [f"{c['candidate_id']}: {c['judge_error']}" for c in candidates if c["judge_error"]]
    calls = {}
    for j in uninformative(candidates):
        calls.setdefault((j["judge"], j["aspect"], j["permutation"]), []).append(j)
    for (judge, aspect, perm), js in calls.items():
        shown = ", ".join(repr(j["rationale"]) for j in sorted(js, key=lambda j: j["position"])[:3])
        errors.append(f"judge {judge}/{aspect}, order {perm}: rated every candidate {js[0]['rating']:g} with "
                      f"rationales that say nothing ({shown}, ...), after {js[0]['uninformative_answers']} such "
                      "answers")
    return "; ".join(errors) or None


def split_rows(
    rows: list[dict],
    strategy: str,
    min_margin: float,
    length_matched: bool = False,
    seed: int = 0,
    allow_truncated_chosen: bool = False,
    on_fail: str | None = None,
) -> tuple[list[dict], list[dict]]:
    """Work rows -> (pair rows, reject rows); every row lands in exactly one of the two. `on_fail`: the pair
    check's rule when it ran ("reject" or "flag", see `checked`), None when it is off."""
    pairs, rejects = [], []
    for row in rows:
        if row["reject_reason"]:
            rejects.append(reject_row(row, row["reject_reason"], row["reject_detail"]))
            continue
        selected, reason = select_pairs(
            row["candidates"], strategy, min_margin, length_matched, row_rng(seed, row["id"]), allow_truncated_chosen
        )
        if reason:
            rejects.append(reject_row(row, reason, judge_errors(row["candidates"])))
            continue
        kept, refused = checked(row, selected, on_fail)
        if not kept:
            rejects.append(reject_row(row, REJECT_UNVERIFIED, "; ".join(refused)))
        pairs.extend(pair_row(row, c, r, i, ok, vs) for i, (c, r, ok, vs) in enumerate(kept))
    return pairs, rejects
