"""A run on a real three-node Ray cluster (the session's `ray_cluster` rig) with a scripted
engine (`scripted_run.py`: the machinery, not a model): the node holding the engine actor is
killed while batches are in flight, and the run finishes on the node left with every row exactly
once, each batch written (its commit says) on a worker node; a local output path is refused on a
cluster unless it is a shared mount; an engine no node can hold stops the run within
`ray.placement_timeout_s`; rows lost past the retries are `worker_failed` and redone by the
same command run again (SIGKILLed, then resumed from S3 on another node count).

The nodes are one machine, so a local output folder is in fact shared by all of them: the
config says so (`output.shared_mount: true`), as it would for NFS. The last test writes to the
session's S3 server instead. The helpers below read an output folder through prefgen's storage
object, so the same assertions hold on disk and on S3.
"""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from support.paths import REPO
from support.waiting import wait_for

from prefgen.output.commits import CommitLog
from prefgen.output.storage import storage

pytestmark = pytest.mark.integration

DRIVER = REPO / "tests" / "support" / "scripted_run.py"
ROWS = 12
ENGINE = {"batch_size": 2, "batches_in_flight": 1, "device": "cpu", "cpus_per_replica": 1}


def write_config(tmp: Path, out: Path | str, *, shared_mount: bool = True, engine: dict | None = None,
                 ray: dict | None = None) -> Path:
    data = tmp / "in.jsonl"
    words = ["rain", "sleep", "volcano", "spider", "noun", "prime", "colour", "thermometer", "tide", "moss",
             "comet", "glacier", "lichen", "quartz"]
    data.write_text("".join(json.dumps({"instruction": f"Explain {w} to a child."}) + "\n" for w in words[:ROWS]))
    cfg = {
        "input": {"path": str(data), "near_duplicates": {"enabled": False}},
        "models": {"m": {"source": "scripted/engine", "engine": dict(ENGINE, **(engine or {}))}},
        "generators": [{"name": "g", "model": "m", "num_completions": 2, "sampling": {"max_tokens": 16}}],
        "evolution": {"enabled": False},
        "judge": {"model": "m", "permutations": 1, "rationales": False, "sampling": {"max_tokens": 32}},
        "output": {"path": str(out), "shared_mount": shared_mount},
        "ray": {"max_batch_retries": 2, **(ray or {})},
    }
    path = tmp / f"config-{len(list(tmp.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(rig, cfg: Path, log: Path, seconds: float, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(DRIVER), str(seconds), str(cfg), "--verbose", *extra],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **rig.env))


def stats(out: Path | str) -> list[dict]:
    store = storage(str(out))
    return [json.loads(store.read(e.key)) for e in store.list_all("_stats") if e.key.endswith(".json")]


def committed(out: Path | str) -> list[dict]:
    store = storage(str(out))
    return CommitLog.read(store).commits() if store.list_all("_commits") else []


def done_ids(out: Path | str) -> set[str]:
    """The rows a rerun skips: committed, and not rejected for a fault."""
    return {i for c in committed(out) if not c.get("fault") for i in c["ids"]}


def read_rows(out: Path | str, kind: str) -> list[dict]:
    """Every row in the folder's Parquet files of `kind`, committed or not: a trainer loading
    `pairs/*.parquet` sees them all, so a stray shard would count as a doubled row."""
    store = storage(str(out))
    files = [e.key for e in store.list_all(kind) if e.key.endswith(".parquet")]
    return [r for key in files for r in pq.read_table(io.BytesIO(store.read(key))).to_pylist()]


def read_manifest(out: Path | str) -> dict:
    return storage(str(out)).read_json("manifest.json")


def test_the_engines_node_is_lost_mid_run_and_the_run_finishes_on_the_node_left(ray_cluster, tmp_path):
    rig, out, log = ray_cluster, tmp_path / "out", tmp_path / "run.log"
    rig.restore()
    cfg = write_config(tmp_path, out)
    started = time.monotonic()
    run = start(rig, cfg, log, 0.5)
    try:
        wait_for(lambda: committed(out), run, 120, "a first batch was committed", log)
        [engine] = [s for s in stats(out) if s["ready"]]
        lost = rig.name_of(engine["node"])
        assert lost in ("a", "b"), f"the engine ran on {engine['node']}, not on a worker node"
        done_before = {i for c in committed(out) for i in c["ids"]}
        assert len(done_before) < ROWS, "every row was done before the node went"
        rig.remove_worker(lost)
        run.wait(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    elapsed = time.monotonic() - started
    print(f"\n[node loss] run took {elapsed:.1f} s; log:\n{log.read_text()[-2500:]}")
    assert run.returncode == 0, log.read_text()[-3000:]
    left = {"a", "b"} - {lost}
    after = [s for s in stats(out) if s["ready"] and s["node"] != engine["node"]]
    assert after and {rig.name_of(s["node"]) for s in after} == left, "no engine started on the node left"
    # the writer is a Ray task too (the head holds no CPU): each batch's commit names its node
    written = [c for c in committed(out) if "node" in c]  # the driver writes only a lost batch's rejects
    assert {c["node"] for c in written} <= {engine["node"], *(rig.workers[n].node_id for n in left)}, written
    assert left <= {rig.name_of(c["node"]) for c in written}, "no batch was written on the node left"
    pairs, rejects = read_rows(out, "pairs"), read_rows(out, "rejects")
    ids = [p["id"] for p in pairs] + [r["id"] for r in rejects]
    assert len(ids) == len(set(ids)) == ROWS, "a row is missing or doubled"
    assert "worker_failed" not in {r["reason"] for r in rejects}, [r["detail"] for r in rejects]
    manifest = read_manifest(out)
    assert manifest["status"] == "complete"
    assert manifest["input_rows"] == manifest["paired_rows"] + sum(manifest["rejects"].values()) == ROWS


def run_to_end(rig, cfg: Path, log: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), "0.2", str(cfg)], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1", **rig.env))


def test_a_local_output_path_or_a_replica_no_node_holds_is_refused_before_any_engine_starts(ray_cluster, tmp_path):
    """On three nodes a local path not declared a shared mount is refused (exit 2, naming
    output.path); so is a replica of 3 CPUs on nodes of 2 (the cluster has 4 in all)."""
    rig = ray_cluster
    rig.restore()
    out = tmp_path / "out"
    refused = run_to_end(rig, write_config(tmp_path, out, shared_mount=False), tmp_path / "local.log")
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert f"output.path {out} is a local path and the run is on a cluster of 3 nodes" in refused.stderr
    assert "output.shared_mount: true" in refused.stderr
    assert not stats(out), "an engine started"
    too_big = run_to_end(rig, write_config(tmp_path, tmp_path / "big", engine={"cpus_per_replica": 3}),
                         tmp_path / "big.log")
    assert too_big.returncode == 2, too_big.stdout[-2000:] + too_big.stderr[-2000:]
    assert "one replica needs CPU 3 on one node" in too_big.stderr
    assert "CPU: needs 3 on one node, the most any node has is 2" in too_big.stderr
    assert not stats(tmp_path / "big")


def test_an_engine_no_node_can_hold_stops_the_run_within_the_placement_timeout(ray_cluster, tmp_path):
    """Planned for a GPU the autoscaler was expected to add (`ray.expected_resources`) and that
    never comes: Ray would keep the actor pending and Ray Data wait for ever; the run stops after
    `ray.placement_timeout_s` with exit 3, naming the GPU, and the folder resumes."""
    rig = ray_cluster
    rig.restore()
    out = tmp_path / "out"
    cfg = write_config(tmp_path, out, engine={"device": "gpu"},
                       ray={"expected_resources": {"GPU": 1}, "placement_timeout_s": 5})
    started = time.monotonic()
    stopped = run_to_end(rig, cfg, tmp_path / "run.log", timeout=180)
    took = time.monotonic() - started
    assert stopped.returncode == 3, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert "ray.placement_timeout_s=5 s" in stopped.stderr
    assert "engine stage m (generate:g, judge:judge, verify:judge)" in stopped.stderr  # the pair check on the judge's engine
    assert "GPU: needs 1 on one node, the most any node has is 0" in stopped.stderr
    assert "rerun the same command to resume" in stopped.stderr
    assert not stats(out)
    manifest = read_manifest(out)
    assert manifest["status"] == "failed" and "PlacementTimeout" in manifest["attempts"][-1]["error"]
    print(f"\n[placement timeout] exit 3 after {took:.1f} s")


def test_rows_lost_past_the_retries_are_worker_failed_and_a_rerun_of_the_same_command_redoes_them(
        ray_cluster, s3, tmp_path):
    """Output on the loopback S3 server. With `ray.max_batch_retries: 0` the lost node's batches are
    `worker_failed`. The same command run again on the two nodes left redoes those rows, and is
    SIGKILLed once it committed some; run once more on three nodes it resumes from S3 and finishes:
    every row once, no reject for a fault left."""
    rig, out, log = ray_cluster, s3, tmp_path / "run.log"
    rig.restore()
    cfg = write_config(tmp_path, out, shared_mount=False, ray={"max_batch_retries": 0})
    run = start(rig, cfg, log, 0.5)
    try:
        wait_for(lambda: committed(out), run, 120, "a first batch was committed", log)
        [engine] = [s for s in stats(out) if s["ready"]]
        rig.remove_worker(rig.name_of(engine["node"]))
        run.wait(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, log.read_text()[-3000:]
    lost = {r["id"] for r in read_rows(out, "rejects") if r["reason"] == "worker_failed"}
    assert lost, "no batch was lost: the node went too late"
    done_before = {i for c in committed(out) for i in c["ids"]} - lost
    rerun_log = tmp_path / "rerun.log"
    # on the two nodes left; slower per call (3 per batch), so that a batch is committed seconds
    # before the next one and the poll (a listing and reads on S3) sees it with the run still going
    rerun = start(rig, cfg, rerun_log, 2.0)
    try:
        wait_for(lambda: done_ids(out) & lost, rerun, 120, "the rerun committed a batch of the lost rows", rerun_log)
        os.kill(rerun.pid, signal.SIGKILL)  # the driver; Ray ends its job's actors
        rerun.wait()
    finally:
        if rerun.poll() is None:
            rerun.kill()
    assert f"{len(lost)} rows rejected for a fault (worker_failed) to redo" in rerun_log.read_text()
    redone = done_ids(out) & lost
    assert redone < lost, "the rerun finished before it was killed"
    rig.restore()  # three nodes again
    resumed = run_to_end(rig, cfg, tmp_path / "resumed.log")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"{len(done_before | redone)} rows already done" in resumed.stdout
    pairs, rejects = read_rows(out, "pairs"), read_rows(out, "rejects")
    ids = [p["id"] for p in pairs] + [r["id"] for r in rejects]
    assert len(ids) == len(set(ids)) == ROWS and not {r["reason"] for r in rejects} & {"worker_failed"}
    manifest = read_manifest(out)
    assert manifest["status"] == "complete" and len(manifest["attempts"]) == 3
    assert manifest["input_rows"] == manifest["paired_rows"] + sum(manifest["rejects"].values()) == ROWS
