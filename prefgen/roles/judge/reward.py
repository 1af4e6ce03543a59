"""A reward model as a judge: one scalar score per (instruction, response), and how it combines.

A model declared `kind: reward_model` is a sequence-classification model with one output label
(e.g. `LlamaForSequenceClassification`, `num_labels=1`). `RewardEngine` runs it with vLLM's
pooling runner: each candidate is written as a two-turn chat (the instruction as the user, the
response as the assistant) through the model's chat template, and the score is the head's raw
output (`classify` with `use_activation=False`: the logit, not the sigmoid vLLM applies by default).

`RewardTask` is the judge role on such a model. It scores every candidate of a row once and
records the score as a judgment (aspect `reward`, rating = the raw score, no rationale), so the
provenance stays in the output. How scores become the candidate's `rating` (`reward_overrides`):
- the reward model the only judge: its raw score, as it is. Pairing's `min_margin` is then in the
  model's own units (a margin of 1 may be far too large or too small: set it for the model);
- beside other judges (a jury): within each instruction, every reward judge's scores are mapped
  linearly onto 1-5 (lowest score of the row -> 1, highest -> 5; all equal -> 3), then averaged
  with the other judges' 1-5 ratings like any juror's. The mapping keeps the reward model's order
  and relative gaps within the row; it says nothing about absolute quality across rows.
Reward judges run after every LLM judge (see `plan.ordered_roles`), so their task sets the final
combination of the row.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from prefgen.models.declarations import JURY_SCALE
from prefgen.models.settings import EngineConfig
from prefgen.roles.judge.config import JudgeConfig
from prefgen.roles.judge.task import combine_candidate
from prefgen.prompts import Message

REWARD_ASPECT = "reward"


@dataclass
class Score:
    value: float | None = None
    error: str | None = None  # set instead of value when the conversation could not be scored


def conversation(instruction: str, response: str, messages: list[Message] | None = None) -> list[Message]:
    """The exchange a reward model scores: the prompt (a whole conversation if given), then the response."""
    prompt = messages or [{"role": "user", "content": instruction}]
    return [*prompt, {"role": "assistant", "content": response}]


class RewardEngine:
    """A resident `vllm.LLM` on the pooling runner, scoring whole conversations."""

    def __init__(self, source: str, eng: EngineConfig, device: str):
        from vllm import LLM

        from prefgen.engines.arguments import engine_kwargs, use_cpu_threads

        use_cpu_threads(device)
        kwargs = {"runner": "pooling", **engine_kwargs(source, eng, device)}
        self.max_model_len = eng.max_model_len
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def token_ids(self, messages: list[Message]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return list(ids)

    def score(self, conversations: list[list[Message]]) -> list[Score]:
        from vllm import PoolingParams

        scores = [Score() for _ in conversations]
        runnable = []
        for i, messages in enumerate(conversations):
            ids = self.token_ids(messages)
            if len(ids) > self.max_model_len:
                scores[i].error = f"conversation has {len(ids)} tokens; max_model_len is {self.max_model_len}"
            else:
                runnable.append((i, ids))
        if runnable:
            outputs = self.llm.classify([{"prompt_token_ids": ids} for _, ids in runnable],
                                        pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
            for (i, _), out in zip(runnable, outputs):
                values = list(out.outputs.probs)
                if len(values) != 1:
                    scores[i].error = f"the model has {len(values)} output labels; a reward model has one"
                else:
                    scores[i].value = float(values[0])
        return scores


def checked(score: Score) -> Score:
    """A score as recorded: a value that is not a finite number becomes an error."""
    if score.error is None and (score.value is None or not math.isfinite(score.value)):
        return Score(None, f"the model returned a score that is not a finite number: {score.value!r}")
    return score


def reward_judgment(judge: str, score: Score) -> dict:
    """One candidate's reward score as a judgment: same fields as an LLM judge's, no order, no rationale."""
    return {"judge": judge, "aspect": REWARD_ASPECT, "permutation": 0, "position": None, "label": None,
            "order_seed": None, "nonce": None, "rating": score.value, "not_applicable": False, "rationale": None, "raw": None,
            "error": score.error, "attempts": 1, "retried_because": None, "max_tokens": None, "truncated": False,
            "truncated_answers": 0, "uninformative": False, "uninformative_answers": 0}


def to_jury_scale(scores: dict[str, float]) -> dict[str, float]:
    """Scores (by candidate id) mapped linearly onto 1-5 within the group; all equal -> the midpoint."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    bottom, top = JURY_SCALE
    if high == low:
        return dict.fromkeys(scores, (bottom + top) / 2)
    return {cid: bottom + (top - bottom) * (s - low) / (high - low) for cid, s in scores.items()}


def reward_overrides(cands: list[dict], reward_judges: set[str], jury_size: int) -> dict[str, dict[str, float]]:
    """The combine rule for reward judges, per candidate id: {judge: score to combine with}.

    Alone (jury_size 1): nothing overridden, the raw score is the rating. In a jury: each reward
    judge's scores of this row mapped onto 1-5 (`to_jury_scale`)."""
    overrides: dict[str, dict[str, float]] = {}
    if jury_size <= 1:
        return overrides
    for judge in sorted(reward_judges):
        raw = {c["candidate_id"]: j["rating"] for c in cands for j in c["judgments"] or []
               if j["judge"] == judge and j["rating"] is not None}
        for cid, value in to_jury_scale(raw).items():
            overrides.setdefault(cid, {})[judge] = value
    return overrides


def combine_row(cands: list[dict], rules: dict[str, str], reward_judges: set[str], jury_size: int) -> None:
    """Set every candidate's combined rating, reward judges included (see the module docstring)."""
    overrides = reward_overrides(cands, reward_judges, jury_size)
    for cand in cands:
        judges = {j["judge"] for j in cand["judgments"] or []}
        combine_candidate(cand, dict.fromkeys(judges, "mean") | rules, overrides.get(cand["candidate_id"]))


@dataclass
class RewardTask:
    """The judge role on a reward model: every candidate of a row scored once."""

    name: str
    model: str
    reward_judges: set[str] = field(default_factory=set)  # every judge of the run on a reward model
    jury_size: int = 1  # judges in the run (judge + jury)
    combine_rules: dict[str, str] = field(default_factory=dict)  # every judge's combine rule, by name
    dropped: Counter = field(default_factory=Counter)  # nothing is dropped; kept for the Task shape

    @classmethod
    def from_config(cls, config: JudgeConfig, model: str, reward_judges: set[str],
                    combine_rules: dict[str, str]) -> RewardTask:
        """One judge's task on a reward model (`model`: its source); `reward_judges`: the run's judges on a
        reward model; `combine_rules`: every judge's `combine` by name (their number is the jury's size)."""
        return cls(config.name, model, set(reward_judges), len(combine_rules), dict(combine_rules))

    @property
    def role(self) -> str:
        return f"judge:{self.name}"

    def run(self, rows: list[dict], engine) -> None:
        items = [(row, cand) for row in rows for cand in row["candidates"]]
        scores = _score(engine, [conversation(row["instruction"], cand["text"], row.get("messages"))
                                 for row, cand in items])
        for (_row, cand), score in zip(items, scores, strict=True):
            cand["judgments"] = [*(cand["judgments"] or []), reward_judgment(self.name, checked(score))]
        for row in rows:
            combine_row(row["candidates"], self.combine_rules, self.reward_judges | {self.name}, self.jury_size)


def _score(engine, conversations: list[list[Message]]) -> list[Score]:
    """Score through the stage's engine; the stage hands tasks a request-counting wrapper
    (`stage.CountingEngine`, which knows only `chat`), so it is unwrapped and its count kept."""
    scorer = engine if hasattr(engine, "score") else engine.engine
    if not conversations:
        return []
    scores = scorer.score(conversations)
    if scorer is not engine and hasattr(engine, "requests"):
        engine.requests += len(conversations)
    return scores
