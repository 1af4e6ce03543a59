"""A reward model as the only judge, on real Ray and real vLLM (CPU build), through the CLI.

The reward model is the test-only one (`random_reward_model`): the embedded SmolLM2-135M-Instruct
with a seeded, untrained scoring head, so its scores are noise; the run checks the path (engine
on vLLM's pooling runner, one score per candidate, pairing on the scores), not the judgement.
Small on purpose: four instructions, one generator (three completions, 24 tokens), no evolution.
"""

import glob
import json
import math
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml
from support.random_reward_model import random_reward_model

pytestmark = pytest.mark.integration

INSTRUCTIONS = ["What is synthetic data?", "Why is the sky blue?", "Give two tips for sleeping better.",
                "Name three uses of a paperclip."]
ENGINE = {"max_model_len": 1024, "batch_size": 4, "cpu_kv_cache_gib": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("reward")
    data = work / "input.jsonl"
    data.write_text("".join(json.dumps({"instruction": i}) + "\n" for i in INSTRUCTIONS))
    config = {
        "input": {"path": str(data)},
        "models": {"chat": {"engine": ENGINE},
                   "rm": {"kind": "reward_model", "source": random_reward_model(seed=0), "engine": ENGINE}},
        "generators": [{"name": "smol", "model": "chat", "num_completions": 3,
                        "sampling": {"temperature": 1.0, "max_tokens": 24}}],
        "evolution": {"enabled": False},
        "judge": {"model": "rm", "name": "rm"},
        # raw scores of a random head differ by little: the margin is in the model's units
        "pairing": {"min_margin": 1e-6, "allow_truncated_chosen": True},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    out = work / "out"
    proc = subprocess.run([sys.executable, "-m", "prefgen.cli", "run", str(work / "config.yaml"), "--output", str(out)],
                          capture_output=True, text=True, timeout=900)
    (work / "stdout.txt").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    read = lambda kind: [r for f in sorted(glob.glob(f"{out}/{kind}/*.parquet")) for r in pq.read_table(f).to_pylist()]  # noqa: E731
    return {"pairs": read("pairs"), "rejects": read("rejects"), "summary": json.loads((out / "manifest.json").read_text()),
            "stdout": proc.stdout}


def test_every_candidate_has_one_finite_reward_score(run):
    rows = {r["id"]: r for r in run["pairs"] + run["rejects"]}
    assert len(rows) == len(INSTRUCTIONS)
    for row in rows.values():
        assert len(row["candidates"]) == 3
        for cand in row["candidates"]:
            (j,) = cand["judgments"]
            assert (j["judge"], j["aspect"], j["rationale"], j["error"]) == ("rm", "reward", None, None)
            assert math.isfinite(j["rating"]) and cand["rating"] == j["rating"]


def test_pairs_follow_score_order(run):
    assert run["pairs"], run["rejects"]
    for pair in run["pairs"]:
        scores = {c["candidate_id"]: c["rating"] for c in pair["candidates"]}
        assert pair["chosen_rating"] == scores[pair["chosen_candidate_id"]] == max(scores.values())
        assert pair["rejected_rating"] == scores[pair["rejected_candidate_id"]] == min(scores.values())
        assert pair["chosen_rating"] > pair["rejected_rating"]


def test_the_reward_stage_reports_its_engine_start_and_scoring_time(run):
    stages = json.dumps(run["summary"])
    assert "judge:rm" in stages
    print("\n[reward integration] " + "\n".join(line for line in run["stdout"].splitlines()
                                                if "engine ready" in line or " rows, " in line))
