"""Judge health: is the judge rating the responses, or their position, length or noise?

Measured on every run, in three pure steps:
- `batch_health(rows, pairs)`: a written batch's statistics, kept as sums and counts (nested
  dicts of numbers, JSON-safe) so that batches add up exactly with `add_health`;
- `health_figures(stats)`: the figures, each with its sample size and, where a figure can be
  compared with chance, the chance value and a z score against it;
- `health_warnings(figures)`: plain-words warnings, raised only when a figure is both
  significant (|z| >= 3, so a handful of calls never warns) and large enough to matter; the
  position findings (`position.py`) only when the pairs kept are not safe from them.
Chance is exact where it can be: a joint call's ratings, shuffled at random over the shown
positions, fall with position with probability prod(m_i!)/n! (m_i: how often each rating
occurs), so two candidates "fall" half the time and that alone never warns.
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import combinations

from prefgen.report.length_control import length_controlled_gap, pair_gap_stats
from prefgen.report.position import Z_SIGNIFICANT, pct as _pct, position_warnings


def add_health(a: dict, b: dict) -> dict:
    """The sum of two batches' statistics, key by key (a missing key counts as zero)."""
    out = dict(a)
    for key, value in b.items():
        out[key] = add_health(out.get(key, {}), value) if isinstance(value, dict) else out.get(key, 0) + value
    return out


def _falling_chance(ratings: list[float], strict: bool) -> float:
    """Probability that a random arrangement of these ratings falls with position."""
    if strict:
        return 1 / math.factorial(len(ratings)) if len(set(ratings)) == len(ratings) else 0.0
    ties = math.prod(math.factorial(m) for m in Counter(ratings).values())
    return ties / math.factorial(len(ratings))


def _call_stats(stats: dict, shown: list[float]) -> None:
    """One complete joint call, its ratings in shown order."""
    n = len(shown)
    mu = sum(shown) / n
    fl = stats["first_last"]
    fl["calls"] += 1
    fl["diff_sum"] += shown[0] - shown[-1]
    # variance of first-minus-last if the ratings were dealt to positions at random
    fl["null_var"] += 2 * sum((r - mu) ** 2 for r in shown) / (n - 1)
    if n < 3:
        return
    mono = stats["monotone"]
    mono["calls"] += 1
    for kind, strict in (("strict", True), ("weak", False)):
        p = _falling_chance(shown, strict)
        pairs = zip(shown, shown[1:])
        mono[kind] += all(a > b if strict else a >= b for a, b in pairs)
        mono[f"{kind}_chance"] += p
        mono[f"{kind}_chance_var"] += p * (1 - p)


def _candidate_stats(stats: dict, cand: dict) -> None:
    cells: dict[tuple[str, str], list[float]] = {}
    for j in cand["judgments"] or []:
        if j["rating"] is not None:
            if j["rating"] == int(j["rating"]):  # rubric levels; a reward model's raw scores are left out
                hist, level = stats["ratings"], str(int(j["rating"]))
                hist[level] = hist.get(level, 0) + 1
            cells.setdefault((j["judge"], j["aspect"]), []).append(j["rating"])
    by_aspect: dict[str, list[float]] = {}
    for (_judge, aspect), values in cells.items():
        by_aspect.setdefault(aspect, []).append(sum(values) / len(values))
        if len(values) >= 2:
            orders = stats["orders"]
            orders["cells"] += 1
            orders["spread_sum"] += max(values) - min(values)
            for a, b in combinations(values, 2):
                orders["pairs"] += 1
                orders["agree"] += a == b
    for means in by_aspect.values():
        for a, b in combinations(means, 2):
            jurors = stats["jurors"]
            jurors["pairs"] += 1
            jurors["within_1"] += abs(a - b) <= 1
            jurors["abs_diff_sum"] += abs(a - b)


def _row_stats(stats: dict, cands: list[dict]) -> None:
    calls: dict[tuple, list[tuple[int, float | None]]] = {}
    for cand in cands:
        _candidate_stats(stats, cand)
        for j in cand["judgments"] or []:
            if j["order_seed"] is None:  # single mode: no order shown
                continue
            calls.setdefault((j["judge"], j["aspect"], j["permutation"]), []).append((j["position"], j["rating"]))
            if j["rating"] is not None:
                cell = stats["position"].setdefault(str(j["position"]), {"sum": 0.0, "n": 0})
                cell["sum"] += j["rating"]
                cell["n"] += 1
    for shown in calls.values():
        if len(shown) >= 2 and all(r is not None for _, r in shown):
            _call_stats(stats, [r for _, r in sorted(shown)])
    rated = [c for c in cands if c["rating"] is not None]
    if len(rated) >= 2:  # length against rating within the instruction: deviations from its means
        mx = sum(len(c["text"]) for c in rated) / len(rated)
        my = sum(c["rating"] for c in rated) / len(rated)
        length = stats["length"]
        length["groups"] += 1
        for c in rated:
            x, y = len(c["text"]) - mx, c["rating"] - my
            length["n"] += 1
            length["sxx"] += x * x
            length["syy"] += y * y
            length["sxy"] += x * y
    by_id = {c["candidate_id"]: c for c in rated}
    for c in rated:
        parent = by_id.get(c["parent_id"]) if c["origin"] == "evolved" else None
        if parent:
            evolved = stats["evolved"]
            evolved["comparisons"] += 1
            evolved["wins"] += c["rating"] > parent["rating"]
            evolved["ties"] += c["rating"] == parent["rating"]


def empty_health() -> dict:
    return {
        "position": {},
        "first_last": {"calls": 0, "diff_sum": 0.0, "null_var": 0.0},
        "monotone": {"calls": 0, **{f"{k}{s}": 0 for k in ("strict", "weak") for s in ("", "_chance", "_chance_var")}},
        "orders": {"cells": 0, "pairs": 0, "agree": 0, "spread_sum": 0.0},
        "jurors": {"pairs": 0, "within_1": 0, "abs_diff_sum": 0.0},
        "length": {"n": 0, "groups": 0, "sxx": 0.0, "syy": 0.0, "sxy": 0.0},
        "chosen_longer": {"pairs": 0, "longer": 0, "shorter": 0},
        "pair_gaps": {"pairs": 0, "gap_sum": 0.0, "length_diff_sum": 0.0},  # length_control.pair_gap_stats
        "evolved": {"comparisons": 0, "wins": 0, "ties": 0},
        "ratings": {str(r): 0 for r in range(1, 6)},
    }


def batch_health(rows: list[dict], pairs: list[dict]) -> dict:
    """A batch's health statistics: from its work rows' judgments and its pairs' texts."""
    stats = empty_health()
    for row in rows:
        _row_stats(stats, row.get("candidates") or [])
    for p in pairs:
        chosen, rejected = len(p["chosen"][0]["content"]), len(p["rejected"][0]["content"])
        stats["chosen_longer"]["pairs"] += 1
        stats["chosen_longer"]["longer"] += chosen > rejected
        stats["chosen_longer"]["shorter"] += chosen < rejected
    stats["pair_gaps"] = pair_gap_stats(pairs)
    return stats


# --- figures and warnings ----------------------------------------------------------------------


def _z(observed: float, expected: float, variance: float) -> float:
    return (observed - expected) / math.sqrt(variance) if variance > 0 else 0.0


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def health_figures(stats: dict) -> dict:
    """The figures of (summed) statistics, each with its sample size `n`; None where n is 0."""
    s = add_health(empty_health(), stats)  # fills keys a report from an older version lacks
    hist = s["ratings"]
    total = sum(hist.values())
    probs = {int(r): m / total for r, m in hist.items()} if total else {}
    fl, mono, orders, jurors = s["first_last"], s["monotone"], s["orders"], s["jurors"]
    length, longer, evolved = s["length"], s["chosen_longer"], s["evolved"]
    agree_chance = sum(p * p for p in probs.values())
    diff_chance = sum(p * q * abs(a - b) for a, p in probs.items() for b, q in probs.items())
    diff_var = sum(p * q * (a - b) ** 2 for a, p in probs.items() for b, q in probs.items()) - diff_chance**2
    r = length["sxy"] / math.sqrt(length["sxx"] * length["syy"]) if length["sxx"] and length["syy"] else None
    df = length["n"] - length["groups"]
    decided = longer["longer"] + longer["shorter"]
    evolved_decided = evolved["comparisons"] - evolved["ties"]
    return {
        "mean_rating_by_position": {
            "n": sum(c["n"] for c in s["position"].values()),
            "means": {p: c["sum"] / c["n"] for p, c in sorted(s["position"].items(), key=lambda kv: int(kv[0]))},
        },
        "first_minus_last": {
            "n": fl["calls"],
            "mean": _share(fl["diff_sum"], fl["calls"]),
            "z": _z(fl["diff_sum"], 0.0, fl["null_var"]),
        },
        "monotone_calls": {
            "n": mono["calls"],
            **{f"{k}_share": _share(mono[k], mono["calls"]) for k in ("strict", "weak")},
            **{f"{k}_chance": _share(mono[f"{k}_chance"], mono["calls"]) for k in ("strict", "weak")},
            **{f"{k}_z": _z(mono[k], mono[f"{k}_chance"], mono[f"{k}_chance_var"]) for k in ("strict", "weak")},
        },
        "permutation_agreement": {
            "n": orders["pairs"],
            "cells": orders["cells"],
            "share": _share(orders["agree"], orders["pairs"]),
            "chance": agree_chance if orders["pairs"] else None,
            "z": _z(orders["agree"], orders["pairs"] * agree_chance, orders["pairs"] * agree_chance * (1 - agree_chance)),
            "mean_spread": _share(orders["spread_sum"], orders["cells"]),
        },
        "juror_agreement": {
            "n": jurors["pairs"],
            "within_1_share": _share(jurors["within_1"], jurors["pairs"]),
            "mean_abs_diff": _share(jurors["abs_diff_sum"], jurors["pairs"]),
            "chance_abs_diff": diff_chance if jurors["pairs"] else None,
            # below zero: jurors disagree less than two random ratings would
            "z": _z(jurors["abs_diff_sum"], jurors["pairs"] * diff_chance, jurors["pairs"] * diff_var),
        },
        "length_rating": {
            "n": length["n"],
            "r": r,
            "z": math.atanh(max(-0.999999, min(0.999999, r))) * math.sqrt(max(df - 2, 0)) if r is not None else 0.0,
        },
        "chosen_longer": {
            "n": longer["pairs"],
            "share": _share(longer["longer"], decided),
            "z": _z(longer["longer"], decided / 2, decided / 4),
        },
        "length_controlled": length_controlled_gap(length, s["pair_gaps"]),
        "evolved_beat_parent": {
            "n": evolved["comparisons"],
            "win_share": _share(evolved["wins"], evolved["comparisons"]),
            "tie_share": _share(evolved["ties"], evolved["comparisons"]),
            "z": _z(evolved["wins"], evolved_decided / 2, evolved_decided / 4),
        },
        "rating_distribution": {"n": total, "shares": {k: v / total for k, v in hist.items()} if total else {}},
    }


def health_warnings(figures: dict) -> list[str]:
    """Warnings for figures that are significant against chance and large enough to matter; position
    findings only where the pairs kept are not safe from them (`report/position.py`)."""
    out = position_warnings(figures)
    jury = figures["juror_agreement"]
    if jury["n"] >= 20 and jury["mean_abs_diff"] >= 1.0 and jury["z"] > -2:
        out.append(
            f"the jurors differ by {jury['mean_abs_diff']:.1f} points on average over {jury['n']} comparisons, "
            f"about as much as random ratings would ({jury['chance_abs_diff']:.1f}): they do not agree on what "
            "is better. Check each judge's health on its own; replace the weakest judge with a larger one"
        )
    length = figures["length_rating"]
    if length["n"] >= 20 and (length["r"] or 0) >= 0.3 and length["z"] >= Z_SIGNIFICANT:
        out.append(
            f"longer responses got higher ratings within the same instruction (r={length['r']:.2f} over "
            f"{length['n']} candidates): the judge may reward length. Set pairing.length_matched: true"
        )
    longer = figures["chosen_longer"]
    if longer["n"] >= 20 and (longer["share"] or 0) >= 0.7 and longer["z"] >= Z_SIGNIFICANT:
        out.append(
            f"the chosen response is the longer one in {_pct(longer['share'])} of {longer['n']} pairs (chance "
            "50%): a model trained on these pairs learns to write longer. Set pairing.length_matched: true"
        )
    evolved = figures["evolved_beat_parent"]
    if evolved["n"] >= 20 and evolved["z"] <= -Z_SIGNIFICANT and (evolved["win_share"] or 0) < 0.35:
        out.append(
            f"rewritten responses beat their originals in only {_pct(evolved['win_share'])} of {evolved['n']} "
            "comparisons: the evolver makes answers worse (or the judge dislikes rewrites). Check the evolved "
            "texts; a larger evolver, fewer rounds or evolution.enabled: false"
        )
    dist = figures["rating_distribution"]
    top = max(dist["shares"].items(), key=lambda kv: kv[1], default=None)
    if dist["n"] >= 20 and top and top[1] >= 0.9:
        out.append(
            f"{_pct(top[1])} of {dist['n']} ratings are {top[0]}: the judge barely tells responses apart, so "
            "most rows tie and are refused. Use a larger or different judge"
        )
    return out
