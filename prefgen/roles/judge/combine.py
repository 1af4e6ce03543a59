"""How a candidate's judgments become its rating: over orders, aspects and judges.

`combine_candidate` reads every judgment a candidate holds (LLM judges' and reward models') and
sets its `rating`, `rating_spread`, `judge_agreement`, `rationale`, `judge_error` and
`failed_orders`; `task.py` and `roles/judge/reward.py` call it once their judgments are in.
"""

from __future__ import annotations

from statistics import mean


def combine_candidate(cand: dict, rules: dict[str, str], overrides: dict[str, float] | None = None) -> None:
    """Set rating, rating_spread, judge_agreement, rationale, judge_error and failed_orders from judgments.

    Per judge and aspect: mean over permutations (their max-min is the spread). An order that
    failed while another order of the same judge and aspect rated the candidate leaves a rating
    of fewer orders, whose position effect is not cancelled: it is counted in `failed_orders`,
    and such a judge/aspect adds no spread (its orders were never compared; all of them like
    that: spread None, not 0). Per judge: the
    aspects combined by that judge's own rule in `rules` (judge name -> "mean" or "min"), N/A
    aspects left out, or the judge's score in `overrides` (a reward model's score put on the
    jury's scale, see `reward.reward_overrides`). Over judges: the mean (their max-min is the
    agreement). A judge/aspect whose every judgment failed leaves the candidate unrated.
    """
    cells: dict[tuple[str, str], list[dict]] = {}
    for j in cand["judgments"] or []:
        cells.setdefault((j["judge"], j["aspect"]), []).append(j)
    failed = [js for js in cells.values() if all(j["error"] for j in js)]
    cand["judge_error"] = "; ".join(f"{js[0]['judge']}/{js[0]['aspect']}: {js[-1]['error']}" for js in failed) or None
    per_judge: dict[str, list[float]] = {}
    spreads, failed_orders = [], 0
    for (judge, _aspect), js in cells.items():
        values = [j["rating"] for j in js if j["rating"] is not None]
        if values:
            per_judge.setdefault(judge, []).append(mean(values))
            missing = sum(1 for j in js if j["error"])
            failed_orders += missing
            if not missing:
                spreads.append(max(values) - min(values))
    cand["failed_orders"] = failed_orders
    overrides = overrides or {}
    judge_scores = [overrides[judge] if judge in overrides else mean(v) if rules[judge] == "mean" else min(v)
                    for judge, v in per_judge.items() if v]
    usable = judge_scores and not failed
    cand["rating"] = mean(judge_scores) if usable else None
    cand["rating_spread"] = max(spreads) if usable and spreads else None
    cand["judge_agreement"] = (max(judge_scores) - min(judge_scores)) if usable and len(judge_scores) > 1 else None
    rationales = [j["rationale"] for j in cand["judgments"] or [] if j["rationale"]]
    cand["rationale"] = rationales[0] if rationales else None
