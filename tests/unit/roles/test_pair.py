"""Pairing invariants: ties and equal texts never pair, margins hold, every row lands once, and a
candidate cut off at max_tokens is never the chosen one unless allowed."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefgen.roles.pair import row_rng, select_pairs, split_rows
from prefgen import schema
from prefgen.schema import candidate


def cand(cid, rating, text=None, model="m", truncated=False):
    text = text if text is not None else f"text {cid}"
    return candidate(candidate_id=cid, rating=rating, text=text, model=model, truncated=truncated)


def test_best_vs_worst_picks_largest_gap():
    cands = [cand("a", 3.0), cand("b", 5.0), cand("c", 1.0), cand("d", 4.0)]
    pairs, reason = select_pairs(cands, "best_vs_worst", 1.0)
    assert reason is None
    assert [(c["candidate_id"], r["candidate_id"]) for c, r in pairs] == [("b", "c")]


def test_equal_text_is_skipped_for_next_worst():
    cands = [cand("a", 5.0, "same"), cand("b", 1.0, " same "), cand("c", 2.0, "other")]
    pairs, reason = select_pairs(cands, "best_vs_worst", 1.0)
    assert [(c["candidate_id"], r["candidate_id"]) for c, r in pairs] == [("a", "c")]


@pytest.mark.parametrize(
    "cands, reason",
    [
        ([], schema.REJECT_NO_CANDIDATES),
        ([cand("a", 5.0), cand("b", None)], schema.REJECT_TOO_FEW_RATED),
        ([cand("a", 3.0), cand("b", 3.0), cand("c", 3.0)], schema.REJECT_ALL_TIED),
        ([cand("a", 3.0, "x"), cand("b", 4.0, "x")], schema.REJECT_IDENTICAL),
        ([cand("a", 3.0), cand("b", 4.0)], schema.REJECT_MARGIN),
    ],
)
def test_no_pair_reasons(cands, reason):
    assert select_pairs(cands, "best_vs_worst", 1.5) == ([], reason)


def test_all_pairs_above_margin():
    cands = [cand("a", 5.0), cand("b", 3.0), cand("c", 1.0)]
    pairs, _ = select_pairs(cands, "all_pairs", 2.0)
    assert {(c["candidate_id"], r["candidate_id"]) for c, r in pairs} == {("a", "b"), ("b", "c"), ("a", "c")}
    pairs, _ = select_pairs(cands, "all_pairs", 3.0)
    assert [(c["candidate_id"], r["candidate_id"]) for c, r in pairs] == [("a", "c")]


candidate_lists = st.lists(
    st.tuples(st.sampled_from([None, 1.0, 2.0, 3.0, 4.0, 5.0]), st.sampled_from(["x", "y", "z", "w"]), st.booleans()),
    max_size=8,
).map(lambda items: [cand(f"c{i}", r, t, truncated=cut) for i, (r, t, cut) in enumerate(items)])


STRATEGIES = ["best_vs_worst", "best_vs_random_lower", "all_pairs"]


@given(
    candidate_lists,
    st.sampled_from(STRATEGIES),
    st.sampled_from([0.5, 1.0, 2.0]),
    st.booleans(),
    st.integers(0, 99),
    st.booleans(),
)
def test_pairs_never_tie_never_equal_and_respect_margin(cands, strategy, margin, length_matched, seed, allow_cut):
    pairs, reason = select_pairs(cands, strategy, margin, length_matched, row_rng(seed, "r"), allow_cut)
    assert (reason is None) == bool(pairs)
    for chosen, rejected in pairs:
        assert chosen["rating"] - rejected["rating"] >= margin
        assert chosen["text"] != rejected["text"]
        assert chosen in cands and rejected in cands
        assert allow_cut or not chosen["truncated"]
    if strategy != "all_pairs":
        assert len(pairs) <= 1
        if pairs:  # the chosen is a best-rated candidate that has a qualifying partner
            every_pair = select_pairs(cands, "all_pairs", margin, allow_truncated_chosen=allow_cut)[0]
            assert pairs[0][0]["rating"] == max(c["rating"] for c, _ in every_pair)
    if reason == schema.REJECT_CHOSEN_TRUNCATED:  # exactly the rows the option would have paired
        assert not allow_cut and select_pairs(cands, strategy, margin, length_matched, allow_truncated_chosen=True)[0]


@given(candidate_lists, st.randoms())
def test_choice_does_not_depend_on_candidate_order(cands, rnd):
    shuffled = list(cands)
    rnd.shuffle(shuffled)
    ids = lambda result: ([(c["candidate_id"], r["candidate_id"]) for c, r in result[0]], result[1])  # noqa: E731
    assert ids(select_pairs(cands, "best_vs_worst", 1.0)) == ids(select_pairs(shuffled, "best_vs_worst", 1.0))


def work_row(rid, cands, reason=None):
    return {"id": rid, "instruction": f"q {rid}", "source": "s", "line": 1, "candidates": cands,
            "output_tokens": 0, "reject_reason": reason, "reject_detail": None}


def test_split_rows_sends_every_row_somewhere():
    rows = [
        work_row("ok", [cand("a", 5.0), cand("b", 2.0)]),
        work_row("tied", [cand("a", 3.0), cand("b", 3.0)]),
        work_row("early", [], reason="prompt_too_long"),
    ]
    pairs, rejects = split_rows(rows, "best_vs_worst", 1.0)
    assert [p["id"] for p in pairs] == ["ok"]
    assert {r["id"]: r["reason"] for r in rejects} == {"tied": schema.REJECT_ALL_TIED, "early": "prompt_too_long"}
    pair = pairs[0]
    assert pair["prompt"] == [{"role": "user", "content": "q ok"}]
    assert pair["chosen"] == [{"role": "assistant", "content": "text a"}]
    assert (pair["chosen_rating"], pair["rejected_rating"]) == (5.0, 2.0)


def test_random_lower_is_seeded_per_run_and_row_not_per_call():
    cands = [cand("best", 5.0)] + [cand(f"low{i}", 1.0 + (i % 3)) for i in range(6)]
    pick = lambda seed, rid: select_pairs(cands, "best_vs_random_lower", 1.0, rng=row_rng(seed, rid))[0][0][1]["candidate_id"]  # noqa: E731
    assert pick(3, "row-a") == pick(3, "row-a")
    picks = [pick(3, f"row-{i}") for i in range(60)]
    assert len(set(picks)) >= 4  # not degenerate: not always the first or the worst
    assert len({pick(seed, "row-a") for seed in range(30)}) >= 3


def test_length_matched_prefers_rejected_of_similar_length():
    chosen = cand("c", 5.0, "x" * 100)
    short_worst = cand("s", 1.0, "y" * 10)
    similar = cand("m", 2.0, "z" * 95)
    pairs, _ = select_pairs([chosen, short_worst, similar], "best_vs_worst", 1.0, length_matched=True)
    assert pairs[0][1]["candidate_id"] == "m"
    pairs, _ = select_pairs([chosen, short_worst, similar], "best_vs_worst", 1.0)
    assert pairs[0][1]["candidate_id"] == "s"


# --- truncated candidates ------------------------------------------------------------------------


def ids(pairs):
    return [(c["candidate_id"], r["candidate_id"]) for c, r in pairs]


def test_truncated_best_is_passed_over_for_chosen_unless_allowed():
    cands = [cand("cut", 5.0, truncated=True), cand("b", 4.0), cand("c", 1.0)]
    pairs, reason = select_pairs(cands, "best_vs_worst", 1.0)
    assert reason is None and ids(pairs) == [("b", "c")]
    pairs, _ = select_pairs(cands, "best_vs_worst", 1.0, allow_truncated_chosen=True)
    assert ids(pairs) == [("cut", "c")]


def test_truncated_candidate_may_still_be_rejected():
    cands = [cand("a", 5.0), cand("cut", 1.0, truncated=True)]
    assert ids(select_pairs(cands, "best_vs_worst", 1.0)[0]) == [("a", "cut")]
    all_pairs = select_pairs(cands + [cand("cut2", 4.0, truncated=True)], "all_pairs", 1.0)[0]
    assert set(ids(all_pairs)) == {("a", "cut"), ("a", "cut2")}  # cut2 over cut would qualify, but cut2 is cut off


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_row_whose_only_qualifying_chosen_is_truncated_gets_its_own_reason(strategy):
    cands = [cand("cut", 5.0, truncated=True), cand("b", 2.0), cand("c", 1.5)]  # b-c misses the margin
    assert select_pairs(cands, strategy, 1.0) == ([], schema.REJECT_CHOSEN_TRUNCATED)
    pairs, reason = select_pairs(cands, strategy, 1.0, allow_truncated_chosen=True)
    assert reason is None and {c["candidate_id"] for c, _ in pairs} == {"cut"}


def test_earlier_reasons_come_before_chosen_truncated():
    assert select_pairs([cand("cut", 5.0, truncated=True), cand("b", 4.5)], "best_vs_worst", 1.0)[1] == schema.REJECT_MARGIN
    assert select_pairs([cand("cut", 5.0, truncated=True), cand("b", None)], "best_vs_worst", 1.0)[1] == (
        schema.REJECT_TOO_FEW_RATED
    )


def test_split_rows_passes_the_option_and_counts_the_reason():
    from prefgen.report.summary import batch_counts

    rows = [
        work_row("cut", [cand("a", 5.0, truncated=True), cand("b", 1.0)]),
        work_row("ok", [cand("a", 4.0), cand("b", 1.0)]),
    ]
    pairs, rejects = split_rows(rows, "best_vs_worst", 1.0)
    assert [p["id"] for p in pairs] == ["ok"]
    assert [(r["id"], r["reason"]) for r in rejects] == [("cut", schema.REJECT_CHOSEN_TRUNCATED)]
    counts = batch_counts("k", rows, pairs, rejects)
    assert counts["rejects"] == {schema.REJECT_CHOSEN_TRUNCATED: 1} and counts["truncated"] == 1
    pairs, rejects = split_rows(rows, "best_vs_worst", 1.0, allow_truncated_chosen=True)
    assert sorted(p["id"] for p in pairs) == ["cut", "ok"] and not rejects


def test_pairing_config_keeps_truncated_out_of_chosen_by_default():
    from prefgen.config import PairingConfig, parse_config

    assert PairingConfig().allow_truncated_chosen is False
    assert parse_config({"pairing": {"allow_truncated_chosen": True}}).pairing.allow_truncated_chosen is True


def test_an_unknown_strategy_is_refused_not_taken_for_best_vs_worst():
    cands = [candidate(candidate_id=f"r/g/{i}", text=f"t{i}", rating=r) for i, r in enumerate([5, 1])]
    with pytest.raises(ValueError, match="unknown pairing strategy 'best_worst'"):
        select_pairs(cands, "best_worst", 1)


def test_the_config_offers_exactly_the_strategies_pairing_knows():
    from typing import get_args

    from prefgen.config import PairingConfig
    from prefgen.roles.pair import STRATEGIES

    assert set(get_args(PairingConfig.model_fields["strategy"].annotation)) == set(STRATEGIES)
