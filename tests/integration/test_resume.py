"""Never lose a row, on real processes: a killed engine actor is replaced, then a SIGKILLed
driver resumes (one run covers both, so the engine starts three times, not four); a phased run
killed after its first phase resumes without redoing it (two engines, one at a time). Real Ray and real vLLM (CPU
build) on the small model, a lean pipeline (one generator, the judge without rationales, short
answers) over eight one-row batches so that the kills land mid-run.
"""

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
from support.waiting import wait_for

from prefgen.output.commits import CommitLog
from prefgen.config import InputConfig
from prefgen.input.read import read_instructions
from prefgen.report.summary import RunSummary

pytestmark = pytest.mark.integration

ENGINE = {"max_model_len": 1024, "batch_size": 1, "cpu_kv_cache_gib": 1}
QUESTIONS = [
    "What is a prime number?", "Name a primary colour.", "What does a thermometer measure?",
    "Why do we sleep?", "What is rain?", "How many legs has a spider?", "What is a noun?",
    "What is a volcano?",
]


def config(tmp: Path) -> Path:
    data = tmp / "in.jsonl"
    lines = [json.dumps({"instruction": q}) for q in QUESTIONS] + ['{"instruction": ""}', "not json"]
    data.write_text("\n".join(lines) + "\n")
    cfg = {
        "input": {"path": str(data)},
        "generators": [{"name": "g", "num_completions": 2, "engine": ENGINE,
                        "sampling": {"temperature": 1.0, "max_tokens": 24}}],
        "evolution": {"enabled": False},
        # ratings only (no rationales): the judge's answer is ~20 tokens instead of ~90
        "judge": {"engine": ENGINE, "permutations": 1, "rationales": False,
                  "sampling": {"temperature": 0.0, "max_tokens": 64}},
        "pairing": {"min_margin": 1},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(cfg: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "prefgen.cli", "run", str(cfg), "--output", str(out), *extra],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),  # the log is watched while the run goes on
    )



def committed_ids(out: Path) -> set[str]:
    """The ids the folder's commits name: what a resume will skip (read from the commit log, batch
    commits and segments alike, the one record of it while a run is unfinished)."""
    return {i for c in CommitLog.read(str(out)).commits() for i in c["ids"]}


def read_output(out: Path):
    pairs = [r for f in sorted((out / "pairs").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    rejects = [r for f in sorted((out / "rejects").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return pairs, rejects


def assert_exactly_once(cfg: Path, out: Path):
    expected = read_instructions(InputConfig(**yaml.safe_load(cfg.read_text())["input"]))  # its limit too
    pairs, rejects = read_output(out)
    reject_ids = [r["id"] for r in rejects]
    paired = {p["id"] for p in pairs}
    assert len(reject_ids) == len(set(reject_ids)), "a row was rejected twice"
    assert not paired & set(reject_ids), "a row is both paired and rejected"
    assert len({p["pair_id"] for p in pairs}) == len(pairs), "a pair was written twice"
    assert paired | set(reject_ids) == {r["id"] for r in expected.rows + expected.rejects}
    assert not [p for d in ("pairs", "rejects") for p in (out / d).iterdir() if p.name.startswith(".tmp")]
    return pairs, rejects


def session_processes(session_dir: str) -> list[int]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if session_dir in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def attempt_stats(out: Path, token: str | None = None) -> list[dict]:
    """The engine actors' stats files: one attempt's (its lease token), or every attempt's."""
    where = out / "_stats" / token if token else out / "_stats"
    return [json.loads(f.read_text()) for f in where.rglob("*.json")] if where.exists() else []


def test_killed_engine_actor_then_sigkilled_driver_resume_with_every_row_exactly_once(tmp_path):
    """Both crashes in one run, so the engines start three times instead of four. First an engine
    actor dies mid-run (as by the OOM killer): Ray replaces it, its batches are retried on the new
    actor, the run goes on. Then the driver is SIGKILLed before every row is done: the same command
    resumes, stops the killed run's Ray, and finishes every row exactly once, redoing none."""
    cfg, out = config(tmp_path), tmp_path / "out"
    usable = {r["id"] for r in read_instructions(InputConfig(path=str(tmp_path / "in.jsonl"))).rows}
    first = start(cfg, out, tmp_path / "first.log")
    try:
        def judged(pid_other_than=None):  # one engine serves the generator and the judge: its actors' stats
            return [s for s in attempt_stats(out) if s["roles"]["judge:judge"]["rows"] >= 1 and s["pid"] != pid_other_than]

        [victim] = wait_for(judged, first, 900, "the judge finished a batch")
        os.kill(victim["pid"], signal.SIGKILL)  # the engine actor, not the driver
        # the replacement (Ray restarts the one actor) finishes a batch while the driver lives on ...
        wait_for(lambda: judged(pid_other_than=victim["pid"]), first, 900, "a new engine actor finished a batch")
        # ... and, once some but not all of the model's rows are committed, the driver is SIGKILLed,
        # its Ray left orphaned
        wait_for(lambda: committed_ids(out) & usable, first, 600, "a batch of the model's rows was committed")
        lease = json.loads((out / "_lease.json").read_text())
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    # the killed actor was replaced: one replica, restarted (summed from the killed attempt's stats
    # files as its manifest would have been; the resumed attempt's manifest holds its own engines)
    killed_attempt = attempt_stats(out, lease["token"])
    assert len({a["pid"] for a in killed_attempt}) >= 2  # a second engine actor took over
    first_summary = RunSummary(output=str(out))
    first_summary.add_stage_stats(killed_attempt, list({a["stage"]: list(a["roles"]) for a in killed_attempt}.items()))
    stage = first_summary.stages["SmolLM2-135M-Instruct"]
    assert stage["replicas"] == 1 and stage["restarts"] >= 1  # Ray restarted the one actor: not a second replica
    done_before = committed_ids(out)
    assert 0 < len(done_before) < len(QUESTIONS) + 2 and done_before & usable

    second = subprocess.run(
        [sys.executable, "-m", "prefgen.cli", "run", str(cfg), "--output", str(out)],
        capture_output=True, text=True, timeout=1200,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"{len(done_before)} rows already done" in second.stdout
    assert not session_processes(lease["ray_session_dir"]), "the killed run's Ray processes outlived the resume"

    pairs, rejects = assert_exactly_once(cfg, out)
    assert "worker_failed" not in {r["reason"] for r in rejects}, "the batch was not retried on a new actor"
    every_actor = attempt_stats(out)
    assert sum(a["roles"]["judge:judge"]["rows"] for a in every_actor) >= len(QUESTIONS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["attempts"]) == 2
    assert manifest["attempts"][1]["rows_skipped"] == len(done_before)
    assert manifest["input_rows"] == manifest["paired_rows"] + sum(manifest["rejects"].values()) == len(QUESTIONS) + 2
    # Rows finished before the kill were not redone: the resumed attempt's engines (its own stats
    # files) generated for exactly the rows left, and no token beyond those its commits hold.
    resumed = [json.loads(f.read_text()) for f in (out / "_stats").rglob("*.json") if f.parent.name != lease["token"]]
    assert resumed and all(s["attempt"] != lease["token"] for s in resumed)
    assert sum(s["roles"]["generate:g"]["rows"] for s in resumed) == len(usable - done_before) > 0
    assert sum(rs["output_tokens"] for s in resumed for rs in s["roles"].values()) == manifest["attempt_tokens"] > 0
    assert manifest["roles"]["generate:g"]["rows"] == len(usable - done_before)  # the summary: this attempt's engines
    held = {r["id"]: r["candidates"] for r in pairs + rejects}  # a row's pairs carry the same candidates
    assert manifest["candidates"]["generated"] == sum(c["origin"] == "generated" for cs in held.values() for c in cs)

    changed = yaml.safe_load(cfg.read_text())
    changed["pairing"]["min_margin"] = 2
    cfg.write_text(yaml.safe_dump(changed))
    refused = subprocess.run([sys.executable, "-m", "prefgen.cli", "run", str(cfg), "--output", str(out)],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "another config" in refused.stderr


def phased_config(tmp: Path, limit: int, max_tokens: int = 24) -> Path:
    """A generator and a judge on two engines (another engine seed makes another engine)."""
    cfg_path = config(tmp)
    cfg = yaml.safe_load(cfg_path.read_text())
    engine = dict(ENGINE, batch_size=4)
    cfg["models"] = {"g": {"engine": engine}, "j": {"engine": dict(engine, seed=2)}}
    cfg["generators"][0].update(model="g", engine=None)
    cfg["generators"][0]["sampling"]["max_tokens"] = max_tokens
    cfg["judge"].update(model="j", engine=None)
    cfg["input"]["limit"] = limit
    cfg_path.write_text(yaml.safe_dump(cfg))
    return cfg_path


def stage_stats(out: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in (out / "_stats").rglob("*.json")]


def test_phased_run_killed_in_a_later_phase_resumes_without_redoing_earlier_phases(tmp_path):
    """The one-GPU plan on the CPU: a generator and a judge on two engines, each engine alone.
    SIGKILL once phase 1 (generator g) is done: j's engine was never started beside g's, and the
    resumed attempt reads g's answers back instead of starting g's engine again, then runs j."""
    rows = 2  # one batch per phase (batch_size 4) is all the phases need
    cfg_path, out, log = phased_config(tmp_path, limit=rows, max_tokens=16), tmp_path / "out", tmp_path / "first.log"
    first = start(cfg_path, out, log, "--mode", "phased")
    try:
        wait_for(lambda: "phase 1/2 g (generate:g) done" in log.read_text(), first, 900, "phase 1 was done")
        os.killpg(first.pid, signal.SIGKILL)  # the driver and whatever of its Ray shares its group
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert not committed_ids(out), "the kill came after rows were committed: phase 1 is no longer needed"
    # one model at a time: while g ran, no engine of j was started (streaming would start both)
    assert {s["stage"] for s in stage_stats(out)} == {"g"}
    g_tokens = sum(s["roles"]["generate:g"]["output_tokens"] for s in stage_stats(out) if s["stage"] == "g")
    assert g_tokens > 0
    resumed_at = time.time()

    second = subprocess.run(
        [sys.executable, "-m", "prefgen.cli", "run", str(cfg_path), "--output", str(out), "--mode", "phased",
         "--verbose"],  # the engine actors' own lines ("engine ready") on the console too
        capture_output=True, text=True, timeout=1500,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"phase 1/2 g (generate:g): reused from an earlier attempt, {rows} rows ({rows} still to do)" in second.stdout
    # no engine of g started in the resumed attempt, and g generated nothing there
    assert "j: engine ready" in second.stdout and "g: engine ready" not in second.stdout
    # the pair check runs last on the judge's engine, in the phase that streams into the writer
    assert f"phase 2/2 j (judge:judge, verify:judge): {rows} rows, streamed into the writer" in second.stdout
    started_again = {s["stage"] for s in stage_stats(out) if s["started_at"] >= resumed_at}
    assert started_again == {"j"}

    pairs, rejects = assert_exactly_once(cfg_path, out)
    assert {c["generator"] for r in pairs + rejects for c in r["candidates"]} == {"g"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["attempts"]) == 2 and manifest["input_rows"] == rows
    assert manifest["mode"] == "phased" and manifest["paired_rows"] + sum(manifest["rejects"].values()) == rows
    assert not any((out / "_phases").iterdir()), "intermediate results were not cleaned up"
