"""Judging: parsing refuses anything that does not validate, and no rating ever moves.

Property tests drive `JudgeTask` with a scripted judge that knows each response's true rating
and answers by label in any order: whatever the shuffle, permutation count or key order, every
candidate must end with its own rating.
"""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.scripted_engine import ScriptedEngine
from support.judges import position_judge, responses_by_label, row, truthful_judge

from prefgen.config import SamplingConfig
from prefgen.engines.engine import Result
from prefgen.roles.judge.orders import labels_for
from prefgen.roles.judge.task import JudgeTask, JudgmentError, combine_candidate, parse_joint, parse_judgment
from prefgen.roles.pair import split_rows
from prefgen.prompts import joint_judge_prompt, joint_schema, judge_prompt, judgment_schema
from prefgen.schema import REJECT_ALL_TIED, candidate

# --- parsing one judgment --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"rating": 4, "rationale": "could have been more specific"}', (4.0, "could have been more specific")),
        ('```json\n{"rating": "5", "rationale": "good definition"}\n```', (5.0, "good definition")),
        ("4 - could have been more specific", (4.0, "could have been more specific")),
        ("Score: 2 - vague", (2.0, "vague")),
        ("**3**/5: fine\nbut short", (3.0, "fine but short")),
    ],
)
def test_valid_answers(text, expected):
    assert parse_judgment(text, rationales=True) == expected


@pytest.mark.parametrize(
    "text",
    [
        '{"rating": 0, "rationale": "x"}',
        '{"rating": 6, "rationale": "x"}',
        '{"rating": 4.5, "rationale": "x"}',
        '{"rating": true, "rationale": "x"}',
        '{"rating": "N/A", "rationale": "x"}',
        '{"rating": -1, "rationale": "x"}',
        '{"rating": 3}',
        '{"rating": 3, "rationale": "   "}',
        '{"score": 3, "rationale": "x"}',
        '{"rating": 3, "rationale": "cut of',
        '{"rating": 3, "rating": 4, "rationale": "x"}',
        "N/A - not applicable",
        "The response is good.",
        "",
        "7 - great",
    ],
)
def test_invalid_answers_refused(text):
    with pytest.raises(JudgmentError):
        parse_judgment(text, rationales=True)


def test_not_applicable_is_missing_only_where_allowed():
    assert parse_judgment('{"rating": "N/A", "rationale": "a poem asserts nothing"}', True, allow_na=True) == (
        None,
        "a poem asserts nothing",
    )
    assert parse_judgment("N/A - no claims", True, allow_na=True) == (None, "no claims")
    with pytest.raises(JudgmentError):
        parse_judgment('{"rating": "N/A", "rationale": "x"}', True, allow_na=False)


def test_rationale_optional_when_off():
    assert parse_judgment('{"rating": 2}', rationales=False) == (2.0, None)
    assert parse_judgment("5", rationales=False) == (5.0, None)


@given(st.integers(), st.text(max_size=50))
def test_json_rating_accepted_only_in_range(rating, rationale):
    text = json.dumps({"rating": rating, "rationale": rationale})
    if 1 <= rating <= 5 and rationale.strip():
        assert parse_judgment(text, rationales=True) == (float(rating), rationale.strip())
    else:
        with pytest.raises(JudgmentError):
            parse_judgment(text, rationales=True)


# --- parsing a joint answer --------------------------------------------------------------------


def test_joint_json_keyed_by_label_in_any_key_order():
    text = '{"B": {"rating": 2, "rationale": "thin"}, "A": {"rating": 5, "rationale": "clear"}}'
    assert parse_joint(text, ["A", "B"], True) == {"A": (5.0, "clear"), "B": (2.0, "thin")}


def test_joint_free_text_lines():
    text = "Response B: 2 - thin\nA: 5 - clear"
    assert parse_joint(text, ["A", "B"], True) == {"A": (5.0, "clear"), "B": (2.0, "thin")}


@pytest.mark.parametrize(
    "text",
    [
        '{"A": {"rating": 5, "rationale": "x"}}',  # B missing
        '{"A": {"rating": 5, "rationale": "x"}, "B": {"rating": 3, "rationale": "y"}, "C": {"rating": 1, "rationale": "z"}}',
        '{"A": {"rating": 5, "rationale": "x"}, "A": {"rating": 3, "rationale": "y"}}',  # repeated key
        '{"A": {"rating": 5, "rationale": "x"}, "B": {"rating": 9, "rationale": "y"}}',
        "A: 5 - good\n\nA: 3 - again",  # the blank-line shift: a label twice, one missing
        "5 - good\n3 - worse",  # positions without labels are never trusted
    ],
)
def test_joint_refuses_wrong_count_labels_or_range(text):
    with pytest.raises(JudgmentError):
        parse_joint(text, ["A", "B"], True)


def test_labels_and_schemas():
    assert labels_for(3) == ["A", "B", "C"] and labels_for(28)[26:] == ["AA", "AB"]
    schema = joint_schema(["A", "B"], rationales=True)
    assert schema["required"] == ["A", "B"] and schema["additionalProperties"] is False
    assert schema["properties"]["A"] == judgment_schema(True)
    na = judgment_schema(True, allow_na=True)["properties"]["rating"]
    assert {"type": "string", "enum": ["N/A"]} in na["anyOf"]


def test_prompts_hold_the_texts_in_the_order_given():
    [_, msg] = joint_judge_prompt("Q?", [("A", "second text"), ("B", "first text")], "honesty", True, "n0nce")
    text = msg["content"]
    assert text.index("<response A n0nce>\nsecond text\n</response A n0nce>") < text.index("<response B n0nce>\nfirst text")
    assert "N/A" in text and "honesty" in text
    [_, single] = judge_prompt("What is synthetic data?", "Data made by a program.", "overall", False, "n0nce")
    assert "<response n0nce>\nData made by a program.\n</response n0nce>" in single["content"]
    assert "rationale" not in single["content"]


# --- the task: no rating ever lands on another candidate ----------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=8),
    st.integers(1, 4),
    st.integers(0, 10_000),
    st.randoms(),
)
def test_no_rating_moves_under_any_permutation(true_ratings, permutations, seed, rnd):
    texts = [f"text number {i}" for i in range(len(true_ratings))]
    truth = dict(zip(texts, true_ratings))
    rows = [row("r1", texts)]
    engine = ScriptedEngine(truthful_judge(truth, rnd.shuffle))
    JudgeTask("j", "m", permutations=permutations, seed=seed).run(rows, engine)
    for cand in rows[0]["candidates"]:
        assert cand["rating"] == truth[cand["text"]]
        assert cand["rating_spread"] == 0
        assert len(cand["judgments"]) == permutations
        assert all(j["rationale"] == f"for {cand['text']}" for j in cand["judgments"])
    positions = [j["position"] for c in rows[0]["candidates"] for j in c["judgments"] if j["permutation"] == 0]
    assert sorted(positions) == list(range(len(texts)))


def test_shuffle_is_seeded_reproducible_and_not_degenerate():
    texts = [f"t{i}" for i in range(5)]

    def first_shown(seed, rid):
        r = row(rid, texts)
        JudgeTask("j", "m", seed=seed).run([r], ScriptedEngine(truthful_judge(dict.fromkeys(texts, 3), lambda x: x)))
        return tuple(sorted(r["candidates"], key=lambda c: c["judgments"][0]["position"])[0]["text"] for _ in [0])

    assert first_shown(1, "a") == first_shown(1, "a")
    firsts = {first_shown(seed, f"row{seed}") for seed in range(40)}
    assert len(firsts) >= 4  # the first slot is not always the same candidate


def test_aspects_combine_with_na_missing_and_count_calls():
    truth_by_aspect = {"helpfulness": 4, "honesty": "N/A", "truthfulness": 2}

    def reply(req):
        prompt = req.messages[-1]["content"]
        aspect = re.match(r"Aspect: (\S+)", prompt).group(1)
        shown = responses_by_label(prompt)
        return [json.dumps({label: {"rating": truth_by_aspect[aspect], "rationale": "r"} for label in shown})]

    rows = [row("r1", ["a", "b"])]
    engine = ScriptedEngine(reply)
    JudgeTask("j", "m", aspects=list(truth_by_aspect), permutations=2).run(rows, engine)
    for cand in rows[0]["candidates"]:
        assert len(cand["judgments"]) == 3 * 2  # aspects x permutations
        assert cand["rating"] == 3.0  # mean of 4 and 2; honesty's N/A left out, not counted as a number
        assert sum(j["not_applicable"] for j in cand["judgments"]) == 2
    assert len(engine.calls[0]) == 3 * 2  # one call per aspect and permutation


def test_retry_then_give_up_keeps_raw_text_and_never_defaults():
    answers = iter(['{"A": {"rating": 5, "rationale": "x"}}', "5 - good\n1 - bad", "{}"])
    rows = [row("r1", ["a", "b"])]
    engine = ScriptedEngine(lambda req: [next(answers)])
    JudgeTask("j", "m", permutations=1, max_retries=2).run(rows, engine)
    assert len(engine.calls) == 3
    assert engine.calls[0][0].sampling.temperature == 0.0 and engine.calls[1][0].sampling.temperature == 0.7
    for cand in rows[0]["candidates"]:
        assert cand["rating"] is None
        [j] = cand["judgments"]
        assert j["rating"] is None and j["raw"] == "{}" and j["attempts"] == 3
        assert "attempt 1" in j["error"] and "attempt 3" in j["error"]
        assert cand["judge_error"]


def test_retry_that_succeeds_is_recorded():
    answers = iter(["garbage", '{"A": {"rating": 4, "rationale": "ok"}}'])
    rows = [row("r1", ["a"])]
    JudgeTask("j", "m", permutations=1).run(rows, ScriptedEngine(lambda req: [next(answers)]))
    [j] = rows[0]["candidates"][0]["judgments"]
    assert (j["rating"], j["attempts"], j["error"]) == (4.0, 2, None)
    assert j["retried_because"].startswith("attempt 1:")


def test_single_mode_one_call_per_candidate_and_prompt_too_long():
    rows = [row("r1", ["short", "x" * 50])]

    def reply(req):
        if "x" * 50 in req.messages[-1]["content"]:
            return Result(error="prompt has 9999 tokens")
        return ['{"rating": 4, "rationale": "fine"}']

    engine = ScriptedEngine(reply)
    JudgeTask("j", "m", mode="single").run(rows, engine)
    short, long_ = rows[0]["candidates"]
    assert short["rating"] == 4.0 and long_["rating"] is None and "9999" in long_["judge_error"]
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 2  # too long is not retried


def test_jury_ratings_average_and_agreement():
    cand = candidate(candidate_id="r/g/0", text="t")
    cand["judgments"] = [
        {"judge": "a", "aspect": "overall", "rating": 5.0, "error": None, "rationale": "x"},
        {"judge": "b", "aspect": "overall", "rating": 2.0, "error": None, "rationale": "y"},
    ]
    combine_candidate(cand, {"a": "mean", "b": "mean"})
    assert (cand["rating"], cand["judge_agreement"], cand["rationale"]) == (3.5, 3.0, "x")
    cand["judgments"].append({"judge": "c", "aspect": "overall", "rating": None, "error": "bad", "rationale": None})
    combine_candidate(cand, {"a": "mean", "b": "mean", "c": "mean"})
    assert cand["rating"] is None and "c/overall" in cand["judge_error"]


def aspect_judgments(judge, ratings):
    return [{"judge": judge, "aspect": a, "rating": r, "error": None, "rationale": None} for a, r in ratings.items()]


def test_each_judge_combines_its_aspects_with_its_own_rule():
    cand = candidate(candidate_id="r/g/0", text="t")
    cand["judgments"] = aspect_judgments("a", {"helpfulness": 5.0, "honesty": 1.0}) + aspect_judgments(
        "b", {"helpfulness": 4.0, "honesty": 2.0}
    )
    combine_candidate(cand, {"a": "min", "b": "mean"})
    assert (cand["rating"], cand["judge_agreement"]) == (2.0, 2.0)  # a: min(5, 1) = 1; b: mean(4, 2) = 3
    combine_candidate(cand, {"a": "mean", "b": "min"})
    assert (cand["rating"], cand["judge_agreement"]) == (2.5, 1.0)  # a: 3; b: 2


def test_jury_stages_keep_each_judges_rule():
    """Judges run one stage after another; the last one must not impose its rule on the first."""

    def by_aspect(ratings):
        def reply(req):
            aspect = next(a for a in ratings if a in req.messages[-1]["content"].split("\n")[0].lower())
            return [json.dumps({label: {"rating": ratings[aspect], "rationale": "r"}
                                for label in responses_by_label(req.messages[-1]["content"])})]
        return reply

    aspects = ["helpfulness", "truthfulness"]
    rows = [row("r1", ["a"])]
    rules = {"strict": "min", "lenient": "mean"}
    JudgeTask("strict", "m", aspects=aspects, combine="min", combine_rules=rules).run(
        rows, ScriptedEngine(by_aspect({"helpfulness": 5, "truthfulness": 1})))
    JudgeTask("lenient", "m", aspects=aspects, combine="mean", combine_rules=rules).run(
        rows, ScriptedEngine(by_aspect({"helpfulness": 4, "truthfulness": 2})))
    assert rows[0]["candidates"][0]["rating"] == 2.0  # strict: min(5, 1) = 1; lenient: mean(4, 2) = 3


# --- orders that cancel a judge that rates by position --------------------------------------------


def check_recorded_orders(rows, engine):
    """Every judgment's label, position and order seed say what the judge was really shown."""
    prompts = [responses_by_label(req.messages[-1]["content"]) for batch in engine.calls for req in batch]
    for r in rows:
        calls = {}
        for c in r["candidates"]:
            for j in c["judgments"]:
                calls.setdefault((j["aspect"], j["permutation"]), {})[j["label"]] = (c["text"], j)
        for shown in calls.values():
            texts = {label: text for label, (text, _j) in shown.items()}
            assert texts in prompts  # this labelling was the one in a real request
            assert [j["position"] for _t, j in shown.values()] == [labels_for(len(shown)).index(lb) for lb in shown]
            assert len({j["order_seed"] for _t, j in shown.values()}) == 1


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_balanced_orders_cancel_any_position_only_judge(n):
    rows = [row("r1", [f"text {i}" for i in range(n)])]
    engine = ScriptedEngine(position_judge(lambda pos, _text: [5, 1, 4, 2, 3][pos]))  # not even monotone
    JudgeTask("j", "m", permutations="balanced", seed=7).run(rows, engine)
    cands = rows[0]["candidates"]
    assert len({c["rating"] for c in cands}) == 1  # exactly equal: every candidate was in every position once
    for c in cands:
        assert sorted(j["position"] for j in c["judgments"]) == list(range(n))
        assert len({j["order_seed"] for j in c["judgments"]}) == 1  # all rotations of one seeded shuffle
    check_recorded_orders(rows, engine)
    pairs, rejects = split_rows(rows, "best_vs_worst", 1.0)
    assert pairs == [] and rejects[0]["reason"] == REJECT_ALL_TIED


def test_an_order_and_its_reverse_cancel_a_linear_position_effect():
    truth = {"low": 1, "mid": 2, "high": 3}
    rows = [row(f"r{i}", list(truth)) for i in range(10)]
    engine = ScriptedEngine(position_judge(lambda pos, text: truth[text] + 2 - pos))  # +2, +1, +0 by position
    JudgeTask("j", "m", permutations=2, seed=3).run(rows, engine)
    for r in rows:
        rating = {c["text"]: c["rating"] for c in r["candidates"]}
        assert rating["high"] - rating["mid"] == rating["mid"] - rating["low"] == 1.0  # the bias is gone exactly
        assert len({rating[t] - truth[t] for t in truth}) == 1
        first, second = ({c["text"]: j["position"] for c in r["candidates"] for j in c["judgments"]
                          if j["permutation"] == p} for p in (0, 1))
        assert all(second[t] == 2 - first[t] for t in truth)  # the second order is the first reversed
    check_recorded_orders(rows, engine)


def test_more_orders_come_in_mirrored_pairs_with_new_shuffles():
    texts = [f"t{i}" for i in range(5)]
    task = JudgeTask("j", "m", permutations=5, seed=1)
    calls = task.calls([row("r1", texts)])
    orders = [[c["text"] for c in call.shown] for call in calls]
    seeds = [call.seed for call in calls]
    assert orders[1] == orders[0][::-1] and orders[3] == orders[2][::-1]
    assert seeds[0] == seeds[1] != seeds[2] == seeds[3] != seeds[4]
    assert len({tuple(o) for o in orders}) == 5
    assert [c.permutation for c in calls] == list(range(5))


# --- answers cut off at max_tokens ----------------------------------------------------------------

CUT_JSON = '{"A": {"rating": 4, "rationale": "the answer explains'
GOOD_JSON = '{"A": {"rating": 4, "rationale": "clear"}}'


def cut(text):
    return Result(texts=[text], finish_reasons=["length"], tokens=5)


def whole(text):
    return Result(texts=[text], finish_reasons=["stop"], tokens=5)


def limits(engine):
    return [batch[0].sampling.max_tokens for batch in engine.calls]


def test_truncated_answer_is_retried_with_doubled_room_up_to_the_ceiling():
    from prefgen.report.summary import judge_counts

    rows = [row("r1", ["a"])]
    engine = ScriptedEngine(lambda req: cut(CUT_JSON))
    JudgeTask("j", "m", SamplingConfig(temperature=0.0, max_tokens=100), max_retries=4, permutations=1).run(rows, engine)
    assert limits(engine) == [100, 200, 400, 400, 400]  # doubles, then holds at 4x
    [j] = rows[0]["candidates"][0]["judgments"]
    assert j["rating"] is None and j["raw"] == CUT_JSON and (j["truncated"], j["max_tokens"]) == (True, 400)
    assert j["error"].startswith("answer cut off at max_tokens=400")
    assert j["retried_because"].startswith("attempt 1: truncated at 100 tokens")
    assert "attempt 3: truncated at 400 tokens" in j["retried_because"]
    counts = judge_counts(rows[0]["candidates"])
    assert counts["truncated_answers"] == 5 and counts["parse_failures"] == 0
    assert (counts["retries"], counts["calls_given_up"]) == (4, 1)


def test_growth_of_one_never_grows_and_parse_failures_keep_the_limit():
    engine = ScriptedEngine(lambda req: cut(CUT_JSON))
    JudgeTask("j", "m", SamplingConfig(max_tokens=100), max_tokens_growth=1, permutations=1).run([row("r1", ["a"])], engine)
    assert limits(engine) == [100, 100, 100]
    engine = ScriptedEngine(lambda req: whole("not json at all"))
    JudgeTask("j", "m", SamplingConfig(max_tokens=100), permutations=1).run([row("r1", ["a"])], engine)
    assert limits(engine) == [100, 100, 100]  # a complete but bad answer is not a reason for more room


def test_truncated_then_complete_answer_is_kept_and_counted_apart_from_parse_failures():
    from prefgen.report.summary import judge_counts

    answers = iter([whole("garbage"), cut(CUT_JSON), whole(GOOD_JSON)])
    rows = [row("r1", ["a"])]
    engine = ScriptedEngine(lambda req: next(answers))
    JudgeTask("j", "m", SamplingConfig(max_tokens=64), max_retries=2, permutations=1).run(rows, engine)
    assert limits(engine) == [64, 64, 128]
    [j] = rows[0]["candidates"][0]["judgments"]
    assert (j["rating"], j["error"], j["truncated"], j["max_tokens"]) == (4.0, None, False, 128)
    assert j["truncated_answers"] == 1
    assert j["retried_because"].startswith("attempt 1: labels do not match")
    assert "attempt 2: truncated at 64 tokens" in j["retried_because"]
    counts = judge_counts(rows[0]["candidates"])
    assert counts["parse_failures"] == 1 and counts["truncated_answers"] == 1
    assert (counts["retries"], counts["calls_given_up"]) == (2, 0)


def test_truncated_answer_that_still_validates_is_accepted_and_flagged():
    from prefgen.report.summary import judge_counts

    rows = [row("r1", ["a", "b"])]
    answer = 'A: 5 - clear and complete\nB: 2 - it stops befo'  # every rating there, the last rationale cut
    engine = ScriptedEngine(lambda req: cut(answer))
    JudgeTask("j", "m", guided=False, permutations=1).run(rows, engine)
    assert len(engine.calls) == 1
    ratings = {c["text"]: c["rating"] for c in rows[0]["candidates"]}
    assert sorted(ratings.values()) == [2.0, 5.0]
    assert all(j["truncated"] and j["error"] is None for c in rows[0]["candidates"] for j in c["judgments"])
    counts = judge_counts(rows[0]["candidates"])
    assert (counts["truncated_answers"], counts["parse_failures"], counts["retries"]) == (1, 0, 0)


def test_grown_retry_the_prompt_leaves_no_room_for_falls_back_to_the_limit_that_fit():
    from prefgen.report.summary import judge_counts

    def reply(req):  # the engine's check: this prompt leaves room for 150 answer tokens
        limit = req.sampling.max_tokens
        if limit > 150:
            return Result(error=f"prompt has 1900 tokens; max_model_len 2048 leaves {2048 - limit} after {limit}")
        return cut(CUT_JSON)

    def judge(max_retries):
        rows = [row("r1", ["a"])]
        engine = ScriptedEngine(reply)
        JudgeTask("j", "m", SamplingConfig(max_tokens=100), max_retries=max_retries, permutations=1).run(rows, engine)
        [j] = rows[0]["candidates"][0]["judgments"]
        return limits(engine), j, judge_counts(rows[0]["candidates"])

    asked, j, counts = judge(max_retries=3)
    assert asked == [100, 200, 100, 100]  # refused at 200, then never grown past what fit
    assert j["raw"] == CUT_JSON and (j["max_tokens"], j["attempts"], j["truncated_answers"]) == (100, 3, 3)
    assert j["error"].startswith("answer cut off at max_tokens=100")
    assert "attempt 2: max_tokens=200 does not fit: prompt has 1900" in j["error"]
    assert (counts["truncated_answers"], counts["parse_failures"], counts["calls_given_up"]) == (3, 0, 1)

    asked, j, counts = judge(max_retries=1)  # the refused retry was the last one
    assert asked == [100, 200] and j["attempts"] == 1 and j["raw"] == CUT_JSON
    assert j["error"].startswith("answer cut off at max_tokens=100") and "max_tokens=200 does not fit" in j["error"]
    assert (counts["truncated_answers"], counts["parse_failures"], counts["calls_given_up"]) == (1, 0, 1)


def test_a_candidate_rated_in_one_order_of_two_is_marked_and_counted():
    from prefgen.report.summary import judge_counts

    def reply(req):  # the order that shows "alpha" first never validates; its reverse does
        shown = responses_by_label(req.messages[-1]["content"])
        if shown["A"] == "alpha":
            return ["not an answer"]
        return [json.dumps({label: {"rationale": "a considered reason", "rating": 4} for label in shown})]

    rows = [row("r1", ["alpha", "beta"])]
    JudgeTask("j", "m", permutations=2, max_retries=1).run(rows, ScriptedEngine(reply))
    for cand in rows[0]["candidates"]:
        assert cand["rating"] == 4.0 and cand["judge_error"] is None  # the order that answered still rates it
        assert cand["failed_orders"] == 1  # ... but a reader sees that one order of two failed
        assert cand["rating_spread"] is None  # not 0: the orders were never compared
    counts = judge_counts(rows[0]["candidates"])
    assert counts["candidates_missing_orders"] == 2 and counts["calls_given_up"] == 1
    both = [row("r2", ["alpha", "beta"])]
    JudgeTask("j", "m", permutations=2).run(both, ScriptedEngine(lambda req: [json.dumps(
        {label: {"rationale": "a considered reason", "rating": 4} for label in "AB"})]))
    assert [(c["failed_orders"], c["rating_spread"]) for c in both[0]["candidates"]] == [(0, 0.0), (0, 0.0)]
    assert judge_counts(both[0]["candidates"])["candidates_missing_orders"] == 0


def placeholder_judge(req):
    """All alike with rationales that say nothing, as a small judge answered on a six-candidate row."""
    shown = responses_by_label(req.messages[-1]["content"])
    return [json.dumps({label: {"rationale": f"{label}1", "rating": 1} for label in shown})]


def test_an_uninformative_answer_is_asked_again_then_flagged_and_the_row_says_so():
    from prefgen.report.summary import judge_counts

    rows = [row("r1", [f"answer {k}" for k in range(6)])]
    engine = ScriptedEngine(placeholder_judge)
    JudgeTask("j", "m", permutations=1, max_retries=2).run(rows, engine)
    assert len(engine.calls) == 2  # asked once more, not until max_retries runs out
    [j] = rows[0]["candidates"][0]["judgments"]
    assert j["uninformative"] is True and j["uninformative_answers"] == 2 and j["error"] is None
    assert "uninformative" in j["retried_because"]
    counts = judge_counts(rows[0]["candidates"])
    assert (counts["uninformative_answers"], counts["uninformative_calls"], counts["parse_failures"]) == (2, 1, 0)
    pairs, rejects = split_rows(rows, "best_vs_worst", 1.0)
    assert not pairs and rejects[0]["reason"] == "uninformative_judgment"  # not all_tied: nothing says they tie
    assert "rated every candidate 1" in rejects[0]["detail"] and "'A1'" in rejects[0]["detail"]


def test_a_retry_that_informs_replaces_the_uninformative_answer():
    answers = iter([placeholder_judge, lambda req: [json.dumps(
        {label: {"rationale": f"reason enough for {label}", "rating": 5 - k}
         for k, label in enumerate(responses_by_label(req.messages[-1]["content"]))})]])
    rows = [row("r1", ["a", "b", "c"])]
    JudgeTask("j", "m", permutations=1).run(rows, ScriptedEngine(lambda req: next(answers)(req)))
    assert sorted(c["rating"] for c in rows[0]["candidates"]) == [3.0, 4.0, 5.0]
    assert all(not j["uninformative"] and j["uninformative_answers"] == 1
               for c in rows[0]["candidates"] for j in c["judgments"])


def test_equal_ratings_with_real_rationales_are_a_tie_not_uninformative():
    rows = [row("r1", ["a", "b"])]
    engine = ScriptedEngine(lambda req: [json.dumps({label: {"rationale": "correct and complete, if plain",
                                                             "rating": 4} for label in "AB"})])
    JudgeTask("j", "m", permutations=1).run(rows, engine)
    assert len(engine.calls) == 1
    assert split_rows(rows, "best_vs_worst", 1.0)[1][0]["reason"] == REJECT_ALL_TIED
