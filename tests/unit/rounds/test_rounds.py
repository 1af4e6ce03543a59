"""On-policy rounds without Ray or training: the policy and its base, each round's config, each
round's figures, train-dpo's refusals, the command line, and the loop's chain of rounds with its
child processes scripted (the real loop runs in benchmarks/rounds.py; train-dpo's real training in
tests/integration/test_pipeline_run.py)."""

import copy
import importlib.util
import json

import pytest
import yaml

from prefgen.cli import _parser, main, training_settings
from prefgen.config import parse_config
from prefgen.rounds import loop
from prefgen.rounds.plan import (RoundsError, base_source, policy_generator, policy_ratings, round_config,
                                 round_figures, sampled_adapter, summary_line, versus_previous)
from prefgen.rounds.train import FIGURES_FILE, TrainSettings, load_pairs
from support.lora_adapter import write_lora_adapter, write_tiny_base as write_base
from support.report_output import CONFIG, write_output

ONE = {"models": {"p": {"kind": "vllm", "source": "org/policy", "adapters": {}}},
       "generators": [{"name": "policy", "model": "p", "adapter": None}], "output": {"path": "x"}}


def test_the_policy_is_the_named_generator_or_the_only_one():
    assert policy_generator(ONE)["name"] == "policy"
    assert policy_generator(CONFIG, "g2")["name"] == "g2"
    with pytest.raises(RoundsError, match=r"2 generators \(g1, g2\): name the policy with --policy NAME"):
        policy_generator(CONFIG)
    with pytest.raises(RoundsError, match="--policy g9: no generator of that name; the config's generators: g1, g2"):
        policy_generator(CONFIG, "g9")
    with pytest.raises(RoundsError, match="no generators"):
        policy_generator({"generators": []})


def test_the_base_is_the_policys_model_or_the_one_every_generator_runs_on():
    assert base_source(CONFIG, "g1") == "org/m1"
    with pytest.raises(RoundsError, match="model 'm2' of kind endpoint; a trained adapter is served by a kind vllm"):
        base_source(CONFIG, "g2")
    with pytest.raises(RoundsError, match=r"run on 2 models \(m2 \(endpoint\), org/m1\): name the policy with --policy NAME"):
        base_source(CONFIG)
    shared = copy.deepcopy(CONFIG)
    shared["generators"][1]["model"] = "m1"
    assert base_source(shared) == "org/m1" and base_source(ONE) == "org/policy"


def test_round_one_only_moves_the_output_and_later_rounds_sample_the_last_adapter():
    first = round_config(ONE, 1, "/runs/round1/", "policy", None)
    assert first["output"] == {"path": "/runs/round1/output", "overwrite": False}
    assert first["generators"] == ONE["generators"] and first["models"] == ONE["models"]
    second = round_config(ONE, 2, "/runs/round2", "policy", "/runs/round1/adapter")
    assert second["models"]["p"]["adapters"] == {"round1": {"path": "/runs/round1/adapter", "rank": None}}
    assert second["generators"][0]["adapter"] == "round1"
    assert second["output"]["path"] == "/runs/round2/output"
    assert ONE["models"]["p"]["adapters"] == {} and ONE["generators"][0]["adapter"] is None  # not mutated
    assert sampled_adapter(second, "policy") == "/runs/round1/adapter" and sampled_adapter(first, "policy") is None


def test_a_rewritten_round_config_loads_and_serves_the_adapter(tmp_path):
    """The round's config written as the loop writes it is a config prefgen loads: the policy on the
    adapter, the judge (same model) on the base."""
    base = write_base(tmp_path / "base")
    adapter = write_lora_adapter(tmp_path / "round1-adapter", base, rank=8)
    dumped = parse_config({"models": {"m": {"source": str(base)}}, "generators": [{"name": "policy", "model": "m",
                           "num_completions": 2}], "evolution": {"enabled": False},
                           "judge": {"model": "m"}}).model_dump(mode="json")
    cfg = parse_config(yaml.safe_load(yaml.safe_dump(round_config(dumped, 2, str(tmp_path / "r2"), "policy",
                                                                    str(adapter)))))
    assert cfg.generators[0].adapter == "round1" and cfg.judge.adapter is None
    assert cfg.models["m"].adapters["round1"].path == str(adapter)


def test_a_rounds_figures_count_the_policys_own_rated_answers_once():
    out = write_output_rows()
    figures = round_figures(out["pairs"], out["rejects"], policy_ratings(out["pairs"] + out["rejects"], "g1"))
    # g1's generated answers: a 5.0, b 1.5, c 3.0 (rejected row); a/g1/0/e1 is a rewrite, not the policy's
    assert figures == {"pairs": 2, "rejects": 1, "mean_chosen_rating": 4.5, "mean_rejected_rating": 1.75,
                       "policy_prompts_rated": 3, "policy_mean_rating": round((5.0 + 1.5 + 3.0) / 3, 4)}
    twice = policy_ratings(out["pairs"] + out["pairs"] + out["rejects"], "g1")  # a prompt's pairs share candidates
    assert twice == {"a": 5.0, "b": 1.5, "c": 3.0}
    unrated = copy.deepcopy(out["rejects"])
    unrated[0]["candidates"][0]["rating"] = None
    assert "c" not in policy_ratings(unrated, "g1")


def test_the_policy_is_compared_with_the_last_round_on_the_prompts_rated_in_both():
    assert versus_previous({"a": 4.0}, None) is None
    vs = versus_previous({"a": 4.0, "b": 2.0, "new": 5.0}, {"a": 3.0, "b": 2.0, "gone": 1.0})
    assert vs == {"prompts": 2, "policy_mean_rating": 3.0, "previous_policy_mean_rating": 2.5, "change": 0.5}
    assert versus_previous({"a": 1.0}, {"b": 1.0})["change"] is None
    line = summary_line({"round": 2, "pairs": 3, "rejects": 1, "mean_chosen_rating": 4.0, "policy_mean_rating": 3.0,
                         "policy_prompts_rated": 4, "vs_previous": vs})
    assert line.endswith("vs round 1 on the 2 prompts rated in both: 3.00 vs 2.50")


def write_output_rows():
    from support.report_output import rows, split

    pairs, rejects = split(rows())
    return {"pairs": pairs, "rejects": rejects}


def test_train_dpo_reads_the_committed_pairs_and_names_an_output_without_any(tmp_path, capsys):
    out = write_output(tmp_path / "out")
    manifest, rows = load_pairs(out["uri"])
    assert manifest["config"] == CONFIG
    assert [r["chosen"] for r in rows] == [p["chosen"] for p in out["pairs"]]  # the uncommitted shard left out
    assert set(rows[0]) == {"prompt", "chosen", "rejected"}
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"config": CONFIG, "rejects": {"all_tied": 2}}))
    code = main(["train-dpo", str(empty), "--adapter-out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and f"{empty} holds no pairs (its rows were rejected: all_tied 2" in err
    code = main(["train-dpo", str(tmp_path / "nothing"), "--adapter-out", str(tmp_path / "a")])
    assert code == 2 and f"{tmp_path / 'nothing'} holds no manifest.json" in capsys.readouterr().err


def test_train_dpo_without_the_extra_says_what_to_install(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    out = write_output(tmp_path / "out")
    assert main(["train-dpo", out["uri"], "--adapter-out", str(tmp_path / "a"), "--policy", "g1"]) == 2
    err = capsys.readouterr().err
    assert "needs peft, not installed: pip install 'prefgen[train]' (in the repository: uv sync --extra train)" in err
    assert not (tmp_path / "a").exists()


def test_train_dpo_refuses_to_write_over_an_adapter(tmp_path, capsys):
    out = write_output(tmp_path / "out")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text("{}")
    assert main(["train-dpo", out["uri"], "--adapter-out", str(tmp_path / "a"), "--policy", "g1"]) == 2
    assert "is not empty: give another --adapter-out, or --overwrite" in capsys.readouterr().err


def test_the_training_flags_parse_and_round_trip_through_the_loops_child():
    args = _parser().parse_args(["train-dpo", "OUT", "--adapter-out", "A", "--steps", "3", "--rank", "4",
                                 "--modules", "q_proj,k_proj,v_proj", "--beta", "0.2", "--learning-rate", "1e-4"])
    settings = training_settings(args)
    assert settings == TrainSettings(steps=3, rank=4, modules=("q_proj", "k_proj", "v_proj"), beta=0.2,
                                     learning_rate=1e-4)
    assert training_settings(_parser().parse_args(["train-dpo", "O", "--adapter-out", "A"])) == TrainSettings()
    again = _parser().parse_args(["train-dpo", "O", "--adapter-out", "A", *settings.flags()])
    assert training_settings(again) == settings
    rounds = _parser().parse_args(["rounds", "c.yaml", "--rounds", "2", "--out", "R", "--limit", "4", "--epochs", "2"])
    assert (rounds.config, rounds.rounds, rounds.out, rounds.limit, training_settings(rounds).epochs) == \
        ("c.yaml", 2, "R", 4, 2.0)


def test_rounds_refuse_an_ambiguous_policy_and_no_rounds_before_anything_runs(tmp_path, capsys):
    assert main(["rounds", "--rounds", "2", "--out", str(tmp_path / "r")]) == 2  # the default: two generators
    assert "2 generators (smol-focused, smol-creative): name the policy with --policy" in capsys.readouterr().err
    assert main(["rounds", "--rounds", "0", "--out", str(tmp_path / "r"), "--policy", "smol-focused"]) == 2
    assert "--rounds 0: at least one round" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_loop_chains_each_rounds_adapter_into_the_next_round(tmp_path, monkeypatch):
    """Two rounds with the child processes scripted: round 2's config samples round 1's adapter, its
    training starts from it, a round whose adapter is written is not retrained, and rounds.json holds
    both rounds' figures."""
    calls, out = [], write_output_rows()

    def child(args, what):
        calls.append(args)
        if args[0] == "train-dpo":
            adapter = args[args.index("--adapter-out") + 1]
            write_base(tmp_path / f"base{len(calls)}")
            folder = write_lora_adapter(tmp_path / adapter, tmp_path / f"base{len(calls)}")
            (folder / FIGURES_FILE).write_text(json.dumps({"steps": 2, "wall_s": 3.0, "s_per_step": 1.5,
                                                           "losses": [0.69, 0.68]}))
        return 10.0

    monkeypatch.setattr(loop, "_child", child)
    monkeypatch.setattr(loop, "_rows", lambda output, kind: out[kind])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"generators": [{"name": "g1", "num_completions": 2}]}))
    summary = loop.run_rounds(str(config), 2, str(tmp_path / "r"), log=lambda line: None)
    r1, r2 = tmp_path / "r" / "round1", tmp_path / "r" / "round2"
    assert [c[:2] for c in calls] == [["run", str(r1 / "config.yaml")], ["train-dpo", str(r1 / "output")],
                                      ["run", str(r2 / "config.yaml")], ["train-dpo", str(r2 / "output")]]
    assert "--init-adapter" not in calls[1] and calls[3][calls[3].index("--init-adapter") + 1] == str(r1 / "adapter")
    second = yaml.safe_load((r2 / "config.yaml").read_text())
    assert second["generators"][0]["adapter"] == "round1"
    assert second["models"][second["generators"][0]["model"]]["adapters"]["round1"]["path"] == str(r1 / "adapter")
    assert yaml.safe_load((r1 / "config.yaml").read_text())["generators"][0]["adapter"] is None  # round 1: the base
    assert json.loads((tmp_path / "r" / "rounds.json").read_text()) == summary
    assert [s["sampled_adapter"] for s in summary] == [None, str(r1 / "adapter")]
    assert summary[0]["vs_previous"] is None and summary[1]["vs_previous"]["change"] == 0.0
    assert summary[1]["pairs"] == 2 and summary[1]["train_s_per_step"] == 1.5
    calls.clear()
    loop.run_rounds(str(config), 2, str(tmp_path / "r"), log=lambda line: None)  # again: runs resume, no retraining
    assert [c[0] for c in calls] == ["run", "run"]


def test_a_round_without_pairs_stops_the_loop_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "_child", lambda args, what: 1.0)
    monkeypatch.setattr(loop, "_rows", lambda output, kind: [] if kind == "pairs" else [{"id": "a", "candidates": []}])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"generators": [{"name": "g1", "num_completions": 2}]}))
    with pytest.raises(RoundsError, match=r"round 1 gave no pairs \(.*round1/output: 1 rejects"):
        loop.run_rounds(str(config), 2, str(tmp_path / "r"), log=lambda line: None)


def test_a_child_that_fails_stops_the_loop_with_its_exit_code(monkeypatch):
    """A round's run that stopped resumable passes its code on and says to rerun; a refusal points at its message."""
    for code, hint in ((3, "run the same command again to resume"), (2, "see its message above")):
        monkeypatch.setattr(loop.subprocess, "run", lambda cmd, code=code: type("Done", (), {"returncode": code}))
        with pytest.raises(RoundsError, match=f"round 1's run exited with code {code}; .*{hint}") as err:
            loop._child(["run", "c.yaml"], "round 1's run")
        assert err.value.code == code
