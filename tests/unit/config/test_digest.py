"""The config digest covers what shapes the output and nothing else; a refused resume names the keys."""

import copy
import json

import pytest

from prefgen.config import EngineConfig, parse_config
from prefgen.output.manifest import MANIFEST_FILE, ResumeRefused
from prefgen.output.runstate import RunState
from prefgen.output.storage import storage

BASE = {
    "models": {"m": {}},
    "generators": [{"name": "g", "model": "m", "system_prompt": "Be brief.", "sampling": {"max_tokens": 64}},
                   {"name": "h", "model": "m"}],
    "evolution": {"model": "m", "criteria": ["details"]},
    "judge": {"model": "m", "aspects": ["overall", "honesty"]},
    "jury": [{"name": "j2", "model": "m"}],
}

# Every engine key with another valid value, and whether it changes what the run writes.
ENGINE_CHANGES = {
    "dtype": ("float32", True),
    "max_model_len": (2048, True),
    "seed": (7, True),
    "extra": ({"quantization": "fp8"}, True),
    "tensor_parallel_size": (2, False),
    "gpu_memory_utilization": (0.5, False),
    "enforce_eager": (False, False),
    "replicas": (2, False),
    "gpus_per_replica": (1, False),
    "device": ("gpu", False),
    "accelerator_type": ("A10G", False),
    "cpus_per_replica": (3, False),
    "cpu_kv_cache_gib": (4, False),
    "cpu_threads": (2, False),
    "batch_size": (4, False),
    "batches_in_flight": (1, False),
}


def changed(dotted: str, value, base: dict = BASE) -> dict:
    data = copy.deepcopy(base)
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[leaf] = value
    return data


def test_every_engine_key_is_tested_and_sorted_in_the_code():
    from prefgen.models.settings import ENGINE_OUTPUT_KEYS, ENGINE_PLACEMENT_KEYS

    assert set(ENGINE_CHANGES) == set(EngineConfig.model_fields)
    assert ENGINE_OUTPUT_KEYS == {k for k, (_, shapes) in ENGINE_CHANGES.items() if shapes}
    assert ENGINE_PLACEMENT_KEYS == {k for k, (_, shapes) in ENGINE_CHANGES.items() if not shapes}


@pytest.mark.parametrize("key", sorted(ENGINE_CHANGES))
def test_engine_key_changes_the_digest_only_if_it_shapes_the_output(key):
    value, shapes = ENGINE_CHANGES[key]
    before = parse_config(BASE)
    after = parse_config(changed(f"models.m.engine.{key}", value))
    assert after.model_of(after.judge).engine != before.model_of(before.judge).engine  # the change took
    assert (after.digest() != before.digest()) is shapes


@pytest.mark.parametrize(
    "dotted, value",
    [
        ("generators.0.sampling.temperature", 0.1),
        ("generators.0.sampling.top_p", 0.5),
        ("generators.0.sampling.max_tokens", 32),
        ("generators.0.system_prompt", "Be long."),
        ("generators.0.template", "Q: {instruction}"),
        ("generators.0.num_completions", 2),
        ("generators.0.name", "g2"),
        ("generators.1.model", "org/other-model"),
        ("evolution.num_evolutions", 2),
        ("evolution.criteria", ["creativity"]),
        ("evolution.template", "mission"),
        ("evolution.keep_original", False),
        ("evolution.enabled", False),
        ("evolution.sampling.temperature", 0.2),
        ("judge.aspects", ["overall"]),
        ("judge.combine", "min"),
        ("judge.mode", "single"),
        ("judge.permutations", 4),
        ("judge.rationales", False),
        ("judge.guided", False),
        ("judge.max_retries", 0),
        ("judge.sampling.max_tokens", 256),
        ("judge.name", "boss"),
        ("jury.0.aspects", ["helpfulness"]),
        ("pairing.strategy", "all_pairs"),
        ("pairing.min_margin", 2),
        ("pairing.length_matched", True),
        ("pairing.allow_truncated_chosen", True),
        ("seed", 3),
    ],
)
def test_output_shaping_key_changes_the_digest_and_is_named(dotted, value):
    before, after = parse_config(BASE), parse_config(changed(dotted, value))
    assert after.digest() != before.digest()
    from prefgen.config.digest import differing_keys

    named = differing_keys(before.digest_parts(), after.digest_parts())
    assert any(k == dotted or k.startswith(dotted + ".") for k in named), named


@pytest.mark.parametrize(
    "dotted, value",
    [
        ("input.path", "other.jsonl"),
        ("input.limit", 5),
        ("input.format", "jsonl"),
        ("output.path", "elsewhere"),
        ("output.overwrite", True),
        ("ray.address", "ray://head:10001"),
        ("ray.mode", "phased"),
        ("ray.num_cpus", 8),
        ("ray.max_batch_retries", 5),
        ("ray.expected_resources", {"GPU": 4}),
        ("models.unused", {"source": "org/unused"}),  # declared, used by no role
        ("models.m.engine.replicas", [1, 4]),
    ],
)
def test_placement_and_paths_leave_the_digest(dotted, value):
    assert parse_config(changed(dotted, value)).digest() == parse_config(BASE).digest()


def test_disabled_evolution_settings_leave_the_digest():
    off = changed("evolution", {"model": "m", "enabled": False})
    assert parse_config(changed("evolution.num_evolutions", 3, off)).digest() == parse_config(off).digest()


def test_template_and_rubric_file_text_changes_the_digest(tmp_path):
    template, rubric = tmp_path / "user.txt", tmp_path / "concise.yaml"
    template.write_text("Question: {instruction}")
    rubric.write_text("description: Is it short?\nlevels: {1: long, 2: short}\n")
    data = changed("judge", {"model": "m", "rubrics": {"concise": {"file": str(rubric)}}, "aspects": ["concise"]},
                   changed("generators.0.template", str(template)))
    first = parse_config(data)
    template.write_text("Please answer: {instruction}")
    second = parse_config(data)
    rubric.write_text("description: Is it short?\nlevels: {1: long, 2: very short}\n")
    third = parse_config(data)
    assert len({first.digest(), second.digest(), third.digest()}) == 3


def test_builtin_prompt_text_changes_the_digest(monkeypatch):
    from prefgen.prompts import judging, rubrics

    before = parse_config(BASE).digest()
    overall = rubrics.BUILTIN_RUBRICS["overall"]
    monkeypatch.setitem(rubrics.BUILTIN_RUBRICS, "overall",
                        overall.model_copy(update={"levels": {**overall.levels, 1: "Useless."}}))
    edited_rubric = parse_config(BASE).digest()
    monkeypatch.setattr(judging, "SYSTEM_PROMPT", judging.SYSTEM_PROMPT + " Be strict.")
    edited_system = parse_config(BASE).digest()
    assert len({before, edited_rubric, edited_system}) == 3


def open_run(out, cfg, overwrite=False) -> RunState:
    state = RunState(storage(str(out)))
    state.open(cfg.model_dump(mode="json"), cfg.digest(), "in1", overwrite, log=lambda m: None,
               digest_parts=cfg.digest_parts())
    state.claim(None)
    return state


def test_refusal_names_the_keys_that_differ_and_placement_resumes(tmp_path):
    out = tmp_path / "out"
    open_run(out, parse_config(BASE)).fail("killed")
    open_run(out, parse_config(changed("models.m.engine.replicas", 2))).fail("killed")  # placement: resumes
    edited = changed("generators.0.sampling.temperature", 0.1, changed("models.m.engine.dtype", "float16"))
    with pytest.raises(ResumeRefused) as err:
        open_run(out, parse_config(edited))
    message = str(err.value)
    assert "another config" in message and "--overwrite" in message
    assert "generators.0.sampling.temperature" in message and "judge.model.engine.dtype" in message
    assert "pairing" not in message


def test_resume_by_another_output_schema_is_refused(tmp_path):
    out = tmp_path / "out"
    cfg = parse_config(BASE)
    open_run(out, cfg).fail("killed")
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["output_schema"] >= 1 and manifest["versions"]["prefgen"]
    manifest["output_schema"] = 0
    manifest["versions"]["prefgen"] = "0.0.1"
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ResumeRefused, match=r"prefgen 0\.0\.1 with output schema 0.*--overwrite"):
        open_run(out, cfg)
    open_run(out, cfg, overwrite=True)  # a fresh run is allowed
