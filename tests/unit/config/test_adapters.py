"""LoRA adapters in the model declaration: read and checked against the base before any engine
starts, named by the roles that run on them, served by the base's one engine, and covered by the
digest through their content.

The base here is a tiny folder of the right layout (a safetensors file of a two-layer Llama's
weight shapes); the adapters are real PEFT-layout folders written by `support.lora_adapter`.
"""

import shutil

import pytest
import yaml

from prefgen.cli import main
from prefgen.config import ConfigError, parse_config
from prefgen.models.adapters import adapter_problems
from prefgen.roles.plan import plan_lines, plan_stages
from support.lora_adapter import HIDDEN, TINY_BASE as SHAPES, write_lora_adapter, write_tiny_base as write_base
from support.paths import REPO
from support.scripted_engine import ScriptedEngine

@pytest.fixture
def base(tmp_path):
    return write_base(tmp_path / "base")


@pytest.fixture
def adapter(tmp_path, base):
    return write_lora_adapter(tmp_path / "policy", base, rank=8)


def with_adapters(base, adapters, **roles):
    return {"models": {"m": {"source": str(base), "adapters": adapters}},
            "generators": roles.get("generators", [{"name": "g", "model": "m", "num_completions": 2}]),
            "evolution": {"enabled": False}, "judge": roles.get("judge", {"model": "m"})}


def error_of(data) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return str(err.value)


def test_a_generator_on_an_adapter_shares_the_base_engine_and_names_the_adapter(base, adapter, tmp_path):
    other = write_lora_adapter(tmp_path / "other", base, rank=16, seed=1, modules=("q_proj", "o_proj"))
    cfg = parse_config(with_adapters(base, {"policy": str(adapter), "other": {"path": str(other), "rank": 16}},
                                     generators=[{"name": "on-policy", "model": "m", "adapter": "policy"},
                                                 {"name": "base", "model": "m"}],
                                     judge={"model": "m", "adapter": "other"}))
    stages = plan_stages(cfg)
    assert [s.name for s in stages] == ["m"]  # one engine for the base and both adapters
    by_role = {t.role: t for t in stages[0].tasks}
    assert by_role["generate:on-policy"].adapter == "policy" and by_role["generate:base"].adapter is None
    assert by_role["judge:judge"].adapter == by_role["verify:judge"].adapter == "other"
    assert by_role["generate:on-policy"].model == f"{base}+lora:policy" and by_role["generate:base"].model == str(base)
    lines = "\n".join(plan_lines(cfg, stages, {"m": "cpu"}, "streaming", {"CPU": 2}))
    assert f"LoRA adapters (one engine): policy (rank 8, {adapter}), other (rank 16, {other})" in lines
    assert "generate:on-policy on adapter policy, generate:base, judge:judge on adapter other" in lines

    # each request carries its role's adapter; the candidates name base and adapter
    engine = ScriptedEngine(lambda req: [f"answer on {req.adapter}"])
    rows = [{"id": "r", "instruction": "Hi?", "candidates": [], "output_tokens": 0, "reject_reason": None}]
    by_role["generate:on-policy"].run(rows, engine)
    by_role["generate:base"].run(rows, engine)
    assert [r.adapter for call in engine.calls for r in call] == ["policy", None]
    assert [(c["model"], c["text"]) for c in rows[0]["candidates"]] == [
        (f"{base}+lora:policy", "answer on policy"), (str(base), "answer on None")]


def test_an_adapter_may_be_written_as_a_plain_path_or_with_a_rank(base, adapter):
    plain = parse_config(with_adapters(base, {"p": str(adapter)})).models["m"].adapters["p"]
    ranked = parse_config(with_adapters(base, {"p": {"path": f"file://{adapter}", "rank": 32}})).models["m"].adapters["p"]
    assert plain.path == ranked.path == str(adapter)
    assert plain.adapter_rank == 8 and ranked.adapter_rank == 32


@pytest.mark.parametrize("change, message", [
    (lambda folder: (folder / "adapter_model.safetensors").unlink(), "lacks adapter_model.safetensors"),
    (lambda folder: shutil.rmtree(folder), "is not a folder"),
    (lambda folder: (folder / "adapter_config.json").write_text("{not json"), "unreadable"),
])
def test_a_missing_or_unreadable_adapter_is_named(base, adapter, change, message):
    change(adapter)
    text = error_of(with_adapters(base, {"policy": str(adapter)}))
    assert "models.m.adapters.policy: " in text and message in text


def test_an_adapter_that_does_not_fit_its_base_is_named_with_the_reason(base, tmp_path):
    wider = write_base(tmp_path / "wider", {k.replace("q_proj", "q_proj"): [s[0] * 2, s[1] * 2] for k, s in SHAPES.items()})
    foreign = write_lora_adapter(tmp_path / "foreign", wider)  # written for a model twice as wide
    big = write_lora_adapter(tmp_path / "big", base, rank=16)
    text = error_of(with_adapters(base, {"foreign": str(foreign), "big": {"path": str(big), "rank": 8}}))
    assert "adapters.foreign: tensors do not fit the base model" in text
    assert "self_attn.q_proj.lora_A.weight has shape [8, 64]" in text
    assert "adapters.big: rank 16 (adapter_config.json) is larger than the declared rank 8" in text


def test_adapter_problems_name_each_reason():
    shapes = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": [8, HIDDEN],
              "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": [HIDDEN, 8]}
    good = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
    assert adapter_problems(good, shapes, SHAPES) == []
    assert adapter_problems(good, shapes, None) == []  # a hub base: only the adapter's own checks
    cases = {
        "peft_type is 'IA3', not LORA": {"peft_type": "IA3"},
        "rank 1024 is above vLLM's largest max_lora_rank (512)": {"r": 1024},
        "vLLM does not serve DoRA (use_dora)": {"use_dora": True},
        "modules_to_save ['lm_head']": {"modules_to_save": ["lm_head"]},
        "target_modules ['gate_proj'] are not modules of the base model": {"target_modules": ["q_proj", "gate_proj"]},
        "bias 'all'": {"bias": "all"},
    }
    for message, change in cases.items():
        assert any(message in p for p in adapter_problems(good | change, shapes, SHAPES)), message
    assert any("not a weight of the base model" in p for p in adapter_problems(
        good, {k.replace("layers.0", "layers.7"): s for k, s in shapes.items()}, SHAPES))
    assert "holds no lora_A / lora_B tensors" in adapter_problems(good, {}, SHAPES)[0]


def test_a_role_may_only_name_a_declared_adapter_of_a_vllm_model(base, adapter, tmp_path):
    text = error_of(with_adapters(base, {"policy": str(adapter)}, generators=[{"model": "m", "adapter": "polcy"}]))
    assert "generators.0.adapter: 'polcy' is not an adapter of model 'm' (models.m.adapters: policy)" in text
    text = error_of({"generators": [{"adapter": "policy", "engine": {"max_model_len": 1024}}]})
    assert "generators.0.adapter: an adapter is one of a model's `adapters:`" in text
    endpoint = {"kind": "endpoint", "base_url": "http://127.0.0.1:1/v1", "model": "m"}
    text = error_of({"models": {"api": endpoint}, "judge": {"model": "api", "adapter": "policy"}, "generators": []})
    assert "judge.adapter: model 'api' is kind endpoint; adapters are served on kind vllm models only" in text
    assert "--lora-modules" in error_of({"models": {"api": endpoint | {"adapters": {"p": str(adapter)}}}})
    reward = write_base(tmp_path / "rm")
    text = error_of({"models": {"m": {"source": str(base)}, "rm": {"kind": "reward_model", "source": str(reward)}},
                     "generators": [{"model": "m", "num_completions": 2}], "evolution": {"enabled": False},
                     "judge": {"model": "rm", "adapter": "x"}})
    assert "judge.adapter: model 'rm' is kind reward_model" in text


def test_the_digest_covers_the_adapters_content_not_its_path(base, adapter, tmp_path):
    data = with_adapters(base, {"policy": str(adapter), "unused": str(adapter)},
                         generators=[{"name": "g", "model": "m", "adapter": "policy", "num_completions": 2}])
    before = parse_config(data)
    moved = shutil.copytree(adapter, tmp_path / "moved")
    assert parse_config(with_adapters(base, {"policy": str(moved)}, generators=data["generators"])).digest() \
        == before.digest()  # the same adapter elsewhere, and an unused one left out: the same output
    write_lora_adapter(adapter, base, rank=8, seed=1)  # retrained in place
    after = parse_config(data)
    assert after.digest() != before.digest()
    from prefgen.config.digest import differing_keys

    assert differing_keys(before.digest_parts(), after.digest_parts()) == ["generators.0.model.adapter"]
    on_base = parse_config(with_adapters(base, {"policy": str(adapter)}))
    assert on_base.digest() != after.digest()


def test_the_cli_stops_on_an_adapter_that_does_not_fit_before_any_engine(base, tmp_path, capsys):
    big = write_lora_adapter(tmp_path / "big", base, rank=16)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(with_adapters(base, {"big": {"path": str(big), "rank": 8}},
                                                   generators=[{"model": "m", "adapter": "big", "num_completions": 2}])))
    assert main(["plan", str(config)]) == 2
    err = capsys.readouterr().err
    assert "adapters.big: rank 16 (adapter_config.json) is larger than the declared rank 8" in err


def test_the_on_policy_preset_samples_one_policy_and_a_separate_judge_pairs_best_against_worst(adapter, tmp_path):
    data = yaml.safe_load((REPO / "configs" / "on_policy.yaml").read_text())
    cfg = parse_config(data)
    (gen,) = cfg.generators
    assert gen.model == "policy" and gen.adapter is None and gen.num_completions >= 2
    assert gen.sampling.temperature > 0 and not cfg.evolution.enabled
    assert cfg.judge.model != "policy" and cfg.models[cfg.judge.model].source != cfg.models["policy"].source
    assert cfg.pairing.strategy == "best_vs_worst" and cfg.pairing.min_margin >= 1
    # a later round: the policy is the adapter trained on the last round's pairs, on the base's engine
    data["models"]["policy"]["adapters"] = {"round1": str(adapter)}
    data["models"]["policy"]["source"] = str(adapter.parent / "base")
    data["generators"][0]["adapter"] = "round1"
    stages = plan_stages(parse_config(data))
    assert [(s.name, [t.role for t in s.tasks]) for s in stages] == [
        ("policy", ["generate:policy"]), ("judge-model", ["judge:judge", "verify:judge"])]
    assert stages[0].tasks[0].adapter == "round1"
