"""Judge health: figures on crafted rows, chance-aware warnings, and sums that add across batches."""

import json
from dataclasses import asdict
from itertools import permutations

import pytest
from support.scripted_engine import ScriptedEngine
from support.judges import judged_row, position_judge, row, truthful_judge

from prefgen.report.health import add_health, batch_health, health_figures, health_warnings
from prefgen.report.health_text import health_lines
from prefgen.report.position import position_cancelled_line
from prefgen.roles.verify.verdicts import verification_figures
from prefgen.roles.judge.task import JudgeTask
from prefgen.roles.pair import split_rows
from prefgen.report.summary import RunSummary, batch_counts
from prefgen.schema import candidate


def flat(d, prefix=""):
    """A nested dict as {dotted key: leaf}, for approximate comparison."""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def figures_of(rows, pairs=()):
    return health_figures(batch_health(rows, list(pairs)))


def test_position_only_judge_is_measured_and_warned_about():
    rows = [row(f"r{i}", [f"answer {i}-{k}" for k in range(4)]) for i in range(12)]
    JudgeTask("j", "m", seed=5, permutations=1).run(rows, ScriptedEngine(position_judge(lambda pos, _t: 5 - pos)))
    f = figures_of(rows)
    assert f["mean_rating_by_position"]["means"] == {"0": 5.0, "1": 4.0, "2": 3.0, "3": 2.0}
    assert f["first_minus_last"] == pytest.approx({"n": 12, "mean": 3.0, "z": f["first_minus_last"]["z"]})
    assert f["first_minus_last"]["z"] > 3
    mono = f["monotone_calls"]
    assert (mono["n"], mono["strict_share"], mono["weak_share"]) == (12, 1.0, 1.0)
    assert mono["strict_chance"] == pytest.approx(1 / 24)
    warned = health_warnings(f)
    assert any("rates by position" in w and "permutations: balanced" in w for w in warned)
    assert any("fell strictly with the position" in w for w in warned)


def test_two_candidates_falling_half_the_time_is_chance_and_never_warns():
    # 40 rows of two candidates: the first shown is rated higher in half the calls, lower in the other half
    rows = [judged_row(f"r{i}", [[(0, 4), (1, 2)] if i % 2 else [(1, 2), (0, 4)]]) for i in range(40)]
    f = figures_of(rows)
    assert f["monotone_calls"]["n"] == 0  # two candidates: no order test, chance is a coin flip
    assert (f["first_minus_last"]["n"], f["first_minus_last"]["mean"], f["first_minus_last"]["z"]) == (40, 0.0, 0.0)
    assert health_warnings(f) == []


def test_two_candidates_always_first_higher_does_warn():
    rows = [judged_row(f"r{i}", [[(i % 2, 4), (1 - i % 2, 2)]]) for i in range(40)]
    assert any("rates by position" in w for w in health_warnings(figures_of(rows)))


def test_three_candidates_falling_at_chance_rate_does_not_warn():
    # every arrangement of ratings 3, 2, 1 over the three positions once: falling in 1 of 6, as chance says
    rows = [judged_row(f"r{i}-{k}", [[(idx, 3 - idx) for idx in order]])
            for i in range(4) for k, order in enumerate(permutations(range(3)))]
    mono = figures_of(rows)["monotone_calls"]
    assert mono["n"] == 24 and mono["strict_share"] == pytest.approx(1 / 6) == mono["strict_chance"]
    assert mono["strict_z"] == pytest.approx(0.0)
    assert not any("joint calls" in w for w in health_warnings(figures_of(rows)))


def test_monotone_warning_needs_enough_calls():
    few = [judged_row(f"r{i}", [[(0, 3), (1, 2), (2, 1)]]) for i in range(4)]
    many = [judged_row(f"r{i}", [[(0, 3), (1, 2), (2, 1)]]) for i in range(12)]
    assert figures_of(few)["monotone_calls"]["strict_z"] > 3  # significant, yet too few calls to say
    assert not any("joint calls" in w for w in health_warnings(figures_of(few)))
    assert any("joint calls" in w for w in health_warnings(figures_of(many)))


def test_permutation_agreement_and_rating_distribution():
    steady = [judged_row(f"r{i}", [[(0, 5), (1, 2)], [(1, 2), (0, 5)]]) for i in range(20)]
    f = figures_of(steady)
    assert (f["permutation_agreement"]["n"], f["permutation_agreement"]["share"]) == (40, 1.0)
    assert f["permutation_agreement"]["mean_spread"] == 0.0
    assert f["rating_distribution"]["shares"] == {"1": 0, "2": 0.5, "3": 0, "4": 0, "5": 0.5}
    assert health_warnings(f) == []
    # balanced orders of a position-only judge: a candidate's rating changes with every order
    rows = [row(f"r{i}", [f"a{i}", f"b{i}", f"c{i}"]) for i in range(10)]
    JudgeTask("j", "m", permutations="balanced").run(rows, ScriptedEngine(position_judge(lambda pos, _t: 5 - 2 * pos)))
    f = figures_of(rows)
    assert f["permutation_agreement"]["share"] == 0.0 and f["permutation_agreement"]["chance"] == pytest.approx(1 / 3)
    assert any("another order" in w for w in health_warnings(f))
    same = [judged_row(f"r{i}", [[(0, 5), (1, 5)]]) for i in range(20)]
    assert any("barely tells responses apart" in w for w in health_warnings(figures_of(same)))


def test_jurors_that_disagree_like_random_ratings_warn():
    rows = []
    for i in range(30):
        r = judged_row(f"r{i}", [[(0, 5), (1, 1)]], judge="a")
        other = judged_row(f"r{i}", [[(0, 1), (1, 5)]], judge="b")
        for c, o in zip(r["candidates"], other["candidates"]):
            c["judgments"] += o["judgments"]
        rows.append(r)
    jury = figures_of(rows)["juror_agreement"]
    assert (jury["n"], jury["mean_abs_diff"], jury["within_1_share"]) == (60, 4.0, 0.0)
    assert any("jurors differ" in w for w in health_warnings(figures_of(rows)))
    agreeing = [judged_row(f"r{i}", [[(0, 5), (1, 1)]], judge="a") for i in range(30)]
    for r in agreeing:
        for c in r["candidates"]:
            c["judgments"] += [dict(j, judge="b") for j in c["judgments"]]
    assert figures_of(agreeing)["juror_agreement"]["mean_abs_diff"] == 0.0
    assert not any("jurors" in w for w in health_warnings(figures_of(agreeing)))


def test_length_bias_and_chosen_longer_point_to_length_matching():
    rows = [judged_row(f"r{i}", [[(0, 2), (1, 4)], [(1, 4), (0, 2)]], texts=["short", "a much longer answer"])
            for i in range(25)]
    pairs, rejects = split_rows(rows, "best_vs_worst", 1.0)
    assert len(pairs) == 25 and not rejects
    f = figures_of(rows, pairs)
    assert f["length_rating"]["r"] == pytest.approx(1.0) and f["length_rating"]["n"] == 50
    assert (f["chosen_longer"]["n"], f["chosen_longer"]["share"]) == (25, 1.0)
    warned = health_warnings(f)
    assert sum("pairing.length_matched: true" in w for w in warned) == 2
    unbiased = [judged_row(f"r{i}", [[(0, 2 + 2 * (i % 2)), (1, 4 - 2 * (i % 2))]],
                           texts=["short", "a much longer answer"]) for i in range(26)]
    f = figures_of(unbiased, split_rows(unbiased, "best_vs_worst", 1.0)[0])
    assert f["length_rating"]["r"] == pytest.approx(0.0) and f["chosen_longer"]["share"] == 0.5
    assert not any("length_matched" in w for w in health_warnings(f))


def test_evolved_against_parent():
    rows = []
    for i in range(24):
        r = judged_row(f"r{i}", [[(0, 4), (1, 2 if i < 20 else 4)]])
        r["candidates"][1].update(origin="evolved", parent_id=r["candidates"][0]["candidate_id"])
        rows.append(r)
    evolved = figures_of(rows)["evolved_beat_parent"]
    assert (evolved["n"], evolved["win_share"], evolved["tie_share"]) == (24, 0.0, pytest.approx(4 / 24))
    assert any("rewritten responses beat their originals" in w for w in health_warnings(figures_of(rows)))


def test_batches_add_up_exactly_and_the_summary_renders_them():
    rows = [row(f"r{i}", [f"x{i}", f"yy{i}", f"zzz{i}"]) for i in range(9)]
    truth = {c["text"]: 1 + k + (i % 2) for i, r in enumerate(rows) for k, c in enumerate(r["candidates"])}
    JudgeTask("j", "m", permutations=2, seed=2).run(rows, ScriptedEngine(truthful_judge(truth, lambda x: x)))
    pairs, rejects = split_rows(rows, "best_vs_worst", 1.0)
    whole = batch_health(rows, pairs)
    halves = [batch_health(rows[:4], [p for p in pairs if p["id"] in {"r0", "r1", "r2", "r3"}]),
              batch_health(rows[4:], [p for p in pairs if p["id"] not in {"r0", "r1", "r2", "r3"}])]
    assert halves[0] != whole and flat(add_health(*halves)) == pytest.approx(flat(whole))
    assert flat(health_figures(add_health(*halves))) == pytest.approx(flat(health_figures(whole)))
    summary = RunSummary(output="out")
    for part in (rows[:4], rows[4:]):
        ids = {r["id"] for r in part}
        report = batch_counts("k", part, [p for p in pairs if p["id"] in ids], [x for x in rejects if x["id"] in ids])
        summary.add(json.loads(json.dumps(report)))  # as committed to disk
    ratings = {k: v for k, v in summary.health.items() if k != "pair_verification"}  # no pair check here
    assert flat(ratings) == pytest.approx(flat(health_figures(whole))) and summary.health["pair_verification"]["n"] == 0
    assert summary.health["mean_rating_by_position"]["n"] == 9 * 3 * 2
    json.dumps(asdict(summary), allow_nan=False)  # the manifest gets plain JSON
    lines = summary.lines()
    start = lines.index("judge health:")
    assert lines[start + 1].startswith("  mean rating by position shown: 1st ")
    assert any(line.startswith("  ratings falling with position:") for line in lines)


def test_health_warnings_reach_the_summary_lines():
    rows = [judged_row(f"r{i}", [[(0, 5), (1, 4), (2, 3), (3, 2)]]) for i in range(12)]
    summary = RunSummary(output="out")
    summary.add(batch_counts("k", rows, [], []))
    assert summary.health_warnings and all(f"  warning: {w}" in summary.lines() for w in summary.health_warnings)


def test_an_older_report_without_health_still_adds():
    summary = RunSummary(output="out")
    report = batch_counts("k", [], [], [])
    del report["health"]
    summary.add(report)
    assert summary.health["first_minus_last"]["n"] == 0 and summary.health_warnings == []
    assert "judge health:" in summary.lines()


def test_single_mode_judgments_count_no_positions():
    r = row("r1", ["a", "b"])
    JudgeTask("j", "m", mode="single").run([r], ScriptedEngine(lambda req: ['{"rating": 4, "rationale": "ok"}']))
    f = figures_of([r])
    assert f["mean_rating_by_position"]["n"] == 0 and f["first_minus_last"]["n"] == 0
    assert f["rating_distribution"]["n"] == 2


def test_unrated_and_failed_calls_are_left_out():
    r = judged_row("r1", [[(0, 5), (1, 1), (2, 3)]])
    r["candidates"][1]["judgments"][0].update(rating=None, error="bad")
    f = figures_of([r])
    assert f["monotone_calls"]["n"] == 0 and f["first_minus_last"]["n"] == 0
    assert f["mean_rating_by_position"]["n"] == 2
    unjudged = batch_health([{"candidates": [candidate(candidate_id="r/g/0", text="t", origin="generated")]}], [])
    assert health_figures(unjudged)["rating_distribution"]["n"] == 0


def _position_driven_rows():
    """12 rows of 4 candidates, each judged in a shuffle and its reverse by a judge rating the shown position alone."""
    rows = [row(f"r{i}", [f"answer {i}-{k}" for k in range(4)]) for i in range(12)]
    JudgeTask("j", "m", seed=5, permutations=2).run(rows, ScriptedEngine(position_judge(lambda pos, _t: 5 - pos)))
    return rows


def _checked(figures, flagged):
    counts = {"pairs_checked": 6, "verified": 1, "flipped": 5, "flagged": flagged, "verdicts_decided": 12,
              "first_shown_wins": 1}
    return figures | {"pair_verification": verification_figures(counts)}


def test_position_the_pair_check_cancelled_is_a_figure_not_a_warning():
    f = figures_of(_position_driven_rows())
    assert any("rates by position" in w for w in health_warnings(f))  # ratings alone: the pairs are not safe
    assert position_cancelled_line(f) is None
    checked = _checked(f, flagged=0)  # every pair kept was named the better in both orders
    assert not any("position" in w for w in health_warnings(checked))
    line = position_cancelled_line(checked)
    assert line.startswith("  position (cancelled for the pairs kept") and "83% of 6 checked flipped" in line
    assert "the judge rates by position" in line and "Use judge.permutations" not in line
    assert line in health_lines(checked, [])


def test_position_stays_a_warning_when_a_pair_kept_was_not_verified():
    flagged = _checked(figures_of(_position_driven_rows()), flagged=1)  # on_fail: flag kept an unverified pair
    assert any("rates by position" in w for w in health_warnings(flagged))
    assert position_cancelled_line(flagged) is None


def test_agreement_at_chance_is_noise_and_stays_a_warning_under_the_pair_check():
    # ratings alike in another order no more often than chance, but not less: noise, not position
    noisy = {"n": 40, "cells": 20, "share": 0.3, "chance": 0.25, "z": 0.7, "mean_spread": 1.0}
    f = _checked(figures_of([]) | {"permutation_agreement": noisy}, flagged=0)
    assert any("another order" in w for w in health_warnings(f)) and position_cancelled_line(f) is None
    below = _checked(figures_of([]) | {"permutation_agreement": noisy | {"share": 0.1, "z": -1.5}}, flagged=0)
    assert not any("another order" in w for w in health_warnings(below))
    assert "another order" in position_cancelled_line(below)
