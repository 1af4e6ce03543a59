"""A task built without arguments runs as its role's config does by default: each default is
set once, in the config, and the tasks read it from there."""

import dataclasses

import pytest

from prefgen.config import EvolutionConfig, GeneratorConfig, JudgeConfig
from prefgen.roles.evolve.task import EvolveTask
from prefgen.roles.generate.task import GenerateTask
from prefgen.roles.judge.task import JudgeTask
from prefgen.roles.verify.task import VerifyTask


def defaults(task) -> dict:
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(task)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


@pytest.mark.parametrize("task, config, keys", [
    (JudgeTask, JudgeConfig, ["sampling", "aspects", "mode", "permutations", "rationales", "guided", "max_retries",
                              "combine"]),
    (VerifyTask, JudgeConfig, ["sampling", "guided", "max_retries"]),  # the pair check runs as the judge
    (GenerateTask, GeneratorConfig, ["sampling", "num_completions"]),
    (EvolveTask, EvolutionConfig, ["sampling", "num_evolutions", "keep_original"]),
])
def test_a_tasks_defaults_are_its_configs(task, config, keys):
    mine, theirs = defaults(task), config(**({"model": "m"} if "model" in config.model_fields else {}))
    assert {k: mine[k] for k in keys} == {k: getattr(theirs, k) for k in keys}


def test_the_evolvers_room_has_one_default():
    """The rewriter's max_tokens is EvolutionConfig's, whether the config omits `evolution:` or gives it without
    `sampling` (it was 320 in the first case and 256 in the second), and the task's when built bare."""
    from prefgen.config import PipelineConfig, parse_config

    rooms = {"no evolution key": PipelineConfig().evolution.sampling.max_tokens,
             "evolution without sampling": parse_config({"evolution": {"num_evolutions": 2}}).evolution.sampling.max_tokens,
             "EvolutionConfig": EvolutionConfig().sampling.max_tokens, "EvolveTask": EvolveTask("m", ["details"]).sampling.max_tokens}
    assert set(rooms.values()) == {320}, rooms


def test_a_task_is_built_from_its_roles_config_and_the_run_values_it_needs():
    """Every key of a role's config that its task has reaches the task (`from_config`), and so do the run-level
    values passed beside it: the seed, every judge's combine rule, the pairing."""
    from prefgen.config import parse_config
    from prefgen.roles.plan import plan_stages

    cfg = parse_config({
        "seed": 9,
        "generators": [{"name": "g", "system_prompt": "S", "num_completions": 3, "template": "Q: {instruction}",
                        "sampling": {"temperature": 0.1}}],
        "evolution": {"num_evolutions": 2, "keep_original": True, "criteria": ["details"], "template": "mission"},
        "judge": {"aspects": ["honesty"], "mode": "single", "rationales": False, "guided": False, "max_retries": 3,
                  "combine": "min", "sampling": {"max_tokens": 300}},
        "jury": [{"name": "j2", "permutations": "balanced"}],
        "pairing": {"min_margin": 0.5},
    })
    tasks = {t.role: t for stage in plan_stages(cfg) for t in stage.tasks}
    gen, ev, judge, juror, check = (tasks[r] for r in ("generate:g", "evolve", "judge:judge", "judge:j2", "verify:judge"))
    assert (gen.name, gen.system_prompt, gen.num_completions, gen.template, gen.sampling) == (
        "g", "S", 3, "Q: {instruction}", cfg.generators[0].sampling)
    assert (ev.num_evolutions, ev.keep_original, list(ev.criteria), ev.template, ev.sampling, ev.seed) == (
        2, True, ["details"], cfg.evolution.template, cfg.evolution.sampling, 9)
    for key in ("aspects", "mode", "permutations", "rationales", "guided", "max_retries", "combine", "sampling"):
        assert getattr(judge, key) == getattr(cfg.judge, key), key
        assert getattr(juror, key) == getattr(cfg.jury[0], key), key
    assert judge.seed == juror.seed == 9 and judge.combine_rules == juror.combine_rules == {"judge": "min", "j2": "mean"}
    assert (check.judge, check.sampling, check.guided, check.max_retries, check.seed, check.pairing["min_margin"]) == (
        "judge", cfg.judge.sampling, False, 3, 9, 0.5)
