"""UltraFeedback-style judging: every candidate rated per aspect (1-5 built in), with a rationale.

Two modes:
- joint: all candidates of an instruction in one call, under letter labels, in an order
  shuffled from a recorded seed; the answer is keyed by label, so a rating is tied to its
  candidate by name, never by position. `permutations` > 1 judges k different orders and
  keeps the spread as a confidence measure.
- single: one candidate per call.

Each aspect is judged against its rubric (built-in or the config's own, `prompts.rubrics`), with
the instruction and candidates in nonce-tagged blocks they cannot break out of.

Under guided decoding the answer is JSON constrained to the schema in `prompts/judging.py`; without it
the same parsers read the answer and refuse anything that does not validate (count, labels,
range). A refused answer is asked again (sampled, so a retry can differ) up to `max_retries`
times, then recorded as a failed judgment with its raw text. A rating is never guessed,
defaulted, clipped or moved; honesty's N/A is recorded as missing, not as a number.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from statistics import mean

from prefgen.config import SamplingConfig
from prefgen.engine import ChatEngine, Request
from prefgen.prompts import (
    NOT_APPLICABLE,
    Rubric,
    block_nonce,
    joint_judge_prompt,
    joint_schema,
    judge_prompt,
    judgment_schema,
    rubric_for,
)

RETRY_TEMPERATURE = 0.7
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


# --- the task ------------------------------------------------------------------------------------


def labels_for(n: int) -> list[str]:
    """A, B, ..., Z, AA, AB, ...: stable labels for n responses."""
    letters = [chr(ord("A") + i) for i in range(26)]
    return [letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26] for i in range(n)]


def order_seed(run_seed: int, row_id: str, judge: str, aspect: str, permutation: int) -> int:
    digest = hashlib.sha256(f"{run_seed}:{row_id}:{judge}:{aspect}:{permutation}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


@dataclass
class Call:
    """One judge request: a row's candidates (one, or all in shown order) on one aspect."""

    row: dict
    aspect: str
    permutation: int
    shown: list[dict]
    seed: int | None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return labels_for(len(self.shown))


@dataclass
class JudgeTask:
    name: str
    model: str
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=512))
    aspects: list[str] = field(default_factory=lambda: ["overall"])
    mode: str = "joint"
    permutations: int = 1
    rationales: bool = True
    guided: bool = True
    max_retries: int = 2
    combine: str = "mean"
    seed: int = 0
    rubrics: dict[str, Rubric] = field(default_factory=dict)  # a config's own rubrics; built-ins otherwise

    def calls(self, rows: list[dict]) -> list[Call]:
        calls = []
        for row in rows:
            cands = row["candidates"]
            for aspect in self.aspects:
                if self.mode == "single":
                    calls += [Call(row, aspect, 0, [c], None) for c in cands]
                    continue
                for perm in range(self.permutations):
                    seed = order_seed(self.seed, row["id"], self.name, aspect, perm)
                    shown = sorted(cands, key=lambda c: c["candidate_id"])
                    random.Random(seed).shuffle(shown)
                    calls.append(Call(row, aspect, perm, shown, seed))
        return [c for c in calls if c.shown]

    def _rubric(self, aspect: str) -> Rubric:
        return rubric_for(aspect, self.rubrics)

    def nonce(self, call: Call) -> str:
        """The call's block nonce: from its order seed and row id (single mode: a seed from the candidate id)."""
        if call.seed is not None:
            return block_nonce(call.seed, call.row["id"])
        cand_id = call.shown[0]["candidate_id"]
        return block_nonce(order_seed(self.seed, cand_id, self.name, call.aspect, call.permutation), call.row["id"])

    def _request(self, call: Call, attempt: int) -> Request:
        rubric = self._rubric(call.aspect)
        instruction, nonce = call.row["instruction"], self.nonce(call)
        if self.mode == "single":
            messages = judge_prompt(instruction, call.shown[0]["text"], call.aspect, self.rationales, nonce, rubric)
            schema = judgment_schema(self.rationales, rubric.allows_na, rubric.scale)
        else:
            labelled = list(zip(call.labels, (c["text"] for c in call.shown)))
            messages = joint_judge_prompt(instruction, labelled, call.aspect, self.rationales, nonce, rubric)
            schema = joint_schema(call.labels, self.rationales, rubric.allows_na, rubric.scale)
        sampling = self.sampling.model_copy(update={"temperature": RETRY_TEMPERATURE}) if attempt else self.sampling
        return Request(messages, sampling, 1, schema if self.guided else None)

    def _parse(self, call: Call, text: str) -> dict[str, Judgment]:
        rubric = self._rubric(call.aspect)
        if self.mode == "single":
            return {"A": parse_judgment(text, self.rationales, rubric.allows_na, rubric.scale)}
        return parse_joint(text, call.labels, self.rationales, rubric.allows_na, rubric.scale)

    def _record(self, call: Call, parsed: dict[str, Judgment] | None, raw: str | None, error: str | None) -> None:
        for position, (label, cand) in enumerate(zip(call.labels, call.shown)):
            rating, rationale = parsed[label] if parsed else (None, None)
            cand["judgments"].append(
                {
                    "judge": self.name,
                    "aspect": call.aspect,
                    "permutation": call.permutation,
                    "position": position,
                    "label": label,
                    "order_seed": call.seed,
                    "rating": rating,
                    "not_applicable": parsed is not None and rating is None,
                    "rationale": rationale,
                    "raw": raw,
                    "error": error,
                    "attempts": call.attempts,
                    "retried_because": "; ".join(call.errors) or None,
                }
            )

    def run(self, rows: list[dict], engine: ChatEngine) -> None:
        for row in rows:
            for cand in row["candidates"]:
                cand["judgments"] = cand["judgments"] or []
        pending = self.calls(rows)
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            results = engine.chat([self._request(call, attempt) for call in pending])
            retry = []
            for call, result in zip(pending, results):
                call.row["output_tokens"] += result.tokens
                call.attempts += 1
                if result.error:  # the prompt does not fit: asking again cannot help
                    self._record(call, None, None, result.error)
                    continue
                try:
                    self._record(call, self._parse(call, result.texts[0]), result.texts[0], None)
                except JudgmentError as exc:
                    call.errors.append(f"attempt {attempt + 1}: {exc}")
                    if attempt < self.max_retries:
                        retry.append(call)
                    else:
                        self._record(call, None, result.texts[0], "; ".join(call.errors))
            pending = retry
        for row in rows:
            for cand in row["candidates"]:
                combine_candidate(cand, self.combine)


def combine_candidate(cand: dict, combine: str = "mean") -> None:
    """Set rating, rating_spread, judge_agreement, rationale and judge_error from judgments.

    Per judge and aspect: mean over permutations (their max-min is the spread). Per judge: the
    aspects combined (mean or min), N/A aspects left out. Over judges: the mean (their max-min
    is the agreement). A judge/aspect whose every judgment failed leaves the candidate unrated.
    """
    cells: dict[tuple[str, str], list[dict]] = {}
    for j in cand["judgments"] or []:
        cells.setdefault((j["judge"], j["aspect"]), []).append(j)
    failed = [js for js in cells.values() if all(j["error"] for j in js)]
    cand["judge_error"] = "; ".join(f"{js[0]['judge']}/{js[0]['aspect']}: {js[-1]['error']}" for js in failed) or None
    per_judge: dict[str, list[float]] = {}
    spreads = []
    for (judge, _aspect), js in cells.items():
        values = [j["rating"] for j in js if j["rating"] is not None]
        if values:
            per_judge.setdefault(judge, []).append(mean(values))
            spreads.append(max(values) - min(values))
    judge_scores = [mean(v) if combine == "mean" else min(v) for v in per_judge.values() if v]
    usable = judge_scores and not failed
    cand["rating"] = mean(judge_scores) if usable else None
    cand["rating_spread"] = max(spreads) if usable else None
    cand["judge_agreement"] = (max(judge_scores) - min(judge_scores)) if usable and len(judge_scores) > 1 else None
    rationales = [j["rationale"] for j in cand["judgments"] or [] if j["rationale"]]
    cand["rationale"] = rationales[0] if rationales else None
