"""Config values that can never produce a pair, and names unusable in ids, are errors naming the key."""

import pytest

from prefgen.config import ConfigError, parse_config

TEN_LEVELS = {"description": "How good?", "levels": {i: f"level {i}" for i in range(1, 11)}}
THREE_LEVELS = {"description": "How good?", "levels": {1: "bad", 2: "fine", 3: "good"}}


def error_line(data: dict, key: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "my.yaml")
    lines = [line for line in str(err.value).splitlines() if line.startswith(f"  {key}:")]
    assert lines, str(err.value)
    return lines[0]


@pytest.mark.parametrize(
    "data, largest_gap",
    [
        ({}, 4),  # the built-in 1-5 rubric
        ({"judge": {"rubrics": {"fine": TEN_LEVELS}, "aspects": ["fine"]}}, 9),
        ({"judge": {"rubrics": {"coarse": THREE_LEVELS}, "aspects": ["coarse", "overall"], "combine": "min"}}, 4),
        ({"judge": {"rubrics": {"coarse": THREE_LEVELS}, "aspects": ["coarse"]}}, 2),
    ],
)
def test_min_margin_above_the_largest_rating_gap_is_an_error(data, largest_gap):
    assert parse_config({**data, "pairing": {"min_margin": largest_gap}})  # the widest gap still pairs
    line = error_line({**data, "pairing": {"min_margin": largest_gap + 0.5}}, "pairing.min_margin")
    assert f"no two candidates differ by more than {largest_gap}" in line


def test_reward_judge_margin_is_unbounded_alone_and_on_the_jury_scale_beside_others(tmp_path):
    models = {"chat": {}, "rm": {"kind": "reward_model", "source": str(tmp_path)}}
    generators = [{"model": "chat", "num_completions": 2}]
    alone = {"models": models, "generators": generators, "evolution": {"model": "chat"}, "judge": {"model": "rm"}}
    assert parse_config({**alone, "pairing": {"min_margin": 50}})  # raw scores: no bound known
    jury = {**alone, "judge": {"model": "chat", "rubrics": {"coarse": THREE_LEVELS}, "aspects": ["coarse"]},
            "jury": [{"model": "rm", "name": "rm"}]}
    assert parse_config({**jury, "pairing": {"min_margin": 4}})  # the reward scores are mapped onto 1-5
    assert "reward model" in error_line({**jury, "pairing": {"min_margin": 4.5}}, "pairing.min_margin")


@pytest.mark.parametrize(
    "data",
    [
        {"generators": [{"name": "only"}], "evolution": {"enabled": False}},
        {"generators": [{"name": "only"}], "evolution": {"keep_original": False}},
    ],
)
def test_a_single_candidate_per_row_is_an_error(data):
    assert "a pair needs two" in error_line(data, "generators")


def test_one_generator_is_enough_with_evolution_or_several_completions():
    assert parse_config({"generators": [{"name": "only"}]})  # the original and its rewrite
    assert parse_config({"generators": [{"name": "only", "num_completions": 2}], "evolution": {"enabled": False}})


@pytest.mark.parametrize("key", ["generators.1.sampling.max_tokens", "evolution.sampling.max_tokens",
                                 "judge.sampling.max_tokens"])
def test_max_tokens_filling_the_context_is_an_error(key):
    data = {"models": {"m": {"engine": {"max_model_len": 1024}}}, "generators": [{"name": "a"}, {"name": "b"}]}
    section, *rest = key.split(".")
    node = data["generators"][1] if section == "generators" else data.setdefault(section, {})
    node["sampling"] = {"max_tokens": 1024}
    assert "models.m.engine.max_model_len" in error_line(data, key)
    node["sampling"] = {"max_tokens": 1023}
    assert parse_config(data)


@pytest.mark.parametrize("name", ["a/b", "gen:1", "two words", "café", "-lead", "x#2", "", "n" * 65])
@pytest.mark.parametrize("where", ["generators.0.name", "judge.name", "jury.0.name"])
def test_names_used_in_ids_and_file_names_are_checked(name, where):
    section, *_ = where.split(".")
    data = {"generators": [{"name": name if section == "generators" else "g"}, {"name": "h"}]}
    if section == "judge":
        data["judge"] = {"name": name}
    if section == "jury":
        data["jury"] = [{"name": name}]
    assert "used in ids and file names" in error_line(data, where)


def test_evolver_is_not_a_generator_name_and_plain_names_pass():
    assert "evolved candidates" in error_line({"generators": [{"name": "evolver"}, {}]}, "generators.0.name")
    cfg = parse_config({"generators": [{"name": "Qwen2.5-7B_hot"}, {"name": "g.2"}], "jury": [{"name": "j-1"}]})
    assert [g.name for g in cfg.generators] == ["Qwen2.5-7B_hot", "g.2"] and cfg.jury[0].name == "j-1"


def test_an_endpoint_role_may_ask_for_any_max_tokens():
    # an endpoint model has no max_model_len of its own (its server checks the length), so a large
    # max_tokens is not measured against EngineConfig's default, a key endpoint models refuse
    api = {"kind": "endpoint", "base_url": "http://localhost:8000/v1", "model": "big", "api_key_env": "KEY"}
    cfg = parse_config({"models": {"api": api}, "generators": [{"model": "api", "num_completions": 2, "sampling": {"max_tokens": 8192}}],
                        "evolution": {"enabled": False}, "judge": {"model": "api", "sampling": {"max_tokens": 4096}}})
    assert cfg.generators[0].sampling.max_tokens == 8192 and cfg.judge.sampling.max_tokens == 4096
