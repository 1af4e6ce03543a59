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
    length = f["length_rating"]
    lines = [
        _counted(f, "mean_rating_by_position", _by_position),
        _counted(f, "monotone_calls", _falling),
        _counted(f, "permutation_agreement", _same_in_other_order),
        _counted(f, "juror_agreement", _jurors),
        None if length["r"] is None else
        f"  length vs rating within an instruction: r={length['r']:.2f} ({length['n']} candidates)",
        _counted(f, "chosen_longer", lambda m: f"chosen is the longer response: {_pct(m['share'])} of {m['n']} pairs"),
        length_controlled_line(f.get("length_controlled")),
        _counted(f, "evolved_beat_parent", _rewrites),
        _counted(f, "rating_distribution",
                 lambda m: f"ratings: {', '.join(f'{k}={_pct(v)}' for k, v in m['shares'].items())} ({m['n']})"),
        position_cancelled_line(f),
    ]
    return (["judge health:"] + [line for line in lines if line] + verification_lines(f.get("pair_verification"))
            + [f"  warning: {w}" for w in warnings])


def _counted(figures: dict, key: str, say) -> str | None:
    """The line `say` makes of the figure under `key`, indented; None when the figure counted nothing."""
    figure = figures[key]
    return "  " + say(figure) if figure["n"] else None


def _by_position(m: dict) -> str:
    means = ", ".join(f"{_ordinal(int(p) + 1)} {mean:.2f}" for p, mean in m["means"].items())
    return f"mean rating by position shown: {means} ({m['n']} judgments)"


def _falling(m: dict) -> str:
    return (f"ratings falling with position: {_pct(m['weak_share'])} of {m['n']} joint calls of 3+ "
            f"(chance {_pct(m['weak_chance'])}), strictly {_pct(m['strict_share'])} (chance {_pct(m['strict_chance'])})")


def _same_in_other_order(m: dict) -> str:
    return (f"same rating in another order: {_pct(m['share'])} of {m['n']} comparisons "
            f"(chance {_pct(m['chance'])}), mean spread {m['mean_spread']:.2f}")


def _jurors(m: dict) -> str:
    return (f"jurors within 1 point: {_pct(m['within_1_share'])} of {m['n']} comparisons, mean "
            f"difference {m['mean_abs_diff']:.2f} (random ratings: {m['chance_abs_diff']:.2f})")


def _rewrites(m: dict) -> str:
    return f"rewrite beat its original: {_pct(m['win_share'])} of {m['n']} (ties {_pct(m['tie_share'])})"
