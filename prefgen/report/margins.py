"""Selecting pairs by rating margin at export: the largest margins, or those above a floor.

Training on the pairs whose chosen answer beat the rejected one by the widest rating margin can
match or beat training on the whole set, so `prefgen export` can keep only those:
- `min_margin` N: the pairs whose margin (chosen_rating - rejected_rating) is at least N;
- `top_margin` F (0 < F <= 1): of the pairs left, the ceil(F x n) with the largest margins (at
  least one); pairs tied at the cut are taken by pair_id, and how many were cut that way is said.
Kept pairs stay in their order. The selection's figures (kept, cut, the threshold) go into the
export's message, a JSON file beside it, and the card pushed with it (`selection_line`).
"""

from __future__ import annotations

import math


class MarginError(ValueError):
    """A margin option out of range."""


def margin(pair: dict) -> float:
    return pair["chosen_rating"] - pair["rejected_rating"]


def select_by_margin(pairs: list[dict], top_margin: float | None = None,
                     min_margin: float | None = None) -> tuple[list[dict], dict]:
    """(the pairs kept, in order; what was kept and cut): see the module docstring."""
    if top_margin is not None and not 0 < top_margin <= 1:
        raise MarginError(f"--top-margin {top_margin:g}: give the share of pairs to keep, above 0 and at most 1")
    if min_margin is not None and min_margin < 0:
        raise MarginError(f"--min-margin {min_margin:g}: a margin floor is 0 or more")
    order = {id(p): i for i, p in enumerate(pairs)}
    left = [p for p in pairs if min_margin is None or margin(p) >= min_margin]
    cut_at_threshold = 0
    if top_margin is not None and left:
        ranked = sorted(left, key=lambda p: (-margin(p), p["pair_id"]))
        keep = max(1, math.ceil(top_margin * len(ranked)))
        cut_at_threshold = sum(margin(p) == margin(ranked[keep - 1]) for p in ranked[keep:])
        left = sorted(ranked[:keep], key=lambda p: order[id(p)])
    threshold = min((margin(p) for p in left), default=None)
    return left, {"pairs": len(pairs), "kept": len(left), "cut": len(pairs) - len(left), "threshold": threshold,
                  "top_margin": top_margin, "min_margin": min_margin, "cut_at_threshold": cut_at_threshold}


def selection_line(sel: dict) -> str:
    """The selection in words: what was kept, by which rule, and what was cut."""
    rules = [f"top {100 * sel['top_margin']:g}%" for _ in [1] if sel["top_margin"] is not None]
    rules += [f"margin floor {sel['min_margin']:g}" for _ in [1] if sel["min_margin"] is not None]
    above = f" with margin >= {sel['threshold']:.2f}" if sel["threshold"] is not None else ""
    tied = (f", {sel['cut_at_threshold']} of them tied at {sel['threshold']:.2f} and taken by pair_id"
            if sel["cut_at_threshold"] else "")
    return (f"margin selection ({', '.join(rules)}): kept {sel['kept']} of {sel['pairs']} pairs{above}, "
            f"cut {sel['cut']}{tied}")
