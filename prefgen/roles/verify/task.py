"""The pair check: the judge sees each pair's chosen and rejected side by side, in both orders.

Ratings pick a pair; the check asks whether it holds. For each pair, the judge under `judge:` is
shown the two answers under the labels A and B twice: the chosen first (order 0), then the
rejected first (order 1), and names the better one each time (`prompts/verifying.py`, JSON under
guided decoding: a short reason, then "A" or "B"). What the verdicts mean is `verdicts.outcome`;
the writer keeps a pair only when both name the chosen, or flags it (`pairing.verification`).

Where it runs. Pairing is a pure function the writer calls on the driver's side, after every
engine stage; the check needs an engine. So the check is a task of its own, `VerifyTask`, run
last in the judge's engine stage: it pairs each row provisionally with the very function and
arguments the writer uses (`pair.select_pairs`, `pair.row_rng`: seeded by run seed and row id,
so both get the same pairs), asks for the verdicts and records them on the row (`verdicts`);
the writer then pairs again and reads the verdicts of its pairs. It comes after every judge (a
jury's ratings, a reward model's included, are final by then), on the judge's model: in the
judge's own stage when that stage is the last one, else in a stage of its own on that model
(`plan.plan_stages`; a second engine, named `<model>#2`). The plan counts its two calls per pair.

Nothing is guessed: an answer that does not validate is asked again (sampled) up to the judge's
`max_retries`, an answer cut off at `max_tokens` with twice the room (at most 4x; a grown limit the
prompt leaves no room for goes back to the configured one); a verdict not had is recorded with
its error, and its pair counts as unverified. An endpoint request that still
fails rejects the row as `request_failed`, as in judging.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

from prefgen.models.settings import SamplingConfig
from prefgen.engines.engine import ChatEngine, Request, Result, TemplateRefused
from prefgen.roles.generate.task import cut_off
from prefgen.roles.judge.config import JudgeConfig
from prefgen.roles.pair import row_rng, select_pairs
from prefgen.prompts import VERDICT_LABELS, block_nonce, verdict_schema, verify_prompt
from prefgen.schema import REJECT_REQUEST_FAILED

RETRY_TEMPERATURE = 0.7
MAX_TOKENS_GROWTH = 4
_LABEL_ONLY = re.compile(r"^\W*(?:response\s+)?([AB])\W*$", re.I)


class VerdictError(ValueError):
    """An answer that names neither A nor B (or both)."""


def parse_verdict(text: str) -> tuple[str, str | None]:
    """(label, reason) from `{"reason": ..., "better": "A"|"B"}`, or from a bare `A` / `Response B` line."""
    start, end = text.find("{"), text.rfind("}")
    if start >= 0 and end > start:
        try:
            data = json.loads(text[start : end + 1])
        except json.JSONDecodeError as exc:
            raise VerdictError(f"invalid JSON: {exc.msg}") from None
        if not isinstance(data, dict) or "better" not in data:
            raise VerdictError("the answer has no 'better'")
        label = data["better"].strip().upper() if isinstance(data["better"], str) else None
        if label not in VERDICT_LABELS:
            raise VerdictError(f"'better' is {data['better']!r}, not one of {', '.join(VERDICT_LABELS)}")
        reason = data.get("reason")
        return label, reason.strip() if isinstance(reason, str) and reason.strip() else None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    match = _LABEL_ONLY.match(lines[-1]) if lines else None
    if not match:
        raise VerdictError("the answer is neither JSON nor a label")
    return match.group(1).upper(), None


@dataclass
class Check:
    """One verdict to get: a row's pair shown in one order."""

    row: dict
    chosen: dict
    rejected: dict
    order: int  # 0: the chosen shown first (A); 1: the rejected first
    max_tokens: int
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    nonce: str = field(default_factory=block_nonce)  # secret, random per call, recorded

    @property
    def shown(self) -> tuple[dict, dict]:
        return (self.chosen, self.rejected) if self.order == 0 else (self.rejected, self.chosen)

    def verdict(self, judge: str, label: str | None, reason: str | None, raw: str | None, error: str | None,
                truncated: bool) -> dict:
        shown = dict(zip(VERDICT_LABELS, self.shown))
        return {"judge": judge, "chosen_candidate_id": self.chosen["candidate_id"],
                "rejected_candidate_id": self.rejected["candidate_id"], "order": self.order,
                "first_shown": self.shown[0]["candidate_id"],
                "better": shown[label]["candidate_id"] if label else None, "label": label, "reason": reason,
                "nonce": self.nonce, "raw": raw,
                "error": error if error is None else "; ".join([*self.errors, error]), "attempts": self.attempts,
                "truncated": truncated}


@dataclass
class VerifyTask:
    """Checks every provisional pair of a row in both orders (see the module docstring)."""

    judge: str  # the judge's name, recorded in each verdict
    model: str
    pairing: dict  # PairingConfig as a dict: strategy, min_margin, length_matched, allow_truncated_chosen
    seed: int = 0
    # the judge's, as `JudgeConfig` sets them once
    sampling: SamplingConfig = field(default_factory=JudgeConfig.model_fields["sampling"].default_factory)
    guided: bool = JudgeConfig.model_fields["guided"].default
    max_retries: int = JudgeConfig.model_fields["max_retries"].default
    dropped: Counter = field(default_factory=Counter)  # drops no output; kept for the Task shape
    adapter: str | None = None  # the LoRA adapter (of the model) its requests run on; none: the base

    @classmethod
    def from_config(cls, judge: JudgeConfig, model: str, pairing: dict, seed: int) -> VerifyTask:
        """The pair check run by `judge` on its model (`model`: its source), with its sampling and retries;
        `pairing` (PairingConfig as a dict) and the run's `seed` give the pairs the writer will form."""
        return cls(judge.name, model, dict(pairing), seed, judge.sampling, judge.guided, judge.max_retries,
                   adapter=judge.adapter)

    @property
    def role(self) -> str:
        return f"verify:{self.judge}"

    def pairs_of(self, row: dict) -> list[tuple[dict, dict]]:
        """The pairs the writer will form from this row (the same pure function, seeded the same)."""
        p = self.pairing
        pairs, _reason = select_pairs(row["candidates"], p["strategy"], p["min_margin"], p["length_matched"],
                                      row_rng(self.seed, row["id"]), p["allow_truncated_chosen"])
        return pairs

    def check_chat_template(self, refusal) -> None:
        """At engine start: the model's chat template must render the check's prompt (it has a system message)."""
        why = refusal(verify_prompt("Say hello.", "Hello.", "Hi.", "n0nce"))
        if why is not None:
            raise TemplateRefused(f"pair check of judge {self.judge!r}: the chat template of model {self.model} refuses "
                                  f"its prompt, which opens with a system message ({why}); set "
                                  "pairing.verification.enabled: false or judge with another model")

    def run(self, rows: list[dict], engine: ChatEngine, pairs_of=None) -> None:
        """Record both orders' verdicts of every pair on its row (`verdicts`); `pairs_of(row)` gives the pairs
        (default: the writer's pairing; `prefgen calibrate` passes the labelled pair)."""
        pairs_of = pairs_of or self.pairs_of
        pending = []
        for row in rows:
            row["verdicts"] = []
            for chosen, rejected in pairs_of(row):
                pending += [Check(row, chosen, rejected, order, self.sampling.max_tokens) for order in (0, 1)]
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            results = engine.chat([self._request(check, attempt) for check in pending])
            pending = [check for check, result in zip(pending, results) if self._take(check, result, attempt)]

    def _request(self, check: Check, attempt: int) -> Request:
        first, second = check.shown
        messages = verify_prompt(check.row["instruction"], first["text"], second["text"], check.nonce)
        update = {"max_tokens": check.max_tokens} | ({"temperature": RETRY_TEMPERATURE} if attempt else {})
        return Request(messages, self.sampling.model_copy(update=update), 1, verdict_schema() if self.guided else None,
                       adapter=self.adapter)

    def _take(self, check: Check, result: Result, attempt: int) -> bool:
        """Record the check's verdict, or its failure; True if it is to be asked again."""
        check.row["output_tokens"] += result.tokens
        record = lambda *args: check.row["verdicts"].append(check.verdict(self.judge, *args))  # noqa: E731
        if result.failed:  # an endpoint request that failed after its retries: the row is rejected, as in judging
            check.attempts += 1
            record(None, None, None, result.failed, False)
            check.row["reject_reason"] = REJECT_REQUEST_FAILED
            check.row["reject_detail"] = f"{self.role}: {result.failed}"
            return False
        if result.error:  # the prompt does not fit at this limit
            check.attempts += 1
            if check.max_tokens > self.sampling.max_tokens and attempt < self.max_retries:  # a grown limit
                check.errors.append(f"attempt {attempt + 1}: max_tokens={check.max_tokens} does not fit: {result.error}")
                check.max_tokens = self.sampling.max_tokens  # back to the configured one
                return True
            record(None, None, None, result.error, False)  # nor at the configured one: no verdict
            return False
        check.attempts += 1
        text, cut = result.texts[0], cut_off(result, 0)
        try:
            label, reason = parse_verdict(text)
        except VerdictError as exc:
            why = f"attempt {attempt + 1}: " + (f"cut off at max_tokens={check.max_tokens} ({exc})" if cut else str(exc))
            if attempt == self.max_retries:
                record(None, None, text, why, cut)
                return False
            check.errors.append(why)
            if cut:
                check.max_tokens = min(2 * check.max_tokens, MAX_TOKENS_GROWTH * self.sampling.max_tokens)
            return True
        record(label, reason, text, None, cut)
        return False
