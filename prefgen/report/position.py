"""Judge health's position findings, and whether the pairs kept are safe from them.

A judge that ranks the order it was shown is a fact about the judge; whether that position reached
the pairs depends on what the run did about it. Each finding is a fact and an advice:
- the first (or last) response shown rated higher (`first_minus_last`);
- ratings falling with the shown position in more calls than chance (`monotone_calls`);
- the same response rated differently in another order, less often alike than chance
  (`permutation_agreement` below its chance share: mirrored orders move a response to the other end).
When the pair check ran and every pair kept passed it (each named the better in both orders, none
kept flagged), position decided none of the pairs kept: the findings are then the judge's cost in
pairs, said in one line of the figures (`position_cancelled_line`), not warnings about the data.
With ratings alone (any number of orders) they stay warnings: two orders cancel a linear effect only.
"""

from __future__ import annotations

Z_SIGNIFICANT = 3.0


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def position_findings(figures: dict) -> list[tuple[str, str]]:
    """(fact, advice) for each position figure that is significant against chance and large enough."""
    out = []
    fl, mono = figures["first_minus_last"], figures["monotone_calls"]
    if fl["n"] >= 8 and abs(fl["z"]) >= Z_SIGNIFICANT and abs(fl["mean"]) >= 0.5:
        side, other = ("first", "last") if fl["mean"] > 0 else ("last", "first")
        out.append((
            f"the judge rates by position: over {fl['n']} joint calls the {side} response shown got "
            f"{abs(fl['mean']):.1f} points more than the {other} on average (z={fl['z']:.1f}); its ratings "
            "follow the order, not the text",
            "Use judge.permutations: balanced (ratings by position alone then tie and the row is refused) or at "
            "least 2 (an order and its reverse), and a larger or different judge"))
    for kind, words in (("strict", "strictly"), ("weak", "steadily")):
        share, chance = mono[f"{kind}_share"], mono[f"{kind}_chance"]
        if mono["n"] >= 5 and mono[f"{kind}_z"] >= Z_SIGNIFICANT and share - chance >= 0.2:
            out.append((
                f"in {pct(share)} of {mono['n']} joint calls of 3+ responses the ratings fell {words} with the "
                f"position shown, where chance gives {pct(chance)}: the judge is ranking the order it was shown",
                "Use judge.permutations: balanced, and a larger or different judge"))
            break
    perm = figures["permutation_agreement"]
    if perm["n"] >= 20 and perm["share"] <= 0.5 and perm["z"] < 2:
        out.append((
            f"the same response shown in another order got the same rating in only {pct(perm['share'])} of "
            f"{perm['n']} comparisons, no better than chance ({pct(perm['chance'])}): the ratings are mostly "
            "noise or position",
            "Use a larger or different judge; keep several permutations and verify pairs"))
    return out


def position_cancelled(figures: dict) -> bool:
    """Did the pair check run and every pair kept pass it in both orders (none kept flagged)?"""
    check = figures.get("pair_verification") or {}
    return bool(check.get("n")) and check.get("kept_unverified") == 0


def _cancelled(figures: dict) -> list[str]:
    """The facts the pair check cancels for the pairs kept: every position finding, and the agreement one
    only below chance (at chance it says noise, which a check in both orders does not rule out)."""
    if not position_cancelled(figures):
        return []
    perm = figures["permutation_agreement"]
    below_chance = perm["n"] and perm["chance"] is not None and perm["share"] < perm["chance"]
    return [fact for fact, _ in position_findings(figures) if below_chance or not fact.startswith("the same response")]


def position_warnings(figures: dict) -> list[str]:
    """The findings the pairs kept are not safe from, each with its advice."""
    cancelled = _cancelled(figures)
    return [f"{fact}. {advice}" for fact, advice in position_findings(figures) if fact not in cancelled]


def position_cancelled_line(figures: dict) -> str | None:
    """The findings the pair check cancelled, in one line of the figures (None when there are none)."""
    facts = _cancelled(figures)
    if not facts:
        return None
    check = figures["pair_verification"]
    return (f"  position (cancelled for the pairs kept: each was named the better in both orders of the pair "
            f"check, so position decided none of them; it cost pairs, {pct(check['flip_rate'] or 0)} of "
            f"{check['n']} checked flipped with the order): " + "; ".join(facts)
            + ". For more pairs, use a larger or different judge")
