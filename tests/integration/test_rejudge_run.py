"""Re-judging provided responses on real Ray and real vLLM (CPU build), without generating.

A judge-only run through the real CLI over the bundled TRL preference sample (3 rows, one of them
a conversation, 2 provided responses each): `generators: []` and evolution off, so the plan starts
the judge's engine alone and every candidate is a provided response, rated by the judge. Kept
small for CI (one engine, one order, no rationales, short answers): 314 s for the test on the
loaded 2-core machine, of which the run's wall time 284 s, the engine's start 173 s and judging
(3 calls, 85 tokens) 17 s.
"""

import glob
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from prefgen.config import InputConfig
from prefgen.io import SAMPLE_INSTRUCTIONS, read_instructions

pytestmark = pytest.mark.integration

INPUT = SAMPLE_INSTRUCTIONS.parent / "sample_preferences.jsonl"
ENGINE = {"max_model_len": 2048, "batch_size": 4, "cpu_kv_cache_gib": 1}
CONFIG = {
    "input": {"path": str(INPUT), "preference": True},
    "generators": [],
    "evolution": {"enabled": False},
    "judge": {"aspects": ["overall"], "permutations": 1, "rationales": False, "engine": ENGINE,
              "sampling": {"temperature": 0.0, "max_tokens": 48}},
    "pairing": {"min_margin": 1},
}


def test_a_judge_only_run_rates_the_provided_responses(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "prefgen.cli", "run", str(config), "--output", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    plan = [line for line in proc.stdout.splitlines() if "plan:" in line]
    assert any("engines: 1" in line for line in plan), plan
    assert [line.split("roles:")[1].strip() for line in plan if "roles:" in line] == ["judge:judge"]

    pairs = [r for f in sorted(glob.glob(f"{out}/pairs/*.parquet")) for r in pq.read_table(f).to_pylist()]
    rejects = [r for f in sorted(glob.glob(f"{out}/rejects/*.parquet")) for r in pq.read_table(f).to_pylist()]
    expected = read_instructions(InputConfig(path=str(INPUT), preference=True))
    assert {p["id"] for p in pairs} | {r["id"] for r in rejects} == {r["id"] for r in expected.rows}

    provided = {c["candidate_id"]: c for row in expected.rows for c in row["candidates"]}
    by_row = {p["id"]: p["candidates"] for p in pairs} | {r["id"]: r["candidates"] for r in rejects}
    candidates = [c for cands in by_row.values() for c in cands]
    assert sorted(c["candidate_id"] for c in candidates) == sorted(provided)  # the provided ones, no others
    for c in candidates:
        assert (c["origin"], c["text"], c["generator"]) == ("provided", provided[c["candidate_id"]]["text"],
                                                           provided[c["candidate_id"]]["generator"])
        assert [j["judge"] for j in c["judgments"]] == ["judge"]  # rated once, by the real judge
    assert sum(c["rating"] is not None for c in candidates) >= 4, [c["judge_error"] for c in candidates]

    summary = json.loads((out / "manifest.json").read_text())
    assert summary["candidates"]["provided"] == 6 and summary["candidates"]["generated"] == 0
    assert summary["candidates"]["evolved"] == 0
    conversation = next(r for r in expected.rows if len(r["messages"]) > 1)
    for p in pairs:
        if p["id"] == conversation["id"]:
            assert p["prompt"] == conversation["messages"]  # the whole conversation
    print(f"judge-only run: {len(pairs)} pairs, {len(rejects)} rejects; {summary.get('wall_seconds')} s")
