"""Model families for the self-preference warning: hub ids, local folders, the embedded model."""

import json

import pytest

from prefgen.config import parse_config
from prefgen.config.family import family_of_name, model_family, self_preference_warnings


@pytest.mark.parametrize(
    "a, b",
    [
        ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"),
        ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-Coder-7B-Instruct"),
        ("embedded://SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct"),
        ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mistral-7B-v0.1"),
        ("google/gemma-2-9b-it", "google/gemma-2-2b"),
        ("microsoft/Phi-3-mini-4k-instruct", "microsoft/Phi-3-medium-128k-instruct"),
        ("Qwen/Qwen2.5-7B-Instruct", "unsloth/Qwen2.5-7B-Instruct-bnb-4bit"),  # a re-upload
    ],
)
def test_same_family(a, b):
    assert model_family(a) == model_family(b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen3-8B"),
        ("Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
        ("embedded://SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM3-3B"),
        ("google/gemma-2-9b-it", "google/gemma-3-4b-it"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
    ],
)
def test_different_family(a, b):
    assert model_family(a) != model_family(b)


def test_names():
    assert model_family("embedded://SmolLM2-135M-Instruct") == "smollm2"
    assert family_of_name("Qwen2.5-7B-Instruct") == "qwen2.5"
    assert family_of_name("Qwen3-30B-A3B") == "qwen3"
    assert family_of_name("Instruct") == "instruct"  # never empty


def test_local_folder_reads_its_own_config(tmp_path):
    tuned = tmp_path / "my-finetune"
    tuned.mkdir()
    (tuned / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen2.5-1.5B-Instruct", "model_type": "qwen2"}))
    assert model_family(str(tuned)) == model_family("Qwen/Qwen2.5-7B-Instruct")
    bare = tmp_path / "exported"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"model_type": "gemma2"}))
    assert model_family(str(bare)) == "gemma2"
    named = tmp_path / "Llama-3.1-8B-Instruct"
    named.mkdir()  # no config.json: the folder's name
    assert model_family(str(named)) == model_family("meta-llama/Llama-3.1-70B")


def test_self_preference_warnings_exact_and_by_family():
    writers = ["Qwen/Qwen2.5-1.5B-Instruct", "embedded://SmolLM2-135M-Instruct"]
    judges = [("judge", "Qwen/Qwen2.5-7B-Instruct"), ("exact", "embedded://SmolLM2-135M-Instruct"),
              ("clean", "meta-llama/Llama-3.1-8B-Instruct")]
    warned = self_preference_warnings(judges, writers)
    assert len(warned) == 2
    assert "'judge'" in warned[0] and "same family (qwen2.5)" in warned[0] and "Qwen/Qwen2.5-1.5B-Instruct" in warned[0]
    assert "'exact'" in warned[1] and "also writes candidates" in warned[1]
    assert self_preference_warnings([("j", "meta-llama/Llama-3.1-8B-Instruct")], writers) == []


def test_config_warns_on_a_judge_of_a_generators_family():
    cfg = parse_config({
        "generators": [{"model": "Qwen/Qwen2.5-1.5B-Instruct", "num_completions": 2}],
        "evolution": {"enabled": False},
        "judge": {"model": "Qwen/Qwen2.5-7B-Instruct"},
        "jury": [{"model": "meta-llama/Llama-3.1-8B-Instruct"}],
    })
    [warning] = cfg.warnings()
    assert "'judge'" in warning and "qwen2.5" in warning
    evolving = parse_config({"generators": [{"model": "meta-llama/Llama-3.1-8B-Instruct"}],
                             "judge": {"model": "Qwen/Qwen2.5-7B-Instruct"}})
    assert evolving.warnings() == []  # the evolver is the embedded SmolLM2: another family


def test_models_named_by_provided_responses_count_as_writers(tmp_path):
    from prefgen.input.read import read_instructions

    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"prompt": "Name a colour.", "chosen": {"text": "Blue.", "model": "Qwen/Qwen2.5-72B-Instruct"},
                                "rejected": "Red."}) + "\n")
    cfg = parse_config({"input": {"path": str(path), "preference": True}, "generators": [],
                        "evolution": {"enabled": False}, "judge": {"model": "Qwen/Qwen2.5-7B-Instruct"}})
    inputs = read_instructions(cfg.input)
    assert inputs.provided_models == ["Qwen/Qwen2.5-72B-Instruct"]  # "Red." names no model
    assert cfg.warnings() == []  # the config alone knows no writer
    [warning] = cfg.warnings(provided_models=inputs.provided_models)
    assert "'judge'" in warning and "qwen2.5" in warning and "Qwen/Qwen2.5-72B-Instruct" in warning
