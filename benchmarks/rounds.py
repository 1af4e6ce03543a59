"""Benchmark: two on-policy rounds end to end on the embedded model (`prefgen rounds`).

`configs/on_policy.yaml` with its judge moved onto the policy's own model (the shipped judge is a hub
model, not on this offline machine; the policy's base then judges, on the same engine as the adapter it
serves from round 2 on), short answers, and the first few sample instructions. Each round runs
`prefgen run` (an engine start each) and `prefgen train-dpo` on its pairs; round 2 samples round 1's
adapter. Writes the wall time, each round's figures (pairs, mean chosen rating, the policy's mean
rating against the previous round on the prompts rated in both, run and training time, s per DPO
step, losses) and the machine's load to benchmarks/results/rounds.json.

    uv run --extra cpu python benchmarks/rounds.py [--prompts 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import save
from throughput import machine

REPO = Path(__file__).resolve().parent.parent


def bench_config(folder: Path) -> Path:
    """The on-policy preset with the judge on the policy's model and answers kept short."""
    cfg = yaml.safe_load((REPO / "configs" / "on_policy.yaml").read_text())
    del cfg["models"]["judge-model"]
    cfg["models"]["policy"]["engine"] = {"max_model_len": 2048}
    cfg["judge"]["model"] = "policy"
    cfg["generators"][0]["sampling"]["max_tokens"] = 96
    # a 135M judge's verdicts rarely hold in both orders: keep such pairs flagged so every round trains
    cfg["pairing"] |= {"min_margin": 0.5, "allow_truncated_chosen": True, "verification": {"on_fail": "flag"}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="DPO steps per round")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prefgen-rounds-"))
    config = bench_config(work)
    cmd = [sys.executable, "-m", "prefgen.cli", "rounds", str(config), "--rounds", str(args.rounds), "--out",
           str(work / "rounds"), "--limit", str(args.prompts), "--steps", str(args.steps), "--batch-size", "2",
           "--max-length", "384"]
    print(f"[bench] {' '.join(cmd[1:])}", flush=True)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    done = subprocess.run(cmd)
    wall = time.monotonic() - started
    if done.returncode:
        raise SystemExit(f"prefgen rounds failed (rc {done.returncode}); see {work}")
    rounds = json.loads((work / "rounds" / "rounds.json").read_text())
    keep = ("round", "pairs", "rejects", "mean_chosen_rating", "mean_rejected_rating", "policy_prompts_rated",
            "policy_mean_rating", "vs_previous", "run_wall_s", "train_steps", "train_wall_s", "train_s_per_step",
            "train_losses")
    result = {"wall_s": round(wall, 1), "prompts": args.prompts, "rounds": [{k: r[k] for k in keep} for r in rounds],
              "config": yaml.safe_load(config.read_text()),
              "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
              "machine": machine(), "folder": str(work)}
    print(json.dumps({k: result[k] for k in ("wall_s", "rounds", "load_average")}, indent=2))
    print(f"[bench] written to {save('rounds', result)}")


if __name__ == "__main__":
    main()
