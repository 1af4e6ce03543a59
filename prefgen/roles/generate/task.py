"""Generation: each pooled model answers every instruction, adding its completions as candidates.

One generator is one `GenerateTask` in its own engine stage; the pool is the chain of those
stages, each appending to the row's candidate list, so the candidates of an instruction are
grouped as they are made (no shuffle, no barrier). An empty completion adds no candidate and
is counted in `dropped`, which the stage reports. A completion cut off at `max_tokens` stays a
candidate marked `truncated`: it can still serve as a rejected answer, and pairing decides
whether it may be chosen. A conversation (multi-turn prompt) is continued: the generator answers its
last user turn with the earlier turns before it (see `prompts.continue_prompt`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from prefgen.models.settings import SamplingConfig
from prefgen.engines.engine import ChatEngine, Request, Result, TemplateRefused
from prefgen.prompts import continue_prompt, generation_prompt
from prefgen.roles.generate.config import GeneratorConfig
from prefgen.schema import REJECT_REQUEST_FAILED, REJECT_TOO_LONG, candidate


def cut_off(result: Result, k: int) -> bool:
    """Whether text k of a result stopped at `max_tokens` rather than where the model ended it."""
    return k < len(result.finish_reasons) and result.finish_reasons[k] == "length"


@dataclass
class GenerateTask:
    name: str
    model: str
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    system_prompt: str | None = None
    num_completions: int = GeneratorConfig.model_fields["num_completions"].default  # the config's, set once
    dropped: Counter = field(default_factory=Counter)  # completions that became no candidate, by reason
    template: str | None = None  # the user message's template, holding {instruction}; none: the instruction
    adapter: str | None = None  # the LoRA adapter (of the model) its requests run on; none: the base

    @classmethod
    def from_config(cls, config: GeneratorConfig, model: str) -> GenerateTask:
        """The task of one generator, on the model it names (`model`: its source, as candidates record it)."""
        return cls(config.name, model, config.sampling, config.system_prompt, config.num_completions,
                   template=config.template, adapter=config.adapter)

    @property
    def role(self) -> str:
        return f"generate:{self.name}"

    def check_chat_template(self, refusal) -> None:
        """At engine start: the model's chat template must render this generator's conversation."""
        why = refusal(generation_prompt("Say hello.", self.system_prompt, self.template))
        if why is None:
            return
        if self.system_prompt and refusal(generation_prompt("Say hello.", None, self.template)) is None:
            raise TemplateRefused(
                f"generator {self.name!r} has a system_prompt, and the chat template of model {self.model} refuses "
                f"a system message ({why}); put the system prompt into the generator's template instead, or use "
                "a model whose chat template takes a system message")
        raise TemplateRefused(f"generator {self.name!r}: the chat template of model {self.model} refuses its "
                              f"conversation ({why})")

    def run(self, rows: list[dict], engine: ChatEngine) -> None:
        requests = [
            Request(continue_prompt(row.get("messages") or [{"role": "user", "content": row["instruction"]}],
                                    self.system_prompt, self.template), self.sampling, n=self.num_completions,
                    adapter=self.adapter)
            for row in rows
        ]
        for row, result in zip(rows, engine.chat(requests)):
            row["output_tokens"] += result.tokens
            if result.failed:
                row["reject_reason"] = REJECT_REQUEST_FAILED
                row["reject_detail"] = f"generator {self.name}: {result.failed}"
                continue
            if result.error:
                row["reject_reason"] = REJECT_TOO_LONG
                row["reject_detail"] = f"generator {self.name}: {result.error}"
                continue
            for k, text in enumerate(result.texts):
                if not text.strip():
                    self.dropped["empty"] += 1
                else:
                    row["candidates"].append(
                        candidate(
                            candidate_id=f"{row['id']}/{self.name}/{k}",
                            text=text.strip(),
                            model=self.model,
                            generator=self.name,
                            origin="generated",
                            truncated=cut_off(result, k),
                        )
                    )
