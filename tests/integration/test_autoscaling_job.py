"""`ray job submit` onto an autoscaling cluster, as `cluster.yaml` users run prefgen: the head
holds no CPU and no worker is up when the job starts; the plan is made through
`ray.expected_resources` (as `configs/mission.yaml` does), the autoscaler adds the workers the
engines ask for (one logical GPU each, an A10G by type), the job reads its input from S3 and
writes its output there, and the workers go away once idle.

The cluster is Ray's own autoscaler with its fake multi-node provider (`support/autoscaling_head.py`):
real raylets started and stopped by the real autoscaler. The engine is the scripted one
(`support/scripted_run.py`), submitted as the job's entrypoint: this tests the planning,
placement and storage machinery on an autoscaling cluster, never a model (the vLLM job runs in
`test_rejudge_job.py`, on a fixed three-node cluster).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import yaml
from support.autoscaling_head import MAX_WORKERS, start_autoscaling_head
from support.ray_head import _job_info, _ray, _submit

from prefgen.dataset.report import read_output
from prefgen.output.storage import storage

ROWS = 8
# Two replicas of one GPU each: the autoscaler must add both workers (a worker has one GPU).
ENGINE = {"device": "gpu", "accelerator_type": "A10G", "replicas": MAX_WORKERS, "batch_size": 2,
          "batches_in_flight": 1, "cpus_per_replica": 1}
EXPECTED = {"GPU": MAX_WORKERS, "CPU": 2 * MAX_WORKERS, "accelerator_type:A10G": MAX_WORKERS}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_env):
    yield from start_autoscaling_head(tmp_path_factory.mktemp("autoscaling"), extra_env=s3_env)


def scaled_down(cluster, timeout: float = 180) -> dict[str, dict]:
    """The alive nodes once only the head is left (idle workers go after IDLE_TIMEOUT_MIN), or
    whatever is alive when the time runs out."""
    deadline = time.monotonic() + timeout
    while len(nodes := cluster.alive_resources()) > 1 and time.monotonic() < deadline:
        time.sleep(5)
    return nodes


@pytest.fixture(scope="module")
def job(cluster, s3_server):
    before = cluster.alive_resources()
    folder = f"s3://{s3_server.bucket}/autoscaling-{uuid.uuid4().hex[:8]}"
    words = ["rain", "sleep", "volcano", "spider", "noun", "prime", "colour", "tide"]
    storage(folder).put("in.jsonl", "".join(json.dumps({"instruction": f"Explain {w} to a child."}) + "\n"
                                            for w in words[:ROWS]).encode())
    config = {
        "input": {"path": f"{folder}/in.jsonl", "near_duplicates": {"enabled": False}},
        "models": {"m": {"source": "scripted/engine", "engine": ENGINE}},
        "generators": [{"name": "g", "model": "m", "num_completions": 2, "sampling": {"max_tokens": 16}}],
        "evolution": {"enabled": False},
        "judge": {"model": "m", "permutations": 1, "rationales": False, "sampling": {"max_tokens": 32}},
        # the pair check asks for verdicts the scripted engine does not give (test_pipeline_run checks it)
        "pairing": {"verification": {"enabled": False}},
        "ray": {"expected_resources": EXPECTED},
    }
    path = cluster.root / "autoscaling.yaml.run"
    path.write_text(yaml.safe_dump(config))
    out = f"{folder}/out"
    sid = f"prefgen-as-{uuid.uuid4().hex[:8]}"
    proc, wall = _submit(cluster, sid, "0.3", str(path), "--output", out, "--verbose",
                         entrypoint="tests/support/scripted_run.py")
    logs = _ray(cluster.env, "job", "logs", "--address", cluster.address, sid)
    (cluster.root / f"{sid}.txt").write_text(f"wall {wall:.1f} s\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    after = scaled_down(cluster)
    store = storage(out)
    stats = [json.loads(store.read(e.key)) for e in store.list_all("_stats") if e.key.endswith(".json")]
    yield {"before": before, "proc": proc, "info": _job_info(cluster, sid), "logs": logs.stdout, "out": out,
           "manifest": store.read_json("manifest.json"), "stats": stats, "after": after,
           "pairs": read_output(out, "pairs").to_pylist(), "rejects": read_output(out, "rejects").to_pylist()}


def test_the_job_starts_with_no_worker_and_succeeds(job):
    (head,) = job["before"].values()
    assert head.get("CPU", 0) == 0, job["before"]
    assert job["proc"].returncode == 0, job["proc"].stdout[-4000:] + job["proc"].stderr[-4000:]
    assert job["info"]["status"] == "SUCCEEDED" and job["info"]["driver_exit_code"] == 0, job["info"]


def test_the_engines_ran_on_workers_the_autoscaler_added_for_them(job):
    (head,) = job["before"]
    engines = [s for s in job["stats"] if s["stage"] == "m"]
    assert engines and all(s["node"] and s["node"] != head for s in engines), engines
    # two replicas of one GPU each, a worker holding one GPU: two workers, one engine on each
    assert len({s["node"] for s in engines}) == MAX_WORKERS, engines


def test_input_and_output_on_s3_hold_every_row_exactly_once(job):
    m = job["manifest"]
    assert m["status"] == "complete" and m["input_rows"] == ROWS, m
    ids = [r["id"] for r in job["pairs"]] + [r["id"] for r in job["rejects"]]
    assert len(ids) == len(set(ids)) == ROWS
    assert (len(job["pairs"]), len(job["rejects"])) == (m["pairs"], sum(m["rejects"].values()))
    assert m["pairs"] > 0  # the scripted judge rates the candidates apart: rows pair


def test_the_workers_scale_back_to_zero_once_idle(job):
    assert list(job["after"]) == list(job["before"])
