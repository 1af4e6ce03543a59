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
