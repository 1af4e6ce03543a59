"""The judge-health figures in plain words: the summary's "judge health:" block and the card's.

The figures are computed in `health.py` (ratings) and `roles/verify/verdicts.py` (the pair check); this
module only renders them.
"""

from __future__ import annotations

from prefgen.report.length_control import length_controlled_line
from prefgen.report.position import position_cancelled_line
from prefgen.roles.verify.verdicts import verification_lines


def _ordinal(i: int) -> str:
    return f"{i}{'th' if 10 <= i % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(i % 10, 'th')}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def health_lines(figures: dict, warnings: list[str]) -> list[str]:
    """The summary's "judge health:" block: each figure in plain words, then the warnings."""
    if not figures:
        return []
    f = figures
    lines = ["judge health:"]
    by_pos = f["mean_rating_by_position"]
    if by_pos["n"]:
        means = ", ".join(f"{_ordinal(int(p) + 1)} {m:.2f}" for p, m in by_pos["means"].items())
        lines.append(f"  mean rating by position shown: {means} ({by_pos['n']} judgments)")
    mono = f["monotone_calls"]
    if mono["n"]:
        lines.append(
            f"  ratings falling with position: {_pct(mono['weak_share'])} of {mono['n']} joint calls of 3+ "
            f"(chance {_pct(mono['weak_chance'])}), strictly {_pct(mono['strict_share'])} (chance {_pct(mono['strict_chance'])})"
        )
    perm = f["permutation_agreement"]
    if perm["n"]:
        lines.append(
            f"  same rating in another order: {_pct(perm['share'])} of {perm['n']} comparisons "
            f"(chance {_pct(perm['chance'])}), mean spread {perm['mean_spread']:.2f}"
        )
    jury = f["juror_agreement"]
    if jury["n"]:
        lines.append(
            f"  jurors within 1 point: {_pct(jury['within_1_share'])} of {jury['n']} comparisons, mean "
            f"difference {jury['mean_abs_diff']:.2f} (random ratings: {jury['chance_abs_diff']:.2f})"
        )
    length = f["length_rating"]
    if length["r"] is not None:
        lines.append(f"  length vs rating within an instruction: r={length['r']:.2f} ({length['n']} candidates)")
    longer, evolved = f["chosen_longer"], f["evolved_beat_parent"]
    if longer["n"]:
        lines.append(f"  chosen is the longer response: {_pct(longer['share'])} of {longer['n']} pairs")
    matched = length_controlled_line(f.get("length_controlled"))
    if matched:
        lines.append(matched)
    if evolved["n"]:
        lines.append(
            f"  rewrite beat its original: {_pct(evolved['win_share'])} of {evolved['n']} "
            f"(ties {_pct(evolved['tie_share'])})"
        )
    dist = f["rating_distribution"]
    if dist["n"]:
        lines.append(f"  ratings: {', '.join(f'{k}={_pct(v)}' for k, v in dist['shares'].items())} ({dist['n']})")
    cancelled = position_cancelled_line(f)
    if cancelled:
        lines.append(cancelled)
    lines += verification_lines(f.get("pair_verification"))
    return lines + [f"  warning: {w}" for w in warnings]
