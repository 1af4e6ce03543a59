"""What the pair check's verdicts say: per pair, per batch, per run, and against labelled pairs.

Pure functions over the verdict records `verify.VerifyTask` leaves on a row (`schema.VERDICT`,
two per pair: order 0 shows the chosen first, order 1 the rejected first):
- `outcome`: a pair is `verified` when both verdicts name the chosen, `flipped` when they name
  different answers (the order decided), `contradicted` when both name the rejected (the head to
  head disagrees with the ratings), `failed` when a verdict is missing or has no answer;
- `verification_counts`: a batch's sums (the writer's report, summed by `report.RunSummary`);
- `verification_figures` / `verification_warnings` / `verification_lines`: the run's judge-health
  figures (verified share, flip rate, how often the answer shown first won) and their words;
- `calibration_verdict_figures`: the same check on labelled pairs (`prefgen calibrate`).
"""

from __future__ import annotations

import math

OUTCOMES = ("verified", "flipped", "contradicted", "failed")
VERIFY_COUNTS = ("pairs_checked", *OUTCOMES, "flagged", "verify_calls", "verify_retries", "verdicts_decided",
                 "first_shown_wins")


def pair_verdicts(verdicts: list[dict] | None, chosen_id: str, rejected_id: str) -> list[dict]:
    """The verdicts of one pair, by order."""
    mine = [v for v in verdicts or [] if v["chosen_candidate_id"] == chosen_id and v["rejected_candidate_id"] == rejected_id]
    return sorted(mine, key=lambda v: v["order"])


def outcome(verdicts: list[dict]) -> str:
    """One pair's verdicts (both orders) -> verified, flipped, contradicted or failed."""
    if sorted(v["order"] for v in verdicts) != [0, 1] or any(v["better"] is None for v in verdicts):
        return "failed"
    named = {v["better"] for v in verdicts}
    chosen = verdicts[0]["chosen_candidate_id"]
    if len(named) == 2:
        return "flipped"
    return "verified" if named == {chosen} else "contradicted"


def describe(verdicts: list[dict], chosen_id: str, rejected_id: str) -> str:
    """A pair's verdicts in words, for a reject's detail: both orders, what each named and why."""
    def one(v: dict) -> str:
        shown = "chosen first" if v["order"] == 0 else "rejected first"
        if v["better"] is None:
            return f"order {v['order']} ({shown}): no verdict ({v['error']})"
        side = "chosen" if v["better"] == chosen_id else "rejected"
        reason = f": {v['reason'][:120]!r}" if v.get("reason") else ""
        return f"order {v['order']} ({shown}): {v['label']}, the {side}{reason}"

    said = "; ".join(one(v) for v in verdicts) or "no verdicts"
    return f"{outcome(verdicts)}: {chosen_id} over {rejected_id}; {said}"


def verification_counts(rows: list[dict], pairs: list[dict]) -> dict[str, int]:
    """A batch's pair-check sums: pairs checked by outcome, flagged pairs kept, calls, retries, and the
    verdicts that named the answer shown first. Rows never checked (`verdicts` null) add nothing."""
    counts = dict.fromkeys(VERIFY_COUNTS, 0)
    for row in rows:
        verdicts = row.get("verdicts") or []
        for chosen, rejected in dict.fromkeys((v["chosen_candidate_id"], v["rejected_candidate_id"]) for v in verdicts):
            counts["pairs_checked"] += 1
            counts[outcome(pair_verdicts(verdicts, chosen, rejected))] += 1
        for v in verdicts:
            counts["verify_calls"] += 1
            counts["verify_retries"] += max((v["attempts"] or 1) - 1, 0)
            if v["better"] is not None:
                counts["verdicts_decided"] += 1
                counts["first_shown_wins"] += v["better"] == v["first_shown"]
    counts["flagged"] = sum(p.get("verified") is False for p in pairs)
    return counts


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def verification_figures(counts: dict) -> dict:
    """The run's pair-check figures from summed counts; None where nothing was checked."""
    n, decided, first = counts.get("pairs_checked", 0), counts.get("verdicts_decided", 0), counts.get("first_shown_wins", 0)
    z = (first - decided / 2) / math.sqrt(decided / 4) if decided else 0.0
    return {
        "n": n,
        "verified_share": _share(counts.get("verified", 0), n),
        "flip_rate": _share(counts.get("flipped", 0), n),
        "contradicted_share": _share(counts.get("contradicted", 0), n),
        "failed_share": _share(counts.get("failed", 0), n),
        "kept_unverified": counts.get("flagged", 0),  # pairs kept though not verified (on_fail: flag)
        "first_shown_wins": {"n": decided, "share": _share(first, decided), "z": z},
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def verification_warnings(fig: dict) -> list[str]:
    """Warnings when the head-to-head verdicts follow the order rather than the answers."""
    out = []
    if fig["n"] >= 10 and (fig["flip_rate"] or 0) >= 0.3:
        out.append(
            f"the pair check's verdict changed with the order in {_pct(fig['flip_rate'])} of {fig['n']} pairs: "
            "the judge picks by position more than by content, and those pairs were refused (or flagged). Use a "
            "larger or different judge; its ratings deserve the same doubt"
        )
    first = fig["first_shown_wins"]
    if first["n"] >= 20 and abs(first["z"]) >= 3 and abs((first["share"] or 0.5) - 0.5) >= 0.15:
        out.append(
            f"in the pair check the answer shown {'first' if first['share'] > 0.5 else 'second'} won "
            f"{_pct(max(first['share'], 1 - first['share']))} of {first['n']} verdicts (unbiased: 50%): the judge "
            "favours a position; asking both orders keeps such verdicts from passing, at the cost of pairs"
        )
    return out


def verification_lines(fig: dict | None) -> list[str]:
    """The pair check's figures in words (the summary's judge-health block and the card)."""
    if not fig or not fig["n"]:
        return []
    first = fig["first_shown_wins"]
    return [f"  pair check (both orders): {_pct(fig['verified_share'])} of {fig['n']} pairs verified, verdict flipped "
            f"with the order in {_pct(fig['flip_rate'])}, against the ratings in {_pct(fig['contradicted_share'])}, "
            f"no verdict in {_pct(fig['failed_share'])}; answer shown first won {_pct(first['share'])} of "
            f"{first['n']} verdicts (unbiased: 50%)"]


def calibration_verdict_figures(rows: list[dict]) -> dict:
    """The pair check on labelled pairs (`prefgen calibrate` checks each labelled chosen against its
    rejected, whatever the ratings): how often both orders named the labelled chosen, how often the
    verdict held in both orders, and how often the answer shown first won; verdicts not had are left out."""
    agree = consistent = checked = decided = first = 0
    for row in rows:
        for chosen, rejected in dict.fromkeys((v["chosen_candidate_id"], v["rejected_candidate_id"])
                                              for v in row.get("verdicts") or []):
            vs = pair_verdicts(row["verdicts"], chosen, rejected)
            result = outcome(vs)
            if result == "failed":
                continue
            checked += 1
            consistent += result != "flipped"
            agree += result == "verified"  # calibrate checks the labelled pair: its chosen is the label's
            for v in vs:
                decided += 1
                first += v["better"] == v["first_shown"]
    share = lambda num, den: round(num / den, 3) if den else None  # noqa: E731
    return {"verified_pairs": checked, "verdict_agreement": share(agree, checked),
            "verdict_order_consistency": share(consistent, checked), "verdict_first_shown_wins": share(first, decided)}
