"""Config loading: defaults run, bad keys are named before anything starts."""

from pathlib import Path

import pytest

from prefgen.config import ConfigError, PipelineConfig, load_config, parse_config


def test_defaults_validate_and_name_generators():
    cfg = PipelineConfig()
    assert [g.name for g in cfg.generators] == ["smol-focused", "smol-creative"]
    assert cfg.judge.aspects == ["overall"] and cfg.evolution.enabled


@pytest.mark.parametrize(
    "data, key",
    [
        ({"generators": [{"sampling": {"temprature": 1.0}}]}, "generators.0.sampling.temprature"),
        ({"judge": {"aspects": ["style"]}}, "judge.aspects"),
        ({"judge": {"mode": "single", "permutations": 2}}, "judge"),
        ({"jury": [{"combine": "median"}]}, "jury.0.combine"),
        ({"pairing": {"strategy": "random"}}, "pairing.strategy"),
        ({"generators": [{"model": "/no/such/model"}]}, "generators.0.model"),
        ({"generators": [{}, {"engine": {"max_model_len": "big"}}]}, "generators.1.engine.max_model_len"),
        ({"evolution": {"criteria": ["speed"]}}, "evolution.criteria"),
        ({"pairing": {"min_margin": 0}}, "pairing.min_margin"),
        ({"generators": []}, "generators"),
        ({"outptu": {}}, "outptu"),
    ],
)
def test_bad_key_is_named(data, key):
    with pytest.raises(ConfigError) as err:
        parse_config(data, "my.yaml")
    assert "my.yaml" in str(err.value)
    assert f"  {key}:" in str(err.value)


def test_duplicate_generator_names_rejected():
    with pytest.raises(ConfigError, match="names must be unique"):
        parse_config({"generators": [{"name": "a"}, {"name": "a"}]})


def test_jury_names_and_self_preference_warning():
    cfg = parse_config({"jury": [{"model": "Qwen/Qwen2.5-7B-Instruct"}, {}]})
    assert [j.name for j in cfg.judges] == ["judge", "juror1", "juror2"]
    warned = cfg.warnings()
    assert len(warned) == 2 and "'judge'" in warned[0] and "'juror2'" in warned[1]
    other = parse_config({"judge": {"model": "Qwen/Qwen2.5-7B-Instruct"}})
    assert other.warnings() == []


def test_hub_id_and_local_dir_accepted(tmp_path):
    cfg = parse_config({"generators": [{"model": "Qwen/Qwen2.5-1.5B-Instruct"}, {"model": str(tmp_path)}]})
    assert cfg.generators[0].model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert cfg.generators[1].model == str(tmp_path)


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("judge:\n  rationales: false\noutput:\n  path: out\n")
    cfg = load_config(path, {"output.path": "elsewhere", "input.limit": 3})
    assert cfg.judge.rationales is False
    assert cfg.output.path == "elsewhere" and cfg.input.limit == 3


def test_unreadable_and_non_mapping_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_digest_ignores_paths_but_not_settings():
    a = parse_config({"output": {"path": "x"}})
    b = parse_config({"output": {"path": "y"}})
    c = parse_config({"judge": {"aspects": ["honesty"]}})
    assert a.digest() == b.digest() != c.digest()


def test_shipped_configs_validate_and_laptop_is_the_default():
    root = Path(__file__).parent.parent / "configs"
    for path in root.glob("*.yaml"):
        load_config(path)
    assert load_config(root / "laptop.yaml").digest() == PipelineConfig().digest()
