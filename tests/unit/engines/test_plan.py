"""The plan: roles of one model made adjacent and served by one engine; calls per row."""

from prefgen.cli import main
from prefgen.config import PipelineConfig, parse_config
from prefgen.roles.plan import expected_calls, plan_stages


def stage_roles(cfg):
    return [(s.name, s.roles) for s in plan_stages(cfg)]


def test_the_embedded_default_starts_one_engine_for_all_four_roles_and_the_pair_check():
    assert stage_roles(PipelineConfig()) == [
        ("SmolLM2-135M-Instruct", ["generate:smol-focused", "generate:smol-creative", "evolve", "judge:judge",
                                   "verify:judge"])
    ]


def test_generators_sharing_the_evolvers_model_go_last_and_judges_sharing_it_first(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    cfg = parse_config({
        "models": {"a": {"source": str(a)}, "b": {"source": str(b)}},
        "generators": [{"name": "ga", "model": "a"}, {"name": "gb", "model": "b"}, {"name": "ga2", "model": "a"}],
        "evolution": {"model": "a"},
        "judge": {"model": "b"},
        "jury": [{"name": "ja", "model": "a"}],
    })
    assert stage_roles(cfg) == [
        ("b", ["generate:gb"]),
        ("a", ["generate:ga", "generate:ga2", "evolve", "judge:ja"]),
        ("b#2", ["judge:judge", "verify:judge"]),  # b generates and judges with a's evolution between: a second engine
    ]


def test_without_evolution_the_generators_of_the_judges_model_sit_next_to_it(tmp_path):
    cfg = parse_config({
        "models": {"j": {"source": str(tmp_path)}, "g": {}},
        "generators": [{"name": "x", "model": "j"}, {"name": "y", "model": "g"}],
        "evolution": {"enabled": False},
        "judge": {"model": "j"},
    })
    assert stage_roles(cfg) == [("g", ["generate:y"]), ("j", ["generate:x", "judge:judge", "verify:judge"])]


def test_each_role_keeps_its_own_sampling_on_a_shared_engine():
    cfg = PipelineConfig()
    (stage,) = plan_stages(cfg)
    temps = [t.sampling.temperature for t in stage.tasks]
    assert temps == [0.3, 1.0, 0.7, 0.0, 0.0]  # the pair check samples as its judge


def test_expected_calls_per_row():
    cfg = parse_config({
        "generators": [{"name": "a", "num_completions": 2}, {"name": "b"}],
        "evolution": {"num_evolutions": 2},
        "judge": {"aspects": ["helpfulness", "honesty"], "permutations": 2},
        "jury": [{"name": "s", "mode": "single"}],
    })
    calls = expected_calls(cfg)
    assert calls["generate:a"] == {"requests": 1, "outputs": 2}
    assert calls["evolve"]["requests"] == 6  # 3 completions, 2 rounds
    assert calls["judge:judge"]["requests"] == 4  # 2 aspects x 2 orders
    assert calls["judge:s"]["requests"] == 9  # 3 originals + 6 rewrites, one call each


def test_plan_command_prints_engines_and_calls(capsys):
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert "engines: 1" in out and "roles: generate:smol-focused, generate:smol-creative, evolve, judge:judge" in out
    assert "verify:judge: 2 request(s), 2 output(s) (the pair check: both orders of each pair)" in out
    assert "total: 8 requests" in out  # the judge: a shuffle and its reverse; the pair check: both orders


def test_the_pair_check_follows_the_last_judge_on_the_judges_model(tmp_path):
    rm = tmp_path / "rm"
    rm.mkdir()
    cfg = parse_config({"models": {"rm": {"kind": "reward_model", "source": str(rm)}, "chat": {}},
                        "generators": [{"model": "chat", "num_completions": 2}], "evolution": {"model": "chat"},
                        "judge": {"model": "chat"}, "jury": [{"name": "scorer", "model": "rm"}]})
    # the reward model's stage comes last (its task sets the final ratings): the check needs a stage of its own
    assert [name for name, _ in stage_roles(cfg)] == ["chat", "rm", "chat#2"]
    assert stage_roles(cfg)[-1][1] == ["verify:judge"]


def test_no_pair_check_for_a_reward_model_judge_or_when_turned_off(tmp_path):
    rm = tmp_path / "rm"
    rm.mkdir()
    reward = parse_config({"models": {"rm": {"kind": "reward_model", "source": str(rm)}, "chat": {}},
                           "generators": [{"model": "chat", "num_completions": 2}], "evolution": {"enabled": False},
                           "judge": {"model": "rm"}})
    off = parse_config({"pairing": {"verification": {"enabled": False}}})
    for cfg in (reward, off):
        assert not any(r.startswith("verify:") for _, roles in stage_roles(cfg) for r in roles)
        assert not any(r.startswith("verify:") for r in expected_calls(cfg))


def test_a_pair_check_asked_of_a_reward_model_judge_is_refused_by_key(tmp_path):
    import pytest

    from prefgen.config import ConfigError

    rm = tmp_path / "rm"
    rm.mkdir()
    with pytest.raises(ConfigError, match=r"pairing\.verification\.enabled: true needs a judge that answers in words"):
        parse_config({"models": {"rm": {"kind": "reward_model", "source": str(rm)}, "chat": {}},
                      "generators": [{"model": "chat", "num_completions": 2}], "evolution": {"enabled": False},
                      "judge": {"model": "rm"}, "pairing": {"verification": {"enabled": True}}})


def test_all_pairs_plans_both_orders_of_every_possible_pair():
    cfg = parse_config({"pairing": {"strategy": "all_pairs"}})  # 4 candidates: 6 possible pairs
    assert expected_calls(cfg)["verify:judge"] == {"requests": 12, "outputs": 12, "at_most": True}


def test_plan_command_refuses_a_plan_that_cannot_fit(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("judge:\n  engine: {device: gpu, tensor_parallel_size: 2}\n")
    assert main(["plan", str(config), "--gpus", "1"]) == 2
    assert "needs 2 GPU(s) per replica, the cluster has 1" in capsys.readouterr().err
