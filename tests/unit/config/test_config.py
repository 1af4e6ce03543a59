"""Config loading: defaults run, bad keys are named before anything starts."""


import pytest

from prefgen.config import ConfigError, PipelineConfig, load_config, parse_config
from support.paths import REPO


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
        ({"judge": {"mode": "single", "permutations": "balanced"}}, "judge"),
        ({"judge": {"permutations": "rotated"}}, "judge.permutations"),
        ({"judge": {"permutations": 0}}, "judge.permutations"),
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


def test_permutations_count_or_balanced():
    assert parse_config({"judge": {"permutations": "balanced"}}).judge.permutations == "balanced"
    assert parse_config({"jury": [{"permutations": 3}]}).jury[0].permutations == 3


def test_hub_id_and_local_dir_accepted(tmp_path):
    cfg = parse_config({"generators": [{"model": "Qwen/Qwen2.5-1.5B-Instruct"}, {"model": str(tmp_path)}]})
    assert cfg.model_of(cfg.generators[0]).source == "Qwen/Qwen2.5-1.5B-Instruct"
    assert cfg.model_of(cfg.generators[1]).source == str(tmp_path)


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
    root = REPO / "configs"
    for path in root.glob("*.yaml"):
        load_config(path)
    assert load_config(root / "laptop.yaml").digest() == PipelineConfig().digest()


def test_models_declared_once_and_referred_to_by_name():
    cfg = parse_config({
        "models": {"qwen": {"source": "Qwen/Qwen2.5-1.5B-Instruct", "engine": {"max_model_len": 4096}}},
        "generators": [{"name": "a"}, {"name": "b", "model": "qwen", "sampling": {"temperature": 1.0}}],
        "evolution": {"model": "qwen"},
    })
    assert [g.model for g in cfg.generators] == ["qwen", "qwen"]  # the only declared model is the default
    assert cfg.model_of(cfg.evolution).engine.max_model_len == 4096
    assert cfg.generators[1].sampling.temperature == 1.0 and cfg.generators[0].sampling.temperature == 0.7


def test_shorthand_sources_become_declarations_and_share_when_equal(tmp_path):
    cfg = parse_config({
        "generators": [{"model": str(tmp_path)}, {"model": str(tmp_path), "engine": {"seed": 3}}],
        "evolution": {"model": str(tmp_path)},
        "judge": {"model": str(tmp_path), "engine": {"seed": 3}},
    })
    names = [g.model for g in cfg.generators]
    assert names[0] != names[1]  # another engine seed: another engine
    assert cfg.evolution.model == names[0] and cfg.judge.model == names[1]
    assert all(g.engine is None for g in cfg.generators)  # engines live under models only


@pytest.mark.parametrize(
    "data, message",
    [
        ({"models": {"a": {}, "b": {}}, "generators": [{"model": "a"}]}, "evolution.model: required, several"),
        ({"models": {"a": {}}, "judge": {"model": "a", "engine": {"seed": 1}}}, "judge.engine: model 'a' is declared"),
        ({"models": {"a": {}}, "judge": {"model": "qwen"}}, "judge.model: model path 'qwen' does not exist"),
        ({"models": {"a b": {}}}, "models.a b: a model name is"),
        ({"models": {"a": {"source": "/nowhere/x"}}}, "models.a.source"),
        ({"models": {"a": {"kind": "tgi"}}}, "models.a.kind"),
        ({"generators": [{"sampling": {"seed": 1}}]}, "generators.0.sampling.seed"),
    ],
)
def test_model_declaration_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        parse_config(data, "my.yaml")
    assert message in str(err.value)


def test_digest_does_not_depend_on_model_names():
    a = parse_config({"models": {"x": {}}})
    b = parse_config({"models": {"y": {}}})
    c = parse_config({"models": {"y": {"engine": {"seed": 4}}}})
    assert a.digest() == b.digest() == PipelineConfig().digest() != c.digest()


@pytest.mark.parametrize("section, dotted, value", [
    ("ray", "ray.mode", "phased"),
    ("ray", "ray.address", "ray://head:10001"),
    ("input", "input.path", "prompts.jsonl"),
    ("input", "input.limit", 3),
    ("output", "output.path", "elsewhere"),
])
def test_an_empty_section_takes_a_flag(tmp_path, section, dotted, value):
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n")  # the section left empty: YAML reads it as null
    cfg = load_config(path, {dotted: value})
    assert getattr(getattr(cfg, section), dotted.split(".")[1]) == value


def test_a_section_that_is_not_a_mapping_is_named_with_its_flag(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: elsewhere\n")
    with pytest.raises(ConfigError, match=r"c.yaml: output: .*mapping.*output.path"):
        load_config(path, {"output.path": "x"})


def test_the_judge_orders_have_one_default_that_cancels_position():
    import yaml

    from prefgen.config import JudgeConfig
    from prefgen.roles.judge.task import JudgeTask

    laptop = yaml.safe_load((REPO / "configs" / "laptop.yaml").read_text())
    defaults = {"embedded default": PipelineConfig().judge.permutations, "JudgeConfig": JudgeConfig().permutations,
                "a juror": parse_config({"jury": [{}]}).jury[0].permutations,
                "JudgeTask": JudgeTask("j", "m").permutations, "laptop.yaml": laptop["judge"]["permutations"]}
    assert set(defaults.values()) == {2}, defaults  # a shuffle and its reverse
