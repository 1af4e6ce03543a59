"""EvolQuality: rewrite completions into better versions, each rewrite a candidate of its own.

Round 1 rewrites every original candidate: each generated completion and each response the
input provides (`input.responses`); round r rewrites round r-1's rewrites. Each
rewrite targets one criterion, drawn per candidate and round from a hash of the run seed and
the candidate id, so the draw is the same on every run and independent of batching. A rewrite
is not assumed better: the judge rates it like any other candidate. A rewrite that failed
(prompt too long), came back empty or unchanged adds no candidate and is counted in `dropped`.

A rewrite cut off at `max_tokens` is kept, marked `truncated`, rather than dropped: the judge
still rates it, pairing never makes it the chosen answer (unless asked to) but may use it as a
rejected one, and the truncated counts show how often the evolver's limit is too tight, which a
silent drop would hide. It is also rewritten in the next round like any other rewrite, where
the evolver may finish it; that rewrite carries its own flag.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from prefgen.models.settings import SamplingConfig
from prefgen.engines.engine import ChatEngine, Request, TemplateRefused
from prefgen.roles.evolve.config import EvolutionConfig
from prefgen.roles.generate.task import cut_off
from prefgen.prompts import EVOL_CRITERIA, clean_evolved, evolve_prompt
from prefgen.schema import REJECT_REQUEST_FAILED, candidate

# The candidates round 1 rewrites, and `keep_original: false` drops: the generators' completions and
# the responses the input provides (they are candidates like any other).
ORIGINALS = ("generated", "provided")


def pick_criterion(criteria: list[str], seed: int, candidate_id: str, round_no: int) -> str:
    digest = hashlib.sha256(f"{seed}:{candidate_id}:{round_no}".encode()).digest()
    return criteria[int.from_bytes(digest[:8], "big") % len(criteria)]


def why_dropped(error: str | None, text: str, parent_text: str) -> str | None:
    """Why a rewrite adds no candidate, or None if it does."""
    if error:
        return "prompt_too_long"
    if not text:
        return "empty"
    return "unchanged" if text == parent_text else None


@dataclass
class EvolveTask:
    model: str
    criteria: list[str] | dict[str, str]  # built-in names, or name -> text (a config's `evolution.criteria`)
    sampling: SamplingConfig = field(default_factory=EvolutionConfig.model_fields["sampling"].default_factory)
    num_evolutions: int = EvolutionConfig.model_fields["num_evolutions"].default  # the config's, set once
    keep_original: bool = EvolutionConfig.model_fields["keep_original"].default
    seed: int = 0
    dropped: Counter = field(default_factory=Counter)  # rewrites that became no candidate, by reason
    template: str | None = None  # the rewrite template's text; none: EvolQuality's
    adapter: str | None = None  # the LoRA adapter (of the model) its requests run on; none: the base

    @classmethod
    def from_config(cls, config: EvolutionConfig, model: str, seed: int) -> EvolveTask:
        """The evolver's task on its model (`model`: its source); `seed`: the run's, which draws the criteria."""
        return cls(model, dict(config.criteria), config.sampling, config.num_evolutions, config.keep_original, seed,
                   template=config.template, adapter=config.adapter)

    def criterion_text(self, name: str) -> str:
        return self.criteria[name] if isinstance(self.criteria, dict) else EVOL_CRITERIA[name]

    @property
    def role(self) -> str:
        return "evolve"

    def check_chat_template(self, refusal) -> None:
        """At engine start: the model's chat template must render the rewrite request."""
        why = refusal(evolve_prompt("Say hello.", "Hello.", "Be kind.", self.template))
        if why is not None:
            raise TemplateRefused(f"evolution: the chat template of model {self.model} refuses the rewrite "
                                  f"request ({why})")

    def run(self, rows: list[dict], engine: ChatEngine) -> None:
        parents = [(row, c) for row in rows for c in row["candidates"] if c["origin"] in ORIGINALS]
        for round_no in range(1, self.num_evolutions + 1):
            if not parents:
                break
            names = list(self.criteria)
            criteria = [pick_criterion(names, self.seed, c["candidate_id"], round_no) for _, c in parents]
            requests = [
                Request(evolve_prompt(row["instruction"], c["text"], self.criterion_text(crit), self.template),
                        self.sampling, adapter=self.adapter)
                for (row, c), crit in zip(parents, criteria)
            ]
            children = []
            for (row, parent), crit, result in zip(parents, criteria, engine.chat(requests)):
                row["output_tokens"] += result.tokens
                if result.failed:  # the rule of every role: a request that failed rejects its row
                    row["reject_reason"], row["reject_detail"] = REJECT_REQUEST_FAILED, f"evolve: {result.failed}"
                    continue
                text = clean_evolved(result.texts[0]) if result.texts else ""
                reason = why_dropped(result.error, text, parent["text"])
                if reason:  # a failed or no-op rewrite adds nothing; the parent stays
                    self.dropped[reason] += 1
                    continue
                child = candidate(
                    candidate_id=f"{parent['candidate_id']}/e{round_no}",
                    text=text,
                    model=self.model,
                    generator="evolver",
                    origin="evolved",
                    parent_id=parent["candidate_id"],
                    criterion=crit,
                    truncated=cut_off(result, 0),
                )
                row["candidates"].append(child)
                children.append((row, child))
            parents = [(row, c) for row, c in children if row.get("reject_reason") is None]
        if not self.keep_original:
            for row in rows:
                row["candidates"] = [c for c in row["candidates"] if c["origin"] not in ORIGINALS]
