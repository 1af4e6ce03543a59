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
from scripted_engine import ScriptedEngine

from prefgen.engine import Result
from prefgen.judge import JudgeTask, JudgmentError, combine_candidate, labels_for, parse_joint, parse_judgment
from prefgen.prompts import joint_judge_prompt, joint_schema, judge_prompt, judgment_schema
from prefgen.schema import candidate

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


def row(rid, texts):
    cands = [
        candidate(candidate_id=f"{rid}/g/{i}", text=t, model="m", generator="g", origin="generated")
        for i, t in enumerate(texts)
    ]
    return {"id": rid, "instruction": "Q?", "source": "s", "line": 1, "candidates": cands, "output_tokens": 0,
            "reject_reason": None, "reject_detail": None}


def responses_by_label(prompt: str) -> dict[str, str]:
    blocks = re.findall(r"<response ([A-Z]+) (\w+)>\n(.*?)\n</response \1 \2>", prompt, flags=re.S)
    return {label: text for label, _nonce, text in blocks}


def truthful_judge(truth: dict[str, int], shuffle_keys):
    """Answers every label with the true rating of the text shown under it, keys in any order."""

    def reply(req):
        shown = responses_by_label(req.messages[-1]["content"])
        labels = list(shown)
        shuffle_keys(labels)
        return [json.dumps({label: {"rating": truth[shown[label]], "rationale": f"for {shown[label]}"} for label in labels})]

    return reply


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
    JudgeTask("j", "m", max_retries=2).run(rows, engine)
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
    JudgeTask("j", "m").run(rows, ScriptedEngine(lambda req: [next(answers)]))
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
    combine_candidate(cand)
    assert (cand["rating"], cand["judge_agreement"], cand["rationale"]) == (3.5, 3.0, "x")
    cand["judgments"].append({"judge": "c", "aspect": "overall", "rating": None, "error": "bad", "rationale": None})
    combine_candidate(cand)
    assert cand["rating"] is None and "c/overall" in cand["judge_error"]
