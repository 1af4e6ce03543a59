"""The run's plan: which engines start, which roles each serves, and what a row costs in calls.

Roles (generators, the evolver, the judges) are put in an order that keeps the roles of one
model next to each other: generators are independent of each other and judges too, so the
generators that share the evolver's (or the first judge's) model go last and the judges that
share it go first. Adjacent roles of one model then become one stage: one engine (per replica)
running every role's task with that role's own sampling. A model whose roles cannot be made
adjacent (e.g. it generates and judges, with another model evolving in between) gets a second
stage, and so a second engine, named `<model>#2`. Judges on a reward model come after every
other judge: their task sets the row's final combined ratings (see `judge/reward.py`). The pair check
(`verify/task.py`) comes after every judge, on the judge's model: in the last stage when that stage
runs the judge's model, else in a stage of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from prefgen.config import PipelineConfig
from prefgen.config.checks import candidates_per_row, originals_per_row, verifies
from prefgen.models.declarations import EndpointModel, RewardModel, VllmModel
from prefgen.roles.config import RoleConfig
from prefgen.roles.evolve.config import EvolutionConfig
from prefgen.roles.evolve.task import EvolveTask
from prefgen.roles.generate.config import GeneratorConfig
from prefgen.roles.generate.task import GenerateTask
from prefgen.roles.judge.config import JudgeConfig
from prefgen.roles.judge.reward import RewardTask
from prefgen.roles.judge.task import JudgeTask
from prefgen.roles.verify.config import VerificationConfig
from prefgen.roles.verify.task import VerifyTask


@dataclass
class StagePlan:
    """One engine stage: a model, placed by its engine settings, and the tasks of its roles."""

    name: str
    model_name: str
    model: VllmModel | RewardModel | EndpointModel
    tasks: list = field(default_factory=list)
    max_in_flight: int | None = None  # an endpoint stage's share of the endpoint's limit (in_flight_shares)

    @property
    def roles(self) -> list[str]:
        return [t.role for t in self.tasks]

    @property
    def label(self) -> str:
        return f"{self.name} ({', '.join(self.roles)})"


def engine_factory(model: VllmModel | RewardModel | EndpointModel, device: str, name: str = "",
                   max_in_flight: int | None = None):
    """What builds one replica's engine, by the model's kind (called inside the stage's actor).

    A chat model gets vLLM's async engine (several batches in flight share its queue); the
    reward model's pooling engine is blocking and serves its batches one at a time; an endpoint
    an HTTP client holding at most `max_in_flight` requests open (the stage's share of the
    endpoint's limit); `name` is the model's name under `models:`, for messages and counts."""
    from prefgen.engines.engine import AsyncVllmEngine
    from prefgen.roles.judge.reward import RewardEngine

    if isinstance(model, EndpointModel):
        from prefgen.engines.endpoint import EndpointEngine

        return partial(EndpointEngine, model, name, max_in_flight)
    if isinstance(model, RewardModel):
        return partial(RewardEngine, model.source, model.engine, device)
    return partial(AsyncVllmEngine, model.source, model.engine, device, model.adapters)


def in_flight_shares(stages: list[StagePlan]) -> None:
    """Split each endpoint's `max_in_flight` between its stages (one actor each), so that the
    endpoint never has more open at once, whatever runs at the same time."""
    from prefgen.engines.placement import PlanError

    for name in {s.model_name for s in stages if isinstance(s.model, EndpointModel)}:
        mine = [s for s in stages if s.model_name == name]
        limit = mine[0].model.max_in_flight
        if limit < len(mine):
            raise PlanError(f"models.{name}.max_in_flight: {limit} cannot be shared by the {len(mine)} stages its "
                            f"roles need ({', '.join(s.label for s in mine)}); raise it to {len(mine)} or more")
        for i, s in enumerate(mine):
            s.max_in_flight = limit // len(mine) + (i < limit % len(mine))


def reward_judges(cfg: PipelineConfig) -> set[str]:
    return {j.name for j in cfg.judges if isinstance(cfg.model_of(j), RewardModel)}


def model_label(source: str, adapter: str | None) -> str:
    """What a role's outputs name as their model (candidates' `model`): the source, and its LoRA adapter if any."""
    return source if adapter is None else f"{source}+lora:{adapter}"


def task_for(cfg: PipelineConfig, role: RoleConfig):
    """The registry of role kinds: each role's task, built from its own config and the few run-level
    values it needs (the seed, every judge's combine rule), by the kind of its config."""
    model = cfg.model_of(role)
    label = model_label(model.source, role.adapter)
    if isinstance(role, GeneratorConfig):
        return GenerateTask.from_config(role, label)
    if isinstance(role, EvolutionConfig):
        return EvolveTask.from_config(role, label, cfg.seed)
    if isinstance(role, JudgeConfig):
        rules = {j.name: j.combine for j in cfg.judges}
        if isinstance(model, RewardModel):  # the config allows judges only on it
            return RewardTask.from_config(role, model.source, reward_judges(cfg), rules)
        return JudgeTask.from_config(role, label, cfg.seed, rules)
    raise TypeError(f"no task for a role configured by {type(role).__name__}: add it to plan.task_for")


def verify_task(cfg: PipelineConfig, judge: JudgeConfig) -> VerifyTask:
    """The pair check run by `judge` (the one under `judge:` in a run; `prefgen calibrate` may pick a juror)."""
    return VerifyTask.from_config(judge, model_label(cfg.model_of(judge).source, judge.adapter),
                                  cfg.pairing.model_dump(mode="json"), cfg.seed)


def ordered_roles(cfg: PipelineConfig) -> list[tuple[str, RoleConfig]]:
    """Roles in pipeline order, arranged so that the roles of one engine sit together."""
    def key(role: RoleConfig) -> str:
        return cfg.model_of(role).engine_key()

    roles = cfg.roles_by_key()
    gens = [r for r in roles if r[0].startswith("generators.")]
    evolution = [r for r in roles if r[0] == "evolution"]
    judges = [r for r in roles if r[0] == "judge" or r[0].startswith("jury.")]
    if evolution:
        pivot = key(evolution[0][1])
    else:  # the judges' first model that also generates, if any
        gen_keys = {key(g) for _, g in gens}
        pivot = next((key(j) for _, j in judges if key(j) in gen_keys), None)

    def grouped(items, pivot_last: bool):
        first_seen = {}
        for _, role in items:
            first_seen.setdefault(key(role), len(first_seen))
        at_pivot = (lambda r: key(r) == pivot) if pivot_last else (lambda r: key(r) != pivot)
        rewards_last = lambda r: isinstance(cfg.model_of(r), RewardModel)  # noqa: E731
        return sorted(items, key=lambda kr: (rewards_last(kr[1]), at_pivot(kr[1]), first_seen[key(kr[1])]))

    return grouped(gens, pivot_last=True) + evolution + grouped(judges, pivot_last=False)


def plan_stages(cfg: PipelineConfig) -> list[StagePlan]:
    stages: list[StagePlan] = []
    uses: dict[str, int] = {}
    for _key, role in ordered_roles(cfg):
        model = cfg.model_of(role)
        if not stages or stages[-1].model.engine_key() != model.engine_key():
            uses[role.model] = uses.get(role.model, 0) + 1
            name = role.model if uses[role.model] == 1 else f"{role.model}#{uses[role.model]}"
            stages.append(StagePlan(name, role.model, model))
        stages[-1].tasks.append(task_for(cfg, role))
    if verifies(cfg):  # after every judge: the ratings are final, the pairs those the writer will form
        judge, model = cfg.judge, cfg.model_of(cfg.judge)
        if stages[-1].model.engine_key() != model.engine_key():
            uses[judge.model] = uses.get(judge.model, 0) + 1
            stages.append(StagePlan(f"{judge.model}#{uses[judge.model]}", judge.model, model))
        stages[-1].tasks.append(verify_task(cfg, judge))
    in_flight_shares(stages)
    return stages


def expected_calls(cfg: PipelineConfig) -> dict[str, dict[str, float]]:
    """Per role: engine requests and outputs per input row, before retries and drops (each role's
    `calls_per_row` says its own)."""
    calls: dict[str, dict[str, float]] = {}
    for g in cfg.generators:
        calls |= g.calls_per_row()
    calls |= cfg.evolution.calls_per_row(originals_per_row(cfg))  # the generated and provided candidates
    candidates = candidates_per_row(cfg)
    for j in cfg.judges:
        calls |= j.calls_per_row(cfg.model_of(j), candidates)
    if verifies(cfg):
        calls[f"verify:{cfg.judge.name}"] = VerificationConfig.calls_per_row(candidates, cfg.pairing.strategy)
    return calls


def plan_lines(cfg: PipelineConfig, stages: list[StagePlan], devices: dict[str, str], mode: str,
               resources: dict) -> list[str]:
    """The plan in words: engines, placement, stages' roles, calls per input row."""
    from prefgen.engines.placement import gpus_per_replica

    shown = {k: v for k, v in sorted(resources.items()) if k in ("CPU", "GPU") or k.startswith("accelerator_type:")}
    lines = [f"mode: {mode} (planned for {', '.join(f'{k}={v:g}' for k, v in shown.items()) or 'no resources'})",
             f"engines: {len(stages)}"]
    for s in stages:
        e, device = s.model.engine, devices[s.name]
        if isinstance(s.model, EndpointModel):
            lines.append(f"  {s.name}: endpoint {s.model.model} at {s.model.base_url}, 1 actor on CPU (no GPU), "
                         f"at most {s.max_in_flight} request(s) in flight, batch {e.batch_size}")
            lines.append(f"    roles: {', '.join(s.roles)}")
            continue
        low, high = e.replica_range
        replicas = f"{low}" if low == high else f"{low}-{high}"
        where = f"{gpus_per_replica(e, device):g} GPU" if device == "gpu" else f"CPU ({e.cpu_kv_cache_gib:g} GiB KV cache)"
        if e.accelerator_type:
            where += f" of type {e.accelerator_type}"
        lines.append(f"  {s.name}: {s.model.source} on {device}, {replicas} replica(s) x {where} "
                     f"+ {e.cpus_per_replica:g} CPU, batch {e.batch_size}")
        adapters = getattr(s.model, "adapters", {})
        if adapters:
            lines.append("    LoRA adapters (one engine): " + ", ".join(
                f"{name} (rank {a.adapter_rank}, {a.path})" for name, a in adapters.items()))
        lines.append("    roles: " + ", ".join(t.role + (f" on adapter {t.adapter}" if getattr(t, "adapter", None) else "")
                                          for t in s.tasks))
    held = [gpus_per_replica(s.model.engine, devices[s.name]) * s.model.engine.replica_range[0] for s in stages]
    lines.append(f"GPUs held at once: {(max(held) if mode == 'phased' else sum(held)):g}")
    lines.append("calls per input row (before retries):")
    calls = expected_calls(cfg)
    for role, c in calls.items():
        most = "at most " if c.get("at_most") else ""
        lines.append(f"  {role}: {most}{c['requests']:g} request(s), {c['outputs']:g} output(s)"
                     + (" (the pair check: both orders of each pair)" if role.startswith("verify:") else ""))
    most = "at most " if any(c.get("at_most") for c in calls.values()) else ""
    lines.append(f"  total: {most}{sum(c['requests'] for c in calls.values()):g} requests")
    return lines
