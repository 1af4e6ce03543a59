"""Judge-answer parsing: valid answers read exactly, anything else refused, never guessed."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefgen.judge import JudgmentError, parse_judgment
from prefgen.prompts import judge_prompt, judgment_schema


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"rating": 4, "rationale": "could have been more specific"}', (4, "could have been more specific")),
        ('```json\n{"rating": "5", "rationale": "good definition"}\n```', (5, "good definition")),
        ("4 - could have been more specific", (4, "could have been more specific")),
        ("Score: 2 - vague", (2, "vague")),
        ("**3**/5: fine\nbut short", (3, "fine but short")),
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
        '{"rating": 3}',
        '{"rating": 3, "rationale": "   "}',
        '{"score": 3, "rationale": "x"}',
        '{"rating": 3, "rationale": "cut of',
        "N/A - not applicable",
        "The response is good.",
        "",
        "7 - great",
    ],
)
def test_invalid_answers_refused(text):
    with pytest.raises(JudgmentError):
        parse_judgment(text, rationales=True)


def test_rationale_optional_when_off():
    assert parse_judgment('{"rating": 2}', rationales=False) == (2, None)
    assert parse_judgment("5", rationales=False) == (5, None)


@given(st.integers(), st.text(max_size=50))
def test_json_rating_accepted_only_in_range(rating, rationale):
    text = json.dumps({"rating": rating, "rationale": rationale})
    if 1 <= rating <= 5 and rationale.strip():
        assert parse_judgment(text, rationales=True) == (rating, rationale.strip())
    else:
        with pytest.raises(JudgmentError):
            parse_judgment(text, rationales=True)


def test_schema_requires_rationale_only_when_asked():
    assert judgment_schema(True)["required"] == ["rating", "rationale"]
    assert judgment_schema(False)["required"] == ["rating"]
    assert judgment_schema(True)["properties"]["rating"] == {"type": "integer", "minimum": 1, "maximum": 5}


def test_judge_prompt_holds_instruction_response_and_aspect():
    [msg] = judge_prompt("What is synthetic data?", "Data made by a program.", "honesty", rationales=True)
    assert msg["role"] == "user"
    text = msg["content"]
    assert "What is synthetic data?" in text and "Data made by a program." in text
    assert "honesty" in text and '"rationale"' in text
