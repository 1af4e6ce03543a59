"""Re-judging a preference dataset as a Ray job on an autoscaling cluster, as `cluster.yaml`
users run prefgen: `ray job submit` onto a head that holds no CPU and has no worker when the job
starts, real vLLM (CPU build), a jury of the embedded model and a reward model, no generation,
input and output on S3.

One scenario, asserted on by every test here (it merges the job submission, the judge-only run,
the reward-model run and the autoscaling job, which each started a cluster or engines of their
own). The cluster is Ray's own autoscaler with its fake multi-node provider
(`support/autoscaling_head.py`: real raylets started and stopped by the real autoscaler, worker
type CPU 2, GPU 1, accelerator_type:A10G, all logical; token authentication on, as users run it).
The plan is made through `ray.expected_resources` (as `configs/mission.yaml` does), both engines
ask for `device: gpu` on an A10G, so the autoscaler must add a worker for each; vLLM itself runs
on the CPU in those actors (`engines/arguments.vllm_device`). An S3 API server on loopback
(`support/s3_server.py`) holds the input and the output, which the test then reports, exports and
loads with `datasets` straight from S3.

The first submission is stopped with `ray job stop` as soon as the judge's first batch is done
(its stats on S3 say so): a graceful stop, in which the judge takes no new batch, the batches past
it are committed, the manifest says `stopped` and the engines exit. (Waiting for the first
*commit* instead left nothing to resume: the judge runs ahead while the reward model's engine
loads, so when the first commit is on S3 every row has passed the judge and all three are
committed within the grace.) The head's `RAY_JOB_STOP_WAIT_TIME_S` gives the job supervisor's
SIGKILL room for `ray.stop_grace_s`, as README's "Stopping a run" says. The second submission
resumes it and does the rest, and the assertions on rows are on that final output. It is the
same job with its input moved: the config names the input by a relative path
(`prefgen/data/...`), read from the copy of the repository that `--working-dir` zipped and
uploaded, as on a cluster; a resume follows the rows (the input digest of their ids: the file's
name, the line, the content), not the folder they are read from. Between the two submissions
the test waits for the idle workers to go (after 15 s), so that the second submission's engines
too run on workers the autoscaler adds (the fixture `job` says why a mix of old and new workers
is avoided on this rig). At the end the workers scale back to zero again.

The job rates the bundled TRL preference sample (3 rows, one of them a conversation, 2 provided
responses each) with `generators: []`, so the plan starts two engines and nothing generates: the
judge (generative, under guided decoding) and the juror `rm`, the test-only reward model
(`support/random_reward_model.py`: an untrained head, so its scores are noise; it tests the path,
never the judgement).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from support.autoscaling_head import MAX_WORKERS, start_autoscaling_head
from support.job_stop import ReadyJobStop, engine_processes, still_running, titles
from support.random_reward_model import random_reward_model
from support.ray_head import JOB_TIMEOUT, _job_info, _ray, _submit, submit_command
from support.waiting import wait_for

from prefgen.config import InputConfig
from prefgen.dataset.report import read_output
from prefgen.input.read import SAMPLE_INSTRUCTIONS, read_instructions
from prefgen.output.commits import CommitLog
from prefgen.output.storage import storage
from prefgen.roles.judge.reward import to_jury_scale

INPUT = SAMPLE_INSTRUCTIONS.parent / "sample_preferences.jsonl"
INPUT_IN_UPLOAD = "prefgen/data/sample_preferences.jsonl"  # relative: read from the uploaded working dir
ROWS = 3
# A batch per row, one at a time: when the judge has done its first, the others wait for it.
# One logical A10G each: no worker holds both engines, so the autoscaler adds one for each.
ENGINE = {"max_model_len": 1024, "batch_size": 1, "batches_in_flight": 1, "cpu_kv_cache_gib": 1,
          "device": "gpu", "accelerator_type": "A10G", "cpus_per_replica": 1}
EXPECTED = {"GPU": MAX_WORKERS, "CPU": 2 * MAX_WORKERS, "accelerator_type:A10G": MAX_WORKERS}  # ray.expected_resources
GRACE_S = 90  # ray.stop_grace_s: room for the reward model's engine to start and take what the judge did


@pytest.fixture(scope="module")
def head(tmp_path_factory, s3_env):
    # ray job stop's SIGKILL comes RAY_JOB_STOP_WAIT_TIME_S after its SIGTERM (default 3 s)
    yield from start_autoscaling_head(tmp_path_factory.mktemp("job_submit"),
                                      extra_env=s3_env | {"RAY_JOB_STOP_WAIT_TIME_S": "120"})


def submit(head, config, out):
    sid = f"prefgen-test-{uuid.uuid4().hex[:8]}"
    proc, wall = _submit(head, sid, "run", str(config), "--output", out)
    (head.root / f"{sid}.txt").write_text(f"wall {wall:.1f} s\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    return proc, _job_info(head, sid), _ray(head.env, "job", "logs", "--address", head.address, sid)


def batch_commits(out) -> list[str]:
    """The batch commits on S3 (not segments, merges or retire records)."""
    names = [e.key.rsplit("/", 1)[-1] for e in storage(out).list_all("_commits")]
    return [n for n in names if n.endswith(".json") and not n.startswith(("seg-", "merge-", "retire-"))]


def judged_rows(out) -> int:
    """The rows the judge's engine stage has finished, by its stats files on S3."""
    store = storage(out)
    stats = [json.loads(store.read(e.key)) for e in store.list_all("_stats") if e.key.endswith(".json")]
    return sum(s["work"]["judge:judge"]["rows"] for s in stats if s["stage"] == "smol")


def submit_and_stop(head, config, out) -> dict:
    """Submit the job and stop it with `ray job stop` once the judge has finished its first batch."""
    sid = f"prefgen-stopped-{uuid.uuid4().hex[:8]}"
    log = head.root / f"{sid}.txt"
    stopper = ReadyJobStop(head, sid)
    with open(log, "w") as f:
        proc = subprocess.Popen(submit_command(head, sid, "run", str(config), "--output", out), env=head.env,
                                stdout=f, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: judged_rows(out), proc, JOB_TIMEOUT, "the judge's first batch", log)
            engines = engine_processes(head.temp_dir)  # the judge's engine actor (and its processes), alive
            seen = titles(engines)
            stop = stopper.stop()
            proc.wait(timeout=120)
        finally:
            stopper.close()
            if proc.poll() is None:
                proc.kill()
    deadline = time.monotonic() + 60
    while still_running(head.temp_dir, engines) and time.monotonic() < deadline:
        time.sleep(0.5)
    after = titles(still_running(head.temp_dir, engines))
    with open(log, "a") as f:
        f.write(f"\nengine processes at the judge's first batch: {seen}\nafter the stop: {after}\n")
    return {"engines": seen, "engines_after": after, "stop": stop,
            "info": _job_info(head, sid), "logs": _ray(head.env, "job", "logs", "--address", head.address, sid),
            "manifest": storage(out).read_json("manifest.json"), "commits": batch_commits(out),
            "done": {i for c in CommitLog.read(storage(out)).commits() for i in c["ids"]}}


def rejudge_config(input_path: str) -> dict:
    return {
        "input": {"path": input_path, "preference": True},
        "models": {"smol": {"engine": ENGINE},
                   "rm": {"kind": "reward_model", "source": random_reward_model(seed=0), "engine": ENGINE}},
        "generators": [],
        "evolution": {"enabled": False},
        # rationales make each judge row take seconds, longer than the stop takes to reach the stage
        # (stats on S3, `ray job stop`, SIGTERM, the flag): without them the judge could take the last
        # row before the flag and leave the resumption nothing to do
        "judge": {"model": "smol", "aspects": ["overall"], "permutations": 1, "rationales": True,
                  "sampling": {"temperature": 0.0, "max_tokens": 256}},
        "jury": [{"model": "rm", "name": "rm"}],
        # the pair check would need a third engine here (a second of smol, after the reward model's
        # stage: test_plan covers that plan); it runs in test_pipeline_run. Off, pairs say "not checked"
        "pairing": {"min_margin": 0.5, "verification": {"enabled": False}},
        "ray": {"stop_grace_s": GRACE_S, "expected_resources": EXPECTED},
    }


def scaled_down(head, timeout: float = 180) -> dict[str, dict]:
    """The alive nodes once only the head is left (idle workers go after IDLE_TIMEOUT_MIN), or
    whatever is alive when the time runs out."""
    deadline = time.monotonic() + timeout
    while len(nodes := head.alive_resources()) > 1 and time.monotonic() < deadline:
        time.sleep(5)
    return nodes


@pytest.fixture(scope="module")
def job(head, s3_server):
    before = head.alive_resources()
    folder = f"s3://{s3_server.bucket}/rejudge-job-{uuid.uuid4().hex[:8]}"
    storage(folder).put(INPUT.name, INPUT.read_bytes())  # the same name: a row's id holds it
    on_s3, in_upload = head.root / "rejudge.yaml", head.root / "rejudge-input-in-upload.yaml"
    on_s3.write_text(yaml.safe_dump(rejudge_config(f"{folder}/{INPUT.name}")))
    in_upload.write_text(yaml.safe_dump(rejudge_config(INPUT_IN_UPLOAD)))
    out = f"{folder}/out"
    stopped = submit_and_stop(head, on_s3, out)
    # Back to the head alone before the resubmission, so that its workers start fresh, as the first
    # submission's did: the workers scale to zero in between too.
    between = scaled_down(head)
    proc, info, logs = submit(head, in_upload, out)  # the same job, its input moved: resumes
    store = storage(out)
    manifest = store.read_json("manifest.json")
    stats = [json.loads(store.read(e.key)) for e in store.list_all("_stats") if e.key.endswith(".json")]
    job = {"before": before, "between": between, "proc": proc, "info": info, "logs": logs, "out": out, "manifest": manifest,
           "stopped": stopped, "stats": stats, "commits": CommitLog.read(store).commits()}
    if manifest:
        job |= {kind: read_output(store, kind).to_pylist() for kind in ("pairs", "rejects")}
    return job


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


def test_the_job_starts_with_no_worker_succeeds_and_its_counts_add_up(job):
    (head,) = job["before"].values()  # the head alone, holding no CPU
    assert head.get("CPU", 0) == 0 and head.get("GPU", 0) == 0, job["before"]
    proc, info = job["proc"], job["info"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert info["status"] == "SUCCEEDED" and info["driver_exit_code"] == 0, info
    assert job["logs"].returncode == 0, job["logs"].stderr
    assert "[prefgen] done" in job["logs"].stdout and f"rows in:        {ROWS}" in job["logs"].stdout
    m = job["manifest"]
    assert m["status"] == "complete" and m["input_rows"] == ROWS
    assert m["paired_rows"] + sum(m["rejects"].values()) == ROWS
    # the committed shards on S3 hold what the manifest counts
    assert (len(job["pairs"]), len(job["rejects"])) == (m["pairs"], sum(m["rejects"].values())), m


def test_the_plan_is_made_for_the_expected_resources_and_starts_the_judges_engines_on_gpus(job):
    plan = [line for line in job["logs"].stdout.splitlines() if "plan:" in line]
    # planned for what the cluster is expected to grow to, not for the head alone
    assert any(f"mode: streaming (planned for CPU={2 * MAX_WORKERS}, GPU={MAX_WORKERS}, "
               f"accelerator_type:A10G={MAX_WORKERS})" in line for line in plan), plan
    assert any("engines: 2" in line for line in plan), plan
    assert sum("on gpu, 1 replica(s) x 1 GPU of type A10G + 1 CPU" in line for line in plan) == 2, plan
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
        # the engine figures are this (resumed) attempt's: the rows the stopped one left
        assert m["roles"][role]["rows"] == ROWS - m["rows_skipped"] and m["roles"][role]["busy_s"] > 0
    assert m["roles"]["judge:rm"]["requests"] == 2 * (ROWS - m["rows_skipped"])  # one score per candidate
    assert m["stages"]["smol"]["output_tokens"] > 0


def test_the_engines_and_the_writer_ran_on_workers_the_autoscaler_added_for_them(head, job):
    nodes: dict[str, dict[str, set]] = {}  # attempt -> stage -> the nodes its actors ran on
    for st in job["stats"]:
        nodes.setdefault(st["attempt"], {}).setdefault(st["stage"], set()).add(st["node"])
    assert len(nodes) == 2, nodes  # the stopped submission's and the resumption's
    for stages in nodes.values():
        assert set(stages) <= {"smol", "rm"}, nodes
        # not the head (it was the only node when the job started, and holds no CPU): added workers
        assert all(n and n not in job["before"] for ns in stages.values() for n in ns), nodes
        if len(stages) == 2:  # one logical GPU a worker, one an engine: each engine on a worker of its own
            assert not stages["smol"] & stages["rm"], nodes
    assert any(set(stages) == {"smol", "rm"} for stages in nodes.values()), nodes
    # the writer (a Ray task) on an added worker too: each written batch's commit names its node
    writers = {c["node"] for c in job["commits"] if "node" in c}
    assert writers and all(n and n not in job["before"] for n in writers), writers
    # each worker unpacked the job's working dir into a folder of its own (support/fake_nodes.py),
    # as on separate disks: none re-unpacked it under another's running actors
    pattern = "session_*/runtime_resources_node*/working_dir_files/_ray_pkg_*"
    unpacked_on = {p.parent.parent.name for p in head.temp_dir.glob(pattern) if p.is_dir()}
    assert len(unpacked_on) >= 3, unpacked_on  # 2 workers a submission, each its own copy


def test_the_output_on_s3_is_reported_exported_and_loaded_by_datasets(job, tmp_path):
    import datasets

    out = job["out"]
    for args in (["report", out], ["export", out, "--format", "jsonl"]):  # a conversation: no string form
        done = subprocess.run([sys.executable, "-m", "prefgen.cli", *args], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    store = storage(out)
    assert store.read("README.md").startswith(b"---")  # the dataset card, with the Hub's metadata
    exported = [json.loads(line) for line in store.read("export/pairs.full.jsonl").decode().splitlines()]
    assert sorted(e["pair_id"] for e in exported) == sorted(p["pair_id"] for p in job["pairs"])
    assert all(e["chosen"][0]["role"] == "assistant" for e in exported)
    loaded = datasets.load_dataset("parquet", data_files=f"{out}/pairs/*.parquet", split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded["pair_id"]) == sorted(p["pair_id"] for p in job["pairs"])


def test_ray_job_stop_stops_the_first_submission_gracefully_and_keeps_its_committed_batches(job):
    st = job["stopped"]
    assert st["stop"][0] == 0, st["stop"][1][-3000:]
    assert st["info"]["status"] == "STOPPED", st["info"]
    log = st["logs"].stdout
    # the head's RAY_JOB_STOP_WAIT_TIME_S reached the driver: the whole grace, not 1.5 s
    assert f"SIGTERM received: stopping. No new batch is started; the batches that finish within {GRACE_S} s" in log
    assert "run stopped on request (SIGTERM): the batches in flight were committed" in log, log[-3000:]
    assert "(exit code 4)" in log, log[-3000:]
    m = st["manifest"]
    assert m["status"] == "stopped" and [a["status"] for a in m["attempts"]] == ["stopped"], m["attempts"]
    assert f"{ROWS} rows read from s3://" in log and f"{ROWS} usable" in log, log[:3000]  # its input on S3
    assert "stopped on request (SIGTERM)" in m["attempts"][0]["error"]
    # what the judge had done before the stop was committed, a batch a row; the rows it refused are left
    assert 1 <= len(st["done"]) < ROWS and len(st["commits"]) == len(st["done"]), st
    # the engines ran (an engine actor's process at least: vLLM's engine core may run inside it, with
    # no process of its own), and none of them, nor any process they started, outlived the job
    assert any("ModelStage" in title for title in st["engines"].values()), st
    assert st["engines_after"] == {}, st


def test_the_job_resubmitted_with_its_input_in_the_uploaded_working_dir_resumes_on_s3_and_does_the_rest(job):
    # the input's relative path resolved inside the uploaded copy; its rows are the ones on S3
    st, logs, m = job["stopped"], job["logs"].stdout, job["manifest"]
    assert f"{len(st['done'])} rows already done" in logs, logs[-3000:]
    assert m["status"] == "complete" and [a["status"] for a in m["attempts"]] == ["stopped", "complete"]
    assert m["attempts"][1]["rows_skipped"] == m["rows_skipped"] == len(st["done"])
    ids = sorted([p["id"] for p in job["pairs"]] + [r["id"] for r in job["rejects"]])
    expected = read_instructions(InputConfig(path=str(INPUT), preference=True))
    assert ids == sorted(r["id"] for r in expected.rows)  # every input row exactly once: nothing doubled or lost
    assert st["done"] <= set(ids)


def test_the_workers_scale_back_to_zero_once_idle(head, job):
    assert list(job["between"]) == list(job["before"])  # after the stopped submission
    # last in the module: the tests above ran while the workers idled
    assert list(scaled_down(head)) == list(job["before"])
