"""Scripted judges for the unit tests: answers built from what a judge prompt shows, by label.

They drive `JudgeTask` through a `ScriptedEngine`; they are never evidence that a real judge works.
"""

import json
import re

from prefgen.roles.judge.task import combine_candidate
from prefgen.schema import candidate


def row(rid, texts):
    cands = [
        candidate(candidate_id=f"{rid}/g/{i}", text=t, model="m", generator="g", origin="generated")
        for i, t in enumerate(texts)
    ]
    return {"id": rid, "instruction": "Q?", "source": "s", "line": 1, "candidates": cands, "output_tokens": 0,
            "reject_reason": None, "reject_detail": None}


def judged_row(rid, shown_orders, judge="j", aspect="overall", texts=None):
    """A row whose candidates were shown in the given orders; order k: [(candidate index, rating), ...]."""
    n = len(shown_orders[0])
    texts = texts or [f"text {i}" for i in range(n)]
    r = row(rid, texts)
    for perm, order in enumerate(shown_orders):
        for pos, (idx, rating) in enumerate(order):
            r["candidates"][idx]["judgments"] = (r["candidates"][idx]["judgments"] or []) + [
                {"judge": judge, "aspect": aspect, "permutation": perm, "position": pos, "label": "ABCDEFGH"[pos],
                 "order_seed": 1000 + perm, "rating": float(rating), "not_applicable": False, "rationale": None,
                 "raw": "{}", "error": None, "attempts": 1, "retried_because": None}
            ]
    for c in r["candidates"]:
        combine_candidate(c, {judge: "mean"})
    return r


def responses_by_label(prompt: str) -> dict[str, str]:
    blocks = re.findall(r"<response ([A-Z]+) (\w+)>\n(.*?)\n</response \1 \2>", prompt, flags=re.S)
    return {label: text for label, _nonce, text in blocks}


def truthful_judge(truth: dict[str, int], shuffle_keys):
    """Answers every label with the true rating of the text shown under it, keys in any order."""

    def reply(req):
        shown = responses_by_label(req.messages[-1]["content"])
        labels = list(shown)
        shuffle_keys(labels)
        return [json.dumps({label: {"rating": truth[shown[label]], "rationale": f"for {shown[label]}"} for label in labels})]

    return reply


def position_judge(rating_at):
    """Rates each response by the position it is shown in alone: rating_at(position, text)."""

    def reply(req):
        shown = responses_by_label(req.messages[-1]["content"])
        return [json.dumps({label: {"rating": rating_at(i, text), "rationale": "r"}
                            for i, (label, text) in enumerate(shown.items())})]

    return reply


def is_pair_check(req) -> bool:
    """A request of the pair check (roles/verify/task.py), not a rating call."""
    return '"better"' in req.messages[-1]["content"]


def checking_judge(pick, rate):
    """Rates with `rate` (a reply such as truthful_judge's); answers the pair check with pick(shown) -> label,
    `shown` the texts by label (A first)."""

    def reply(req):
        if not is_pair_check(req):
            return rate(req)
        return [json.dumps({"reason": "a reason", "better": pick(responses_by_label(req.messages[-1]["content"]))})]

    return reply
