"""Never lose a row, on real processes, in one phased run (the one-GPU plan on the CPU: a generator
g and a judge j on two engines, each engine alone). Phase 1 (g) writes its answers; in phase 2,
which streams into the writer, j's engine actor is killed mid-run (as by the OOM killer): Ray
replaces it and its batches are retried on the new actor. Once the new actor has finished a
batch, the driver is SIGKILLed before every row is done, its Ray left orphaned. The same command
resumes: it stops the killed run's Ray, skips the committed rows (the bad input rows, and any
batch of phase 2 committed before the kill), reads g's answers back for the rows left instead of
starting g's engine again, and finishes every row exactly once with j. Four engine starts (g, j,
j's replacement, j resumed) where the two scenarios this replaces took five. Real Ray and real
vLLM (CPU build) on the small model, a lean pipeline (one generator, the judge without
rationales, short answers); the judge's batches are one row each, one at a time, so that the
kills land mid-phase.
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
from prefgen.output.storage import storage

pytestmark = pytest.mark.integration

ENGINE = {"max_model_len": 1024, "batch_size": 1, "cpu_kv_cache_gib": 1}
QUESTIONS = [
    "What is a prime number?", "Name a primary colour.", "What does a thermometer measure?",
    "Why do we sleep?", "What is rain?", "How many legs has a spider?", "What is a noun?",
    "What is a volcano?",
]


def config(tmp: Path) -> Path:
    """g on one engine (two batches of four), j on another (another engine seed makes another
    engine; one-row batches)."""
    data = tmp / "in.jsonl"
    lines = [json.dumps({"instruction": q}) for q in QUESTIONS] + ['{"instruction": ""}', "not json"]
    data.write_text("\n".join(lines) + "\n")
    cfg = {
        "input": {"path": str(data)},
        "models": {"g": {"engine": dict(ENGINE, batch_size=4)}, "j": {"engine": dict(ENGINE, seed=2, batches_in_flight=1)}},
        "generators": [{"name": "g", "model": "g", "num_completions": 2,
                        "sampling": {"temperature": 1.0, "max_tokens": 16}}],
        "evolution": {"enabled": False},
        # ratings only (no rationales): the judge's answer is ~20 tokens instead of ~90
        "judge": {"model": "j", "permutations": 1, "rationales": False,
                  "sampling": {"temperature": 0.0, "max_tokens": 64}},
        "pairing": {"min_margin": 1},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(cfg: Path, out: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "prefgen.cli", "run", str(cfg), "--output", str(out), "--mode", "phased"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),  # the log is watched while the run goes on
    )


def committed_ids(out: Path) -> set[str]:
    """The ids the folder's commits name: what a resume will skip (read from the commit log, batch
    commits and segments alike, the one record of it while a run is unfinished)."""
    return {i for c in CommitLog.read(storage(str(out))).commits() for i in c["ids"]}


def read_output(out: Path):
    pairs = [r for f in sorted((out / "pairs").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    rejects = [r for f in sorted((out / "rejects").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return pairs, rejects


def assert_exactly_once(cfg: Path, out: Path):
    expected = read_instructions(InputConfig(**yaml.safe_load(cfg.read_text())["input"]))
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


def test_a_phased_run_with_a_killed_engine_actor_then_a_sigkilled_driver_resumes_every_row_exactly_once(tmp_path):
    cfg, out, log = config(tmp_path), tmp_path / "out", tmp_path / "first.log"
    usable = {r["id"] for r in read_instructions(InputConfig(path=str(tmp_path / "in.jsonl"))).rows}
    first = start(cfg, out, log)
    try:
        def judged(pid_other_than=None):  # j's engine actors that finished a batch
            return [s for s in attempt_stats(out) if s["stage"] == "j" and s["roles"]["judge:judge"]["rows"] >= 1
                    and s["pid"] != pid_other_than]

        [victim] = wait_for(judged, first, 900, "the judge finished a batch", log)
        assert "phase 1/2 g (generate:g) done" in log.read_text()
        os.kill(victim["pid"], signal.SIGKILL)  # the engine actor, not the driver
        # the replacement (Ray restarts the one actor) finishes a batch while the driver lives on ...
        wait_for(lambda: judged(pid_other_than=victim["pid"]), first, 900, "a new engine actor finished a batch", log)
        # ... and the driver is SIGKILLed, its Ray left orphaned
        lease = json.loads((out / "_lease.json").read_text())
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    killed_attempt = attempt_stats(out, lease["token"])
    # one model at a time: j's engine started only once g's last batch was done (streaming starts both)
    g_stats = [s for s in killed_attempt if s["stage"] == "g"]
    j_stats = [s for s in killed_attempt if s["stage"] == "j"]
    assert g_stats and sum(s["roles"]["generate:g"]["output_tokens"] for s in g_stats) > 0
    assert min(s["started_at"] for s in j_stats) > max(s["last_batch_at"] or 0 for s in g_stats) > 0
    # the killed actor was replaced: one replica, restarted (summed from the killed attempt's stats
    # files as its manifest would have been; the resumed attempt's manifest holds its own engines)
    assert len({a["pid"] for a in j_stats}) >= 2  # a second engine actor took over
    first_summary = RunSummary(output=str(out))
    first_summary.add_stage_stats(killed_attempt, list({a["stage"]: list(a["roles"]) for a in killed_attempt}.items()))
    stage = first_summary.stages["j"]
    assert stage["replicas"] == 1 and stage["restarts"] >= 1  # Ray restarted the one actor: not a second replica
    done_before = committed_ids(out)
    assert 0 < len(done_before) < len(QUESTIONS) + 2  # the bad input rows at least, committed first
    left = usable - done_before
    assert left, "every row was committed before the driver was killed"
    resumed_at = time.time()

    second = subprocess.run(
        [sys.executable, "-m", "prefgen.cli", "run", str(cfg), "--output", str(out), "--mode", "phased",
         "--verbose"],  # the engine actors' own lines ("engine ready") on the console too
        capture_output=True, text=True, timeout=1200,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"{len(done_before)} rows already done" in second.stdout
    assert not session_processes(lease["ray_session_dir"]), "the killed run's Ray processes outlived the resume"
    # g's answers read back for the rows left (phase 2 had committed some): no engine of g started
    assert (f"phase 1/2 g (generate:g): reused from an earlier attempt, {len(usable)} rows ({len(left)} still to do)"
            in second.stdout), second.stdout
    assert "j: engine ready" in second.stdout and "g: engine ready" not in second.stdout
    # the pair check runs last on the judge's engine, in the phase that streams into the writer
    assert f"phase 2/2 j (judge:judge, verify:judge): {len(left)} rows, streamed into the writer" in second.stdout
    resumed = [s for s in attempt_stats(out) if s["attempt"] != lease["token"]]
    assert resumed and {s["stage"] for s in resumed} == {"j"}
    assert {s["stage"] for s in attempt_stats(out) if s["started_at"] >= resumed_at} == {"j"}

    pairs, rejects = assert_exactly_once(cfg, out)
    assert "worker_failed" not in {r["reason"] for r in rejects}, "the batch was not retried on a new actor"
    assert {c["generator"] for r in pairs + rejects for c in r["candidates"]} == {"g"}
    assert sum(a["roles"]["judge:judge"]["rows"] for a in attempt_stats(out) if a["stage"] == "j") >= len(QUESTIONS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["attempts"]) == 2 and manifest["mode"] == "phased"
    assert manifest["attempts"][1]["rows_skipped"] == len(done_before)
    assert manifest["input_rows"] == manifest["paired_rows"] + sum(manifest["rejects"].values()) == len(QUESTIONS) + 2
    # Rows finished before the kill were not redone: the resumed attempt's engine (its own stats
    # files) judged exactly the rows left, and the summary's engine figures are its own. (The
    # commits' `attempt_tokens` also count g's tokens, carried by the rows read back from phase 1.)
    assert sum(s["roles"]["judge:judge"]["rows"] for s in resumed) == len(left)
    resumed_tokens = sum(rs["output_tokens"] for s in resumed for rs in s["roles"].values())
    assert resumed_tokens == sum(r["output_tokens"] for r in manifest["roles"].values()) > 0
    assert manifest["attempt_tokens"] >= resumed_tokens
    assert manifest["roles"]["judge:judge"]["rows"] == len(left)  # the summary: this attempt's engines
    held = {r["id"]: r["candidates"] for r in pairs + rejects}  # a row's pairs carry the same candidates
    assert manifest["candidates"]["generated"] == sum(c["origin"] == "generated" for cs in held.values() for c in cs)
    assert not any((out / "_phases").iterdir()), "intermediate results were not cleaned up"

    changed = yaml.safe_load(cfg.read_text())
    changed["pairing"]["min_margin"] = 2
    cfg.write_text(yaml.safe_dump(changed))
    refused = subprocess.run([sys.executable, "-m", "prefgen.cli", "run", str(cfg), "--output", str(out)],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "another config" in refused.stderr
