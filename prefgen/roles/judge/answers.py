"""Reading a judge's answer: JSON keyed by label (or one judgment), or the classic
`A: 4 - rationale` lines, checked for labels, count and the rubric's range.

Nothing is guessed: an answer that does not validate raises `JudgmentError`, which the judge
task turns into a retry or a failed judgment. Keys may come in any order (the schema asks for
the rationale first); repeated keys are refused rather than silently overwritten.
"""

from __future__ import annotations

import json
import re

from prefgen.prompts import NOT_APPLICABLE

_SCORE_LINE = re.compile(r"^\s*(?:score\s*[:=]?\s*)?\**(\d{1,2}|N/A)\**(?:\s*/\s*\d{1,2})?\s*(?:[-–—:|]\s*(.*))?$", re.I)
_LABEL_LINE = re.compile(r"^\s*(?i:response\s+)?\**([A-Z]{1,2})\**\s*[:.)\-–]\s*(.*)$")


class JudgmentError(ValueError):
    pass


Judgment = tuple[float | None, str | None]  # (rating, None for N/A; rationale)


Scale = tuple[int, int]  # lowest and highest rating of the aspect's rubric
FIVE = (1, 5)


def _check_rating(value, allow_na: bool, scale: Scale = FIVE) -> float | None:
    if allow_na and isinstance(value, str) and value.strip().upper() == NOT_APPLICABLE:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise JudgmentError(f"rating {value!r} is not an integer")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise JudgmentError(f"rating {value!r} is not an integer")
        value = int(value)
    if not scale[0] <= value <= scale[1]:
        raise JudgmentError(f"rating {value} is outside {scale[0]}-{scale[1]}")
    return float(value)


def _check_judgment(data, rationales: bool, allow_na: bool, scale: Scale = FIVE) -> Judgment:
    """A judgment object, its keys in either order (the schema asks rationale first)."""
    if not isinstance(data, dict) or "rating" not in data:
        raise JudgmentError("judgment has no 'rating'")
    rating = _check_rating(data["rating"], allow_na, scale)
    rationale = data.get("rationale")
    if rationales and not (isinstance(rationale, str) and rationale.strip()):
        raise JudgmentError("judgment has no rationale")
    return rating, rationale.strip() if isinstance(rationale, str) else None


def _no_duplicate_keys(pairs: list[tuple]) -> dict:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:  # json.loads would silently keep the last one
        raise JudgmentError(f"repeated keys {repeated}")
    return dict(pairs)


def _load_json(text: str) -> dict:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise JudgmentError("no JSON object in the answer")
    try:
        data = json.loads(text[start : end + 1], object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise JudgmentError(f"invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise JudgmentError("the answer is not a JSON object")
    return data


def _score_and_rationale(match: re.Match, tail: list[str], rationales: bool, allow_na: bool,
                         scale: Scale = FIVE) -> Judgment:
    rationale = " ".join([match.group(2) or ""] + tail).strip() or None
    if rationales and not rationale:
        raise JudgmentError("a score without a rationale")
    return _check_rating(match.group(1), allow_na, scale), rationale


def parse_judgment(text: str, rationales: bool, allow_na: bool = False, scale: Scale = FIVE) -> Judgment:
    """One response's judgment: JSON, or the classic `score - rationale` line."""
    if "{" in text:
        return _check_judgment(_load_json(text), rationales, allow_na, scale)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    match = _SCORE_LINE.match(lines[0]) if lines else None
    if not match:
        raise JudgmentError("answer is neither JSON nor 'score - rationale'")
    return _score_and_rationale(match, lines[1:], rationales, allow_na, scale)


def parse_joint(text: str, labels: list[str], rationales: bool, allow_na: bool = False,
                scale: Scale = FIVE) -> dict[str, Judgment]:
    """Judgments keyed by label; exactly the given labels, each once, or JudgmentError."""
    if "{" in text:
        data = _load_json(text)
        found = {label: _check_judgment(value, rationales, allow_na, scale)
                 for label, value in data.items() if label in labels}
        extra = sorted(set(data) - set(labels))
    else:  # free text: one "<label>: <score> - <rationale>" line per response
        found, extra = {}, []
        for line in (line for line in text.splitlines() if line.strip()):
            labelled = _LABEL_LINE.match(line)
            score = _SCORE_LINE.match(labelled.group(2)) if labelled else None
            if not score:
                continue
            if labelled.group(1) in found or labelled.group(1) not in labels:
                extra.append(labelled.group(1))
                continue
            found[labelled.group(1)] = _score_and_rationale(score, [], rationales, allow_na, scale)
    missing = [label for label in labels if label not in found]
    if missing or extra:
        raise JudgmentError(f"labels do not match: missing {missing}, unexpected or repeated {extra}")
    return found
