"""UltraFeedback-style judging: every candidate rated per aspect (1-5 built in), with a rationale.

Two modes:
- joint: all candidates of an instruction in one call, under letter labels, in an order
  shuffled from a recorded seed; the answer is keyed by label, so a rating is tied to its
  candidate by name, never by position. `permutations` > 1 judges k orders chosen so that
  position effects cancel (`orders.py`: a shuffle and its reverse, or with "balanced" every
  rotation) and keeps the spread as a confidence measure.
- single: one candidate per call.

Each aspect is judged against its rubric (built-in or the config's own, `prompts.rubrics`), with
the instruction and candidates in blocks tagged with a secret nonce, random per call and recorded
in its judgments, that they cannot break out of.

Under guided decoding the answer is JSON constrained to the schema in `prompts/judging.py`; without it
the same parsers read the answer and refuse anything that does not validate (count, labels,
range). A refused answer is asked again (sampled, so a retry can differ) up to `max_retries`
times, then recorded as a failed judgment with its raw text. A rating is never guessed,
defaulted, clipped or moved; honesty's N/A is recorded as missing, not as a number.

An answer cut off at `max_tokens` that does not validate is asked again with twice the room
(at most `max_tokens_growth` times the configured limit). The engine still refuses a limit the
prompt leaves no room for; such a retry is asked again at the last limit that fit. An answer
cut off that validates anyway is kept: every rating is there and in range, only a rationale
may end early; its judgment says `truncated`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial

from prefgen.models.settings import SamplingConfig
from prefgen.engines.engine import ChatEngine, Request, Result, TemplateRefused
from prefgen.roles.generate.task import cut_off
from prefgen.roles.judge.config import JudgeConfig
from prefgen.roles.judge.orders import labels_for, order_seed, shown_orders
from prefgen.schema import REJECT_REQUEST_FAILED
from prefgen.roles.judge.answers import Judgment, JudgmentError, parse_joint, parse_judgment  # noqa: F401 - re-exported
from prefgen.roles.judge.combine import combine_candidate  # noqa: F401 - re-exported
from prefgen.prompts import (
    Rubric,
    block_nonce,
    joint_judge_prompt,
    joint_schema,
    judge_prompt,
    judgment_schema,
    rubric_for,
)

RETRY_TEMPERATURE = 0.7
# An answer that rates every candidate alike, each with a rationale shorter than this, says nothing
# (seen: "A1", "B1", ... all rated 1): it is asked again once, then kept and flagged `uninformative`.
UNINFORMATIVE_RATIONALE_CHARS = 12

# --- the task ------------------------------------------------------------------------------------


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
    max_tokens: int = 0  # the answer limit of the next request
    room: int | None = None  # a limit known to fit the prompt, once a larger one was refused
    truncated_answers: int = 0
    uninformative_answers: int = 0  # answers that rated all alike with rationales that say nothing
    last: tuple[str, int, bool] | None = None  # the latest answer: text, its limit, cut off?
    nonce: str = field(default_factory=block_nonce)  # of its blocks: secret, random per call, recorded

    @property
    def labels(self) -> list[str]:
        return labels_for(len(self.shown))


JUDGE_KEYS = JudgeConfig.model_fields


@dataclass
class JudgeTask:
    name: str
    model: str
    # the defaults are the config's (`JudgeConfig`), each set in one place
    sampling: SamplingConfig = field(default_factory=JUDGE_KEYS["sampling"].default_factory)
    aspects: list[str] = field(default_factory=JUDGE_KEYS["aspects"].default_factory)
    mode: str = JUDGE_KEYS["mode"].default
    # k orders, or "balanced": every rotation (see shown_orders); the default is the config's, set in one place
    permutations: int | str = JudgeConfig.model_fields["permutations"].default
    rationales: bool = JUDGE_KEYS["rationales"].default
    guided: bool = JUDGE_KEYS["guided"].default
    max_retries: int = JUDGE_KEYS["max_retries"].default
    combine: str = JUDGE_KEYS["combine"].default
    seed: int = 0
    dropped: Counter = field(default_factory=Counter)  # the judge drops no output; kept for the Task shape
    combine_rules: dict[str, str] = field(default_factory=dict)  # every judge's combine rule, by judge name
    max_tokens_growth: int = 4  # a retry's max_tokens is at most this multiple of the configured one
    rubrics: dict[str, Rubric] = field(default_factory=dict)  # a config's own rubrics; built-ins otherwise
    adapter: str | None = None  # the LoRA adapter (of the model) its requests run on; none: the base

    @classmethod
    def from_config(cls, config: JudgeConfig, model: str, seed: int, combine_rules: dict[str, str]) -> JudgeTask:
        """One judge's task on an LLM (`model`: its source); `seed`: the run's, which shuffles the orders;
        `combine_rules`: every judge's `combine` by name, as a candidate's ratings combine across judges."""
        return cls(config.name, model, config.sampling, list(config.aspects), config.mode, config.permutations,
                   config.rationales, config.guided, config.max_retries, config.combine, seed,
                   combine_rules=dict(combine_rules), rubrics=dict(config.rubrics), adapter=config.adapter)

    def calls(self, rows: list[dict]) -> list[Call]:
        calls = []
        for row in rows:
            cands = row["candidates"]
            for aspect in self.aspects:
                if self.mode == "single":
                    calls += [Call(row, aspect, 0, [c], None) for c in cands]
                    continue
                seed_of = partial(order_seed, self.seed, row["id"], self.name, aspect)
                for perm, (seed, shown) in enumerate(shown_orders(cands, self.permutations, seed_of)):
                    calls.append(Call(row, aspect, perm, shown, seed))
        return [c for c in calls if c.shown]

    def _rubric(self, aspect: str) -> Rubric:
        return rubric_for(aspect, self.rubrics)

    def check_chat_template(self, refusal) -> None:
        """At engine start: the model's chat template must render the judge's prompt (it has a system message)."""
        shown = [{"candidate_id": f"x/g/{k}", "text": "Hello."} for k in range(1 if self.mode == "single" else 2)]
        why = refusal(self._request(Call({"id": "x", "instruction": "Say hello."}, self.aspects[0], 0, shown, 1),
                                    0).messages)
        if why is not None:
            raise TemplateRefused(f"judge {self.name!r}: the chat template of model {self.model} refuses the judge's "
                                  f"prompt, which opens with a system message ({why}); judge with another model")

    def _request(self, call: Call, attempt: int) -> Request:
        rubric = self._rubric(call.aspect)
        instruction, nonce = call.row["instruction"], call.nonce
        if self.mode == "single":
            messages = judge_prompt(instruction, call.shown[0]["text"], call.aspect, self.rationales, nonce, rubric)
            schema = judgment_schema(self.rationales, rubric.allows_na, rubric.scale)
        else:
            labelled = list(zip(call.labels, (c["text"] for c in call.shown)))
            messages = joint_judge_prompt(instruction, labelled, call.aspect, self.rationales, nonce, rubric)
            schema = joint_schema(call.labels, self.rationales, rubric.allows_na, rubric.scale)
        update = {"max_tokens": call.max_tokens} | ({"temperature": RETRY_TEMPERATURE} if attempt else {})
        sampling = self.sampling.model_copy(update=update)
        return Request(messages, sampling, 1, schema if self.guided else None, adapter=self.adapter)

    def _parse(self, call: Call, text: str) -> dict[str, Judgment]:
        rubric = self._rubric(call.aspect)
        if self.mode == "single":
            return {"A": parse_judgment(text, self.rationales, rubric.allows_na, rubric.scale)}
        return parse_joint(text, call.labels, self.rationales, rubric.allows_na, rubric.scale)

    def _uninformative(self, parsed: dict[str, Judgment]) -> bool:
        """Every candidate of a joint call rated alike, with rationales of a few characters each."""
        ratings = {rating for rating, _ in parsed.values()}
        return (self.mode == "joint" and self.rationales and len(parsed) >= 2 and len(ratings) == 1
                and None not in ratings
                and all(len((why or "").strip()) < UNINFORMATIVE_RATIONALE_CHARS for _, why in parsed.values()))

    def _record(self, call: Call, parsed: dict[str, Judgment] | None, error: str | None,
                uninformative: bool = False) -> None:
        raw, limit, truncated = call.last or (None, call.max_tokens, False)
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
                    "nonce": call.nonce,
                    "rating": rating,
                    "not_applicable": parsed is not None and rating is None,
                    "rationale": rationale,
                    "raw": raw,
                    "error": error,
                    "attempts": call.attempts,
                    "retried_because": "; ".join(call.errors) or None,
                    "max_tokens": limit,
                    "truncated": truncated,
                    "truncated_answers": call.truncated_answers,
                    "uninformative": uninformative,
                    "uninformative_answers": call.uninformative_answers,
                }
            )

    @property
    def role(self) -> str:
        return f"judge:{self.name}"

    def run(self, rows: list[dict], engine: ChatEngine) -> None:
        for row in rows:
            for cand in row["candidates"]:
                cand["judgments"] = cand["judgments"] or []
        pending = self.calls(rows)
        for call in pending:
            call.max_tokens = self.sampling.max_tokens
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            results = engine.chat([self._request(call, attempt) for call in pending])
            pending = [call for call, result in zip(pending, results) if self._take(call, result, attempt)]
        for row in rows:
            for cand in row["candidates"]:
                judges = {j["judge"] for j in cand["judgments"]}
                # a judge missing from combine_rules keeps this judge's rule (the old behaviour)
                rules = dict.fromkeys(judges, self.combine) | self.combine_rules | {self.name: self.combine}
                combine_candidate(cand, rules)

    def _take(self, call: Call, result: Result, attempt: int) -> bool:
        """Record the call's answer, or its failure; True if it is to be asked again."""
        call.row["output_tokens"] += result.tokens
        if result.failed:  # an endpoint request that failed after its retries: the row is rejected
            call.attempts += 1
            self._record(call, None, result.failed)
            call.row["reject_reason"] = REJECT_REQUEST_FAILED
            call.row["reject_detail"] = f"judge {self.name}: {result.failed}"
            return False
        if result.error:  # the prompt does not fit at this limit
            if not call.last:  # nor at the configured one: asking again cannot help
                call.attempts = 1
                self._record(call, None, result.error)
                return False
            call.errors.append(f"attempt {attempt + 1}: max_tokens={call.max_tokens} does not fit: {result.error}")
            if attempt == self.max_retries:
                self._record(call, None, self._final_error(call))
                return False
            call.max_tokens = call.room = call.last[1]  # the grown limit was refused: back to one that fit
            return True
        call.attempts += 1
        call.last = (result.texts[0], call.max_tokens, cut_off(result, 0))
        call.truncated_answers += call.last[2]
        try:
            parsed = self._parse(call, result.texts[0])
        except JudgmentError as exc:
            cut = call.last[2]
            why = f"truncated at {call.max_tokens} tokens ({exc})" if cut else str(exc)
            call.errors.append(f"attempt {attempt + 1}: {why}")
            if attempt == self.max_retries:
                self._record(call, None, self._final_error(call))
                return False
            if cut:  # more room, up to the ceiling
                ceiling = call.room or self.sampling.max_tokens * max(1, self.max_tokens_growth)
                call.max_tokens = max(call.max_tokens, min(2 * call.max_tokens, ceiling))
            return True
        if self._uninformative(parsed) and not call.last[2]:
            call.uninformative_answers += 1
            if call.uninformative_answers == 1 and attempt < self.max_retries:  # once more, sampled
                rating, _ = next(iter(parsed.values()))
                call.errors.append(f"attempt {attempt + 1}: uninformative answer (every candidate rated {rating:g}, "
                                   f"rationales under {UNINFORMATIVE_RATIONALE_CHARS} characters)")
                return True
            self._record(call, parsed, None, uninformative=True)
            return False
        self._record(call, parsed, None)
        return False

    @staticmethod
    def _final_error(call: Call) -> str:
        _text, limit, cut = call.last
        return (f"answer cut off at max_tokens={limit}; " if cut else "") + "; ".join(call.errors)
