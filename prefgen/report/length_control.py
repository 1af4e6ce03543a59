"""Are the preferences length? The pairs' rating gap with the part length explains taken out.

"The chosen is the longer one in 67% of pairs" says the pairs lean long, not whether the judge
preferred them for it. The length-controlled gap asks what the chosen would still lead by if
both answers were of the same length, the way AlpacaEval's length-controlled win rate predicts
a preference with the length difference set to zero:

- within each instruction, rating is regressed on response length (characters, both taken as
  deviations from the instruction's means, pooled over instructions): the slope `b` is how many
  rating points 100 more characters bring when the instruction is the same (`health.py` keeps
  the sums `sxx`, `sxy` per batch);
- each pair's gap at matched length is its rating gap less `b` times its length difference;
  over the pairs, the mean gap at matched length is the mean gap less `b` times the mean length
  difference, so it too is made of sums a batch can add up (`pair_gap_stats`).

A gap at matched length close to the raw gap: the preferences are not length. A small one (the
length share near 1): the pairs would mostly teach a model to write longer.
"""

from __future__ import annotations


def pair_gap_stats(pairs: list[dict]) -> dict:
    """Summable statistics of pairs: how many, the sum of rating gaps (chosen minus rejected) and
    of length differences in characters (chosen minus rejected)."""
    rated = [p for p in pairs if p.get("chosen_rating") is not None and p.get("rejected_rating") is not None]
    return {
        "pairs": len(rated),
        "gap_sum": float(sum(p["chosen_rating"] - p["rejected_rating"] for p in rated)),
        "length_diff_sum": float(sum(len(p["chosen"][-1]["content"]) - len(p["rejected"][-1]["content"])
                                     for p in rated)),
    }


def length_controlled_gap(length: dict, gaps: dict) -> dict:
    """The figure from the within-instruction length sums (`n`, `sxx`, `sxy`: characters against
    rating, as deviations from each instruction's means) and `pair_gap_stats` sums.

    `n`: pairs; `candidates`: ratings the slope was fitted on; `slope_per_100_chars`: rating
    points per 100 characters within an instruction; `mean_gap`, `mean_length_diff`: the pairs'
    mean rating gap and length difference; `gap_at_matched_length`: the mean gap less what the
    slope gives the length difference; `length_share`: the part of the mean gap that length
    explains (can pass 1, or fall below 0 when the chosen are the shorter). None where the
    sample is empty (no pairs, or no spread of length within an instruction)."""
    n = gaps.get("pairs", 0)
    slope = length["sxy"] / length["sxx"] if length.get("sxx") else None
    mean_gap = gaps["gap_sum"] / n if n else None
    mean_diff = gaps["length_diff_sum"] / n if n else None
    matched = mean_gap - slope * mean_diff if n and slope is not None else None
    return {
        "n": n,
        "candidates": length.get("n", 0),
        "slope_per_100_chars": None if slope is None else 100 * slope,
        "mean_gap": mean_gap,
        "mean_length_diff": mean_diff,
        "gap_at_matched_length": matched,
        "length_share": (mean_gap - matched) / mean_gap if matched is not None and mean_gap else None,
    }


def length_controlled_line(figure: dict | None) -> str | None:
    """The figure in words, for the summary's and the card's judge health; None without pairs."""
    if not figure or not figure["n"] or figure["gap_at_matched_length"] is None:
        return None
    share = figure["length_share"]
    return (f"  rating gap at matched length: {figure['gap_at_matched_length']:.2f} of {figure['mean_gap']:.2f} "
            f"over {figure['n']} pairs (length explains {100 * share:.0f}%: within an instruction "
            f"{figure['slope_per_100_chars']:+.2f} points per 100 characters, chosen "
            f"{figure['mean_length_diff']:+.0f} characters on average)")
