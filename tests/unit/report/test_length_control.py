"""The length-controlled rating gap: hand-computed cases, sums that add across batches, and its line."""

import json

import pytest
from support.judges import judged_row

from prefgen.report.card import health_section
from prefgen.report.health import add_health, batch_health, health_figures
from prefgen.report.length_control import length_controlled_gap, pair_gap_stats
from prefgen.roles.pair import split_rows
from prefgen.report.summary import RunSummary, batch_counts

SHORT, LONG = "short", "a much longer answer"  # 5 and 20 characters


def two_answer_rows(ratings, start=0):
    """Rows of a short and a long answer rated (short, long), in both orders."""
    return [judged_row(f"r{start + i}", [[(0, s), (1, lg)], [(1, lg), (0, s)]], texts=[SHORT, LONG])
            for i, (s, lg) in enumerate(ratings)]


def figure(rows):
    pairs, rejects = split_rows(rows, "best_vs_worst", 1.0)
    assert not rejects
    return health_figures(batch_health(rows, pairs))["length_controlled"]


def test_ratings_made_by_length_alone_leave_no_gap_at_matched_length():
    texts = ["x" * 10, "x" * 40, "x" * 70]
    rows = [judged_row(f"r{i}", [[(0, 1), (1, 3), (2, 5)], [(2, 5), (1, 3), (0, 1)]], texts=texts) for i in range(6)]
    f = figure(rows)
    assert f["n"] == 6 and f["candidates"] == 18
    assert f["slope_per_100_chars"] == pytest.approx(100 * 4 / 60)
    assert (f["mean_gap"], f["mean_length_diff"]) == (4.0, 60.0)
    assert f["gap_at_matched_length"] == pytest.approx(0.0) and f["length_share"] == pytest.approx(1.0)


def test_ratings_unrelated_to_length_keep_their_whole_gap():
    f = figure(two_answer_rows([(2, 4), (4, 2)] * 3))
    assert f["slope_per_100_chars"] == pytest.approx(0.0)
    assert f["gap_at_matched_length"] == pytest.approx(2.0) and f["length_share"] == pytest.approx(0.0)


def test_a_mixed_case_computed_by_hand():
    # three rows where the long answer wins by 2, one where the short wins by 1; deviations from each
    # row's mean length are -7.5 / +7.5: sxx = 4 * 112.5 = 450, sxy = 3 * 15 - 7.5 = 37.5, slope 1/12 per char;
    # mean gap 7/4, mean length difference (3 * 15 - 15) / 4 = 7.5: at matched length 1.75 - 7.5/12 = 1.125
    f = figure(two_answer_rows([(2, 4), (2, 4), (2, 4), (4, 3)]))
    assert f["slope_per_100_chars"] == pytest.approx(100 / 12)
    assert (f["mean_gap"], f["mean_length_diff"]) == (1.75, 7.5)
    assert f["gap_at_matched_length"] == pytest.approx(1.125)
    assert f["length_share"] == pytest.approx(0.625 / 1.75)


def test_batches_add_up_to_the_figure_of_the_whole():
    rows = two_answer_rows([(2, 4), (2, 4), (4, 3), (1, 5), (3, 2), (2, 5)])
    pairs, _ = split_rows(rows, "best_vs_worst", 1.0)
    halves = [batch_health(rows[:3], pairs[:3]), batch_health(rows[3:], pairs[3:])]
    whole = health_figures(batch_health(rows, pairs))["length_controlled"]
    assert health_figures(add_health(*halves))["length_controlled"] == pytest.approx(whole)
    assert whole["n"] == 6


def test_no_pairs_or_no_length_spread_gives_no_figure():
    empty = length_controlled_gap({"n": 0, "sxx": 0.0, "sxy": 0.0}, pair_gap_stats([]))
    assert empty["n"] == 0 and empty["gap_at_matched_length"] is None and empty["length_share"] is None
    same_length = figure([judged_row(f"r{i}", [[(0, 2), (1, 4)]], texts=["aaa", "bbb"]) for i in range(3)])
    assert same_length["slope_per_100_chars"] is None and same_length["gap_at_matched_length"] is None


def test_the_summary_and_the_card_show_it_next_to_the_chosen_longer_share():
    rows = two_answer_rows([(2, 4), (2, 4), (2, 4), (4, 3)])
    pairs, _ = split_rows(rows, "best_vs_worst", 1.0)
    summary = RunSummary(output="out")
    summary.add(json.loads(json.dumps(batch_counts("k", rows, pairs, []))))
    line = ("  rating gap at matched length: 1.12 of 1.75 over 4 pairs (length explains 36%: within an "
            "instruction +8.33 points per 100 characters, chosen +8 characters on average)")
    lines = summary.lines()
    assert lines[lines.index("  chosen is the longer response: 75% of 4 pairs") + 1] == line
    card = health_section({"health": summary.health, "health_warnings": []})
    assert any(line.strip() in entry for entry in card)
