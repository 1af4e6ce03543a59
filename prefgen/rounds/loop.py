"""`prefgen rounds CONFIG --rounds N --out DIR`: on-policy rounds end to end.

Round k writes `DIR/roundk/config.yaml` (the config, its policy generator on round k-1's adapter
from round 2 on: `plan.round_config`), runs `prefgen run` on it into `DIR/roundk/output/`, then
`prefgen train-dpo` on that output into `DIR/roundk/adapter/` (from the adapter the round sampled,
or a fresh one on the base in round 1). Each step is a child process of its own, so every round's
engine and training start clean and leave nothing behind in this one. After each round its figures
(`plan.round_figures`, and the policy's mean rating against the previous round on the prompts rated
in both) are printed and `DIR/rounds.json` is rewritten. Running the same command again resumes:
a round's run resumes or finds itself done, and a round whose adapter is written is not retrained.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from prefgen.config import load_config
from prefgen.dataset.report import read_output, slim
from prefgen.output.files import PAIRS_DIR, REJECTS_DIR
from prefgen.output.storage import storage
from prefgen.rounds.plan import (RoundsError, policy_generator, policy_model, policy_ratings, round_config,
                                 round_figures, sampled_adapter, summary_line, versus_previous)
from prefgen.rounds.train import FIGURES_FILE, TrainSettings

SUMMARY_FILE = "rounds.json"


def _child(args: list[str], what: str) -> float:
    """Run `python -m prefgen.cli ARGS` with this interpreter; its wall time, or RoundsError with its code."""
    started = time.monotonic()
    code = subprocess.run([sys.executable, "-m", "prefgen.cli", *args]).returncode
    if code:
        hint = "it stopped resumable: run the same command again to resume" if code in (3, 4) else "see its message above"
        raise RoundsError(f"{what} exited with code {code}; {hint}", code)
    return time.monotonic() - started


def _rows(output: str, kind: str) -> list[dict]:
    return slim(read_output(storage(output), kind)).to_pylist()


def run_rounds(config_path: str | None, rounds: int, out_dir: str, policy: str | None = None,
               overrides: dict | None = None, settings: TrainSettings = TrainSettings(), log=print) -> list[dict]:
    """Run `rounds` rounds into `out_dir`; returns each round's figures (also in `out_dir`/rounds.json)."""
    if rounds < 1:
        raise RoundsError(f"--rounds {rounds}: at least one round")
    base = load_config(config_path, overrides).model_dump(mode="json")
    generator = policy_generator(base, policy)
    policy_model(base, generator)  # a clear error now if the policy cannot take an adapter
    name = generator["name"]
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary, previous_adapter, previous_ratings = [], None, None
    for k in range(1, rounds + 1):
        folder = out / f"round{k}"
        folder.mkdir(exist_ok=True)
        cfg = round_config(base, k, str(folder), name, previous_adapter)
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        log(f"[prefgen] round {k} of {rounds}: sampling the policy ({name}"
            f"{' on adapter ' + previous_adapter if previous_adapter else ''}) into {folder}/output")
        run_wall = _child(["run", str(folder / "config.yaml")], f"round {k}'s run ({folder}/output)")
        output = cfg["output"]["path"]
        pairs, rejects = _rows(output, PAIRS_DIR), _rows(output, REJECTS_DIR)
        ratings = policy_ratings(pairs + rejects, name)
        entry = {"round": k, "folder": str(folder), "sampled_adapter": sampled_adapter(cfg, name),
                 **round_figures(pairs, rejects, ratings), "vs_previous": versus_previous(ratings, previous_ratings),
                 "run_wall_s": round(run_wall, 1)}
        if not pairs:
            raise RoundsError(f"round {k} gave no pairs ({output}: {len(rejects)} rejects, see its rejects/): "
                              "nothing to train the next adapter on")
        adapter = folder / "adapter"
        if not (adapter / FIGURES_FILE).is_file():
            init = ["--init-adapter", entry["sampled_adapter"]] if entry["sampled_adapter"] else []
            _child(["train-dpo", output, "--adapter-out", str(adapter), "--policy", name, "--overwrite",
                    *init, *settings.flags()], f"round {k}'s training ({adapter})")
        trained = json.loads((adapter / FIGURES_FILE).read_text())
        entry |= {"adapter": str(adapter), "train_steps": trained["steps"], "train_wall_s": trained["wall_s"],
                  "train_s_per_step": trained["s_per_step"], "train_losses": trained["losses"]}
        summary.append(entry)
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        log("[prefgen] " + summary_line(entry))
        previous_adapter, previous_ratings = str(adapter), ratings
    log(f"[prefgen] {rounds} round(s) done; the last adapter: {previous_adapter}; figures in {out / SUMMARY_FILE}")
    return summary
