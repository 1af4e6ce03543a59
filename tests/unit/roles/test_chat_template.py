"""A chat template that refuses a role's conversation stops the stage at engine start, naming the role.

The tokenizers are real: the embedded model's tokenizer files, once as they are and once with a
chat template that raises on a system message as Gemma's does. The engine around them is
scripted (no vLLM): what is tested is the check the stage runs when its engine starts.
"""

import shutil

import pytest
from support.scripted_engine import ScriptedEngine

from prefgen.config import DEFAULT_MODEL
from prefgen.engines.engine import TemplateRefused
from prefgen.roles.evolve.task import EvolveTask
from prefgen.roles.generate.task import GenerateTask
from prefgen.roles.judge.task import JudgeTask
from prefgen.engines.stage import ModelStage
from prefgen.output.storage import storage

# Gemma's template opens with this check (it has no system role)
NO_SYSTEM = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"


def tokenizer_folder(target, template_prefix: str = ""):
    from prefgen.models.embedded import resolve_model

    source = resolve_model(DEFAULT_MODEL)
    target.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(f"{source}/{name}", target / name)
    template = target / "chat_template.jinja"
    template.write_text(template_prefix + template.read_text())
    return target


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    # the fast tokenizer class itself: AutoTokenizer would import torch, a minute on a busy 2-core machine
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tokenizers")
    return {"plain": PreTrainedTokenizerFast.from_pretrained(tokenizer_folder(root / "plain")),
            "no_system": PreTrainedTokenizerFast.from_pretrained(tokenizer_folder(root / "no_system", NO_SYSTEM))}


class TokenizedEngine(ScriptedEngine):
    def __init__(self, tokenizer):
        super().__init__(lambda req: ["ok"])
        self.tokenizer, self.shut_down = tokenizer, False

    def shutdown(self):
        self.shut_down = True


def start_stage(tmp_path, tokenizer, tasks, engine=None):
    engine = engine or TokenizedEngine(tokenizer)
    (tmp_path / "_stats").mkdir(exist_ok=True)
    return ModelStage(lambda: engine, tasks, "m", storage(str(tmp_path))), engine


def test_the_modified_template_refuses_a_system_message_only(tokenizers):
    tok = tokenizers["no_system"]
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    with pytest.raises(Exception, match="System role not supported"):
        tok.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])


def test_a_generator_system_prompt_refused_by_the_template_fails_at_engine_start(tmp_path, tokenizers):
    tasks = [GenerateTask("plain", "org/gemma-like"), GenerateTask("brief", "org/gemma-like", system_prompt="Be brief.")]
    engine = TokenizedEngine(tokenizers["no_system"])
    with pytest.raises(TemplateRefused) as err:
        start_stage(tmp_path, None, tasks, engine)
    assert engine.shut_down and engine.calls == []  # the engine is released, no row was sent
    message = str(err.value)
    assert "generator 'brief' has a system_prompt" in message and "org/gemma-like" in message
    assert "System role not supported" in message


def test_a_judge_on_a_model_without_a_system_role_fails_at_engine_start(tmp_path, tokenizers):
    for mode in ("joint", "single"):
        with pytest.raises(TemplateRefused, match="judge 'strict': .* system message"):
            start_stage(tmp_path, tokenizers["no_system"], [JudgeTask("strict", "org/gemma-like", mode=mode)])


def test_roles_without_a_system_message_start_on_that_model(tmp_path, tokenizers):
    tasks = [GenerateTask("plain", "org/gemma-like", template="Q: {instruction}"),
             EvolveTask("org/gemma-like", ["details"])]
    stage, engine = start_stage(tmp_path, tokenizers["no_system"], tasks)
    assert stage.tasks == tasks and engine.calls == []  # checked on the template, nothing sent


def test_every_role_starts_on_a_template_with_a_system_role(tmp_path, tokenizers):
    tasks = [GenerateTask("brief", "m", system_prompt="Be brief."), EvolveTask("m", ["details"]),
             JudgeTask("judge", "m", aspects=["honesty"]), JudgeTask("single", "m", mode="single")]
    start_stage(tmp_path, tokenizers["plain"], tasks)
