"""UltraFeedback-style judging: every candidate rated 1-5 on one aspect, with a rationale.

Each candidate is judged in a call of its own, so a rating is tied to its candidate by
construction and can never shift onto a neighbour. Under guided decoding the answer is JSON
constrained to `judgment_schema`; without it the same parser also reads the classic
`score - rationale` line. An answer that does not validate is asked again (with sampling, so a
retry can differ) up to `max_retries` times, then left unrated with the raw text and the error
kept on the candidate. A rating is never guessed, defaulted or clipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from prefgen.engine import ChatEngine, Request
from prefgen.prompts import judge_prompt, judgment_schema

RETRY_TEMPERATURE = 0.7
_SCORE_LINE = re.compile(r"^\s*(?:score\s*[:=]?\s*)?\**([1-5])\**(?:\s*/\s*5)?\s*(?:[-–—:|]\s*(.*))?$", re.I)


class JudgmentError(ValueError):
    pass


def _check_rating(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise JudgmentError(f"rating {value!r} is not an integer")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise JudgmentError(f"rating {value!r} is not an integer")
        value = int(value)
    if not 1 <= value <= 5:
        raise JudgmentError(f"rating {value} is outside 1-5")
    return value


def _parse_json(text: str, rationales: bool) -> tuple[int, str | None]:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise JudgmentError("no JSON object in the answer")
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise JudgmentError(f"invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or "rating" not in data:
        raise JudgmentError("JSON answer has no 'rating'")
    rating = _check_rating(data["rating"])
    rationale = data.get("rationale")
    if rationales and not (isinstance(rationale, str) and rationale.strip()):
        raise JudgmentError("JSON answer has no rationale")
    return rating, rationale.strip() if isinstance(rationale, str) else None


def _parse_score_line(text: str, rationales: bool) -> tuple[int, str | None]:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    match = _SCORE_LINE.match(lines[0]) if lines else None
    if not match:
        raise JudgmentError("answer is neither JSON nor 'score - rationale'")
    rationale = " ".join([match.group(2) or ""] + lines[1:]).strip() or None
    if rationales and not rationale:
        raise JudgmentError("answer has a score but no rationale")
    return int(match.group(1)), rationale


def parse_judgment(text: str, rationales: bool) -> tuple[int, str | None]:
    """Read one judge answer: (rating 1-5, rationale), or JudgmentError saying what is wrong."""
    if "{" in text:
        return _parse_json(text, rationales)
    return _parse_score_line(text, rationales)


@dataclass
class JudgeTask:
    model: str
    aspect: str = "overall"
    rationales: bool = True
    guided: bool = True
    max_retries: int = 2

    def run(self, rows: list[dict], engine: ChatEngine) -> None:
        schema = judgment_schema(self.rationales) if self.guided else None
        pending = [(row, c) for row in rows for c in row["candidates"]]
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            temperature = RETRY_TEMPERATURE if attempt else None
            requests = [
                Request(judge_prompt(row["instruction"], c["text"], self.aspect, self.rationales), 1, schema, temperature)
                for row, c in pending
            ]
            retry = []
            for (row, cand), result in zip(pending, engine.chat(requests)):
                row["output_tokens"] += result.tokens
                if result.error:  # the prompt does not fit: asking again cannot help
                    cand["judge_error"] = result.error
                    continue
                cand["judge_raw"] = result.texts[0]
                try:
                    cand["rating"], cand["rationale"] = parse_judgment(result.texts[0], self.rationales)
                    cand["judge_error"] = None
                except JudgmentError as exc:
                    cand["judge_error"] = f"attempt {attempt + 1}: {exc}"
                    retry.append((row, cand))
            pending = retry
