"""Re-judging a preference dataset as a Ray job: `ray job submit` onto a real Ray head, real vLLM
(CPU build), a jury of the embedded model and a reward model, no generation.

One scenario, asserted on by every test here (it merges three that each started Ray and engines
of their own: the job submission, the judge-only run and the reward-model run). A head on
loopback (token authentication on, as users run it; `support/ray_head.py`) receives
`jobs/run_pipeline.py` with `--working-dir <repo>`, so the code reaches the job zipped and
uploaded, as on a cluster, and the input path in the config is relative: it resolves inside the
uploaded copy. The job rates the bundled TRL preference sample (3 rows, one of them a
conversation, 2 provided responses each) with `generators: []`, so the plan starts two engines
and nothing generates: the judge (generative, under guided decoding) and the juror `rm`, the
test-only reward model (`support/random_reward_model.py`: an untrained head, so its scores are
noise; it tests the path, never the judgement).
"""

from __future__ import annotations

import json
import math
import uuid

import pyarrow.parquet as pq
import pytest
import yaml
from support.random_reward_model import random_reward_model
from support.ray_head import _job_info, _ray, _submit, start_head

from prefgen.config import InputConfig
from prefgen.io import SAMPLE_INSTRUCTIONS, read_instructions
from prefgen.reward import to_jury_scale

INPUT = SAMPLE_INSTRUCTIONS.parent / "sample_preferences.jsonl"
INPUT_IN_UPLOAD = "prefgen/data/sample_preferences.jsonl"  # relative: read from the uploaded working dir
ROWS = 3
ENGINE = {"max_model_len": 1024, "batch_size": 4, "cpu_kv_cache_gib": 1}


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    yield from start_head(tmp_path_factory.mktemp("job_submit"))


@pytest.fixture(scope="module")
def job(head):
    config = {
        "input": {"path": INPUT_IN_UPLOAD, "preference": True},
        "models": {"smol": {"engine": ENGINE},
                   "rm": {"kind": "reward_model", "source": random_reward_model(seed=0), "engine": ENGINE}},
        "generators": [],
        "evolution": {"enabled": False},
        "judge": {"model": "smol", "aspects": ["overall"], "permutations": 1, "rationales": False,
                  "sampling": {"temperature": 0.0, "max_tokens": 48}},
        "jury": [{"model": "rm", "name": "rm"}],
        # the pair check would need a third engine here (a second of smol, after the reward model's
        # stage: test_plan covers that plan); it runs in test_pipeline_run. Off, pairs say "not checked"
        "pairing": {"min_margin": 0.5, "verification": {"enabled": False}},
    }
    path = head.root / "rejudge.yaml"
    path.write_text(yaml.safe_dump(config))
    out = head.root / "out"
    sid = f"prefgen-test-{uuid.uuid4().hex[:8]}"
    proc, wall = _submit(head, sid, "run", str(path), "--output", str(out))
    (head.root / "submit_ok.txt").write_text(f"wall {wall:.1f} s\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    info = _job_info(head, sid)
    logs = _ray(head.env, "job", "logs", "--address", head.address, sid)
    read = lambda kind: [r for f in sorted((out / kind).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]  # noqa: E731
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else None
    return {"proc": proc, "info": info, "logs": logs, "out": out, "manifest": manifest,
            "pairs": read("pairs"), "rejects": read("rejects")}


def candidates(job) -> list[dict]:
    by_row = {p["id"]: p["candidates"] for p in job["pairs"]} | {r["id"]: r["candidates"] for r in job["rejects"]}
    return [c for cands in by_row.values() for c in cands]


def test_token_auth_guards_the_head(head):
    # A client without the token (a HOME with no ~/.ray/auth_token), and one with a wrong token.
    no_token = dict(head.env, RAY_AUTH_MODE="disabled", HOME=str(head.root))
    wrong_token = dict(head.env, RAY_AUTH_TOKEN="0" * 32)
    for env in (no_token, wrong_token):
        proc = _ray(env, "job", "list", "--address", head.address)
        assert proc.returncode != 0
        assert "AuthenticationError" in proc.stderr, proc.stderr[-2000:]


def test_the_job_succeeds_and_its_counts_add_up(job):
    proc, info = job["proc"], job["info"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert info["status"] == "SUCCEEDED" and info["driver_exit_code"] == 0, info
    assert job["logs"].returncode == 0, job["logs"].stderr
    assert "[prefgen] done" in job["logs"].stdout and f"rows in:        {ROWS}" in job["logs"].stdout
    m = job["manifest"]
    assert m["status"] == "complete" and m["input_rows"] == ROWS
    assert m["paired_rows"] + sum(m["rejects"].values()) == ROWS
    # the shards on disk hold what the manifest counts
    on_disk = {d: sum(pq.read_metadata(f).num_rows for f in (job["out"] / d).glob("*.parquet"))
               for d in ("pairs", "rejects")}
    assert on_disk == {"pairs": m["pairs"], "rejects": sum(m["rejects"].values())}, (on_disk, m)


def test_the_plan_starts_the_judges_engines_and_nothing_generates(job):
    plan = [line for line in job["logs"].stdout.splitlines() if "plan:" in line]
    assert any("engines: 2" in line for line in plan), plan
    assert sorted(line.split("roles:")[1].strip() for line in plan if "roles:" in line) == ["judge:judge", "judge:rm"]
    m = job["manifest"]
    assert m["candidates"]["provided"] == 2 * ROWS
    assert m["candidates"]["generated"] == 0 and m["candidates"]["evolved"] == 0


def test_the_candidates_are_the_provided_responses_and_a_conversation_stays_whole(job):
    expected = read_instructions(InputConfig(path=str(INPUT), preference=True))
    assert {p["id"] for p in job["pairs"]} | {r["id"] for r in job["rejects"]} == {r["id"] for r in expected.rows}
    provided = {c["candidate_id"]: c for row in expected.rows for c in row["candidates"]}
    cands = candidates(job)
    assert sorted(c["candidate_id"] for c in cands) == sorted(provided)  # the provided ones, no others
    for c in cands:
        want = provided[c["candidate_id"]]
        assert (c["origin"], c["text"], c["generator"]) == ("provided", want["text"], want["generator"])
    conversation = next(r for r in expected.rows if len(r["messages"]) > 1)
    for p in job["pairs"]:
        if p["id"] == conversation["id"]:
            assert p["prompt"] == conversation["messages"]  # the whole conversation
        assert p["verified"] is None and p["verdicts"] == []  # the pair check is off


def test_every_candidate_is_rated_by_the_judge_and_scored_once_by_the_reward_model(job):
    cands = candidates(job)
    assert sum(any(j["judge"] == "judge" and j["rating"] is not None for j in c["judgments"]) for c in cands) >= 4
    for c in cands:
        assert sorted(j["judge"] for j in c["judgments"]) == ["judge", "rm"]
        (score,) = [j for j in c["judgments"] if j["judge"] == "rm"]
        assert (score["aspect"], score["rationale"], score["error"]) == ("reward", None, None)
        assert math.isfinite(score["rating"])


def test_the_jury_puts_each_rows_reward_scores_on_the_judges_scale_and_pairs_follow(job):
    rows = [(p["candidates"], p) for p in job["pairs"]] + [(r["candidates"], None) for r in job["rejects"]]
    for cands, pair in rows:
        scaled = to_jury_scale({c["candidate_id"]: next(j["rating"] for j in c["judgments"] if j["judge"] == "rm")
                                for c in cands})
        for c in cands:
            judge = next(j["rating"] for j in c["judgments"] if j["judge"] == "judge")
            if judge is not None:
                assert c["rating"] == pytest.approx((judge + scaled[c["candidate_id"]]) / 2)
        if pair:
            by_id = {c["candidate_id"]: c["rating"] for c in cands}
            assert pair["chosen_rating"] == by_id[pair["chosen_candidate_id"]] == max(by_id.values())
            assert pair["chosen_rating"] - pair["rejected_rating"] >= 0.5


def test_each_engine_reports_its_start_and_its_work(job):
    m = job["manifest"]
    assert set(m["stages"]) == {"smol", "rm"}, m["stages"]
    for name, role in (("smol", "judge:judge"), ("rm", "judge:rm")):
        stage = m["stages"][name]
        assert stage["roles"] == [role] and stage["replicas"] == 1
        assert 0 < stage["engine_start_s"] < m["wall_seconds"] and stage["busy_s"] > 0
        assert m["roles"][role]["rows"] == ROWS and m["roles"][role]["busy_s"] > 0
    assert m["roles"]["judge:rm"]["requests"] == 2 * ROWS  # one score per candidate
    assert m["stages"]["smol"]["output_tokens"] > 0


def test_a_bad_config_job_fails_with_the_key_named(head):
    bad = head.root / "bad.yaml"
    bad.write_text(yaml.safe_dump({"judge": {"sampling": {"temprature": 0.0}}}))
    sid = f"prefgen-bad-{uuid.uuid4().hex[:8]}"
    proc, _ = _submit(head, sid, "run", str(bad), "--output", str(head.root / "bad-out"))
    assert proc.returncode != 0
    info = _job_info(head, sid)
    assert info["status"] == "FAILED" and info["driver_exit_code"] == 2, info
    logs = _ray(head.env, "job", "logs", "--address", head.address, sid)
    assert "judge.sampling.temprature: Extra inputs are not permitted" in logs.stdout
    assert not (head.root / "bad-out").exists()
