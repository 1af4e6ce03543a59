"""Checks across the keys of a whole config: settings that can never produce a pair; and what a
setting with an automatic value resolves to (`verifies`: is the pair check on).

Each function takes a resolved `PipelineConfig` and returns the problems it finds, each message
starting with the key to change (`pairing.min_margin: ...`), so the run stops before any engine
starts instead of rejecting every row. Pure functions: no engine, no files.
"""

from __future__ import annotations

from prefgen.models.declarations import JURY_SCALE, EndpointModel, RewardModel, why_no_adapters
from prefgen.prompts import rubric_for


def originals_per_row(cfg, provided: int | None = None) -> int:
    """Candidates a row gets before evolution: the generators' completions and the provided responses.

    `provided`: the row's responses from the input; none: one per column of `input.responses` (a
    column holding a list gives at least one, so this is the least a usable row gets)."""
    provided = len(cfg.input.responses) if provided is None else provided
    return sum(g.num_completions for g in cfg.generators) + provided


def candidates_per_row(cfg, provided: int | None = None) -> int:
    """Candidates a row gets when every request succeeds (`plan.expected_calls` counts judge calls by it)."""
    originals = originals_per_row(cfg, provided)
    ev = cfg.evolution
    if not ev.enabled:
        return originals
    return originals * ev.num_evolutions + (originals if ev.keep_original else 0)


def rating_range(cfg) -> tuple[float, float, str] | None:
    """(lowest, highest, where the highest comes from) a candidate's combined rating can take;
    None when a lone reward-model judge rates in raw, unbounded scores.

    A combined rating is a mean (or min) of judges' ratings, each a mean (or min) of aspect
    ratings; a judge or aspect that failed or answered N/A is left out, so one candidate may be
    rated on a single aspect of a single judge: the range is that of the widest scale in use."""
    scales: list[tuple[float, float, str]] = []
    for judge in cfg.judges:
        if isinstance(cfg.model_of(judge), RewardModel):
            if len(cfg.judges) == 1:
                return None
            scales.append((*JURY_SCALE, f"judge {judge.name!r} (a reward model, mapped onto the jury's scale)"))
            continue
        for aspect in judge.aspects:
            low, high = rubric_for(aspect, judge.rubrics).scale
            scales.append((low, high, f"judge {judge.name!r}, aspect {aspect!r}"))
    low = min(s[0] for s in scales)
    _, high, where = max(scales, key=lambda s: s[1])
    return low, high, where


def never_output(cfg) -> list[str]:
    """Settings under which no row can ever become a pair, or every request is refused."""
    problems = []
    count = candidates_per_row(cfg)
    if count < 2 and not cfg.input.responses:  # a response column may hold a list: see few_candidates
        problems.append(
            f"generators: every row gets {count} candidate (num_completions summed over the generators, plus one per "
            f"column of input.responses{'' if cfg.evolution.enabled else ', evolution disabled'}) and a pair needs "
            "two; raise generators.0.num_completions, add a generator, add a response column (input.responses), or "
            "enable evolution with keep_original"
        )
    found = rating_range(cfg)
    if found is not None:
        low, high, where = found
        if cfg.pairing.min_margin > high - low:
            problems.append(
                f"pairing.min_margin: {cfg.pairing.min_margin:g} can never be met: ratings run from {low:g} to "
                f"{high:g} at most ({where}), so no two candidates differ by more than {high - low:g}"
            )
    for key, role in cfg.roles_by_key():
        model = cfg.model_of(role)
        if isinstance(model, (RewardModel, EndpointModel)):
            continue  # a reward model samples nothing; an endpoint's server checks the length itself
        limit, budget = role.sampling.max_tokens, model.engine.max_model_len
        if limit >= budget:
            problems.append(
                f"{key}.sampling.max_tokens: {limit} leaves no room for a prompt in the max_model_len of model "
                f"{role.model!r} ({budget}, models.{role.model}.engine.max_model_len); every request would be "
                "rejected as prompt_too_long"
            )
    if cfg.pairing.verification.enabled is True and isinstance(cfg.model_of(cfg.judge), RewardModel):
        problems.append(
            f"pairing.verification.enabled: true needs a judge that answers in words, and judge {cfg.judge.name!r} is "
            f"the reward model {cfg.judge.model!r}, which scores answers one at a time; set it to auto or false"
        )
    return problems


def verifies(cfg) -> bool:
    """Whether pairs are checked head to head (`pairing.verification`): `auto` is on for a generative judge."""
    return cfg.pairing.verification.enabled is not False and not isinstance(cfg.model_of(cfg.judge), RewardModel)


def few_candidates(cfg) -> str | None:
    """A warning when a row gets two candidates only if its response column holds a list of them."""
    count = candidates_per_row(cfg)
    if count >= 2 or not cfg.input.responses:
        return None
    return (f"input.responses: rows get {count} candidate(s) when column {cfg.input.responses[0]!r} holds one "
            "response; a row needs a list of two or more there, or it is rejected as too_few_candidates")


def check_adapter_of(key: str, role, model_name: str, model) -> None:
    """ValueError when a role's `adapter` is not one of its model's declared adapters."""
    if role.adapter is None:
        return
    adapters = getattr(model, "adapters", None)
    if adapters is None:
        raise ValueError(f"{key}.adapter: model {model_name!r} is kind {model.kind}; adapters are served on kind "
                         f"vllm models only ({why_no_adapters(model.kind)})")
    if role.adapter not in adapters:
        declared = ", ".join(adapters) or "none"
        raise ValueError(f"{key}.adapter: {role.adapter!r} is not an adapter of model {model_name!r} "
                         f"(models.{model_name}.adapters: {declared})")
