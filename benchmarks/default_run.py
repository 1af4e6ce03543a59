"""Benchmark: the first command a new user runs, `prefgen run --overwrite` on the embedded default.

Runs the real CLI once (the embedded default, or CONFIG for a variant of it) on the bundled sample
instructions and writes the figures README quotes for it: wall time seen from outside and the
run's own, engine start, output tokens and tok/s, candidates and how many were cut off at
max_tokens, pairs, rejects by reason, the pair check's counts, judge health's position and length
figures, its warnings and its position findings (warned about or cancelled by the pair check).
Output: benchmarks/results/default_run.json (or default_run-NAME.json with --name).

    uv run --extra cpu python benchmarks/default_run.py [CONFIG.yaml] [--name NAME]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import run_cli, save, stage_table
from prefgen.report.position import position_cancelled, position_findings
from throughput import machine


def summary(wall: float, manifest: dict) -> dict:
    """The default run's headline figures from its manifest."""
    cands = manifest.get("candidates") or {}
    total = (cands.get("generated") or 0) + (cands.get("provided") or 0) + (cands.get("evolved") or 0)
    stages = stage_table(manifest)
    health = manifest.get("health") or {}
    return {
        "wall_s": round(wall, 1),
        "pipeline_wall_s": round(manifest["wall_seconds"], 1),
        "engine_start_s": round(max((s["engine_start_s"] for s in stages.values()), default=0.0), 1),
        "output_tokens": manifest["output_tokens"],
        "tokens_per_s_wall": round(manifest["output_tokens"] / manifest["wall_seconds"], 1),
        "input_rows": manifest["input_rows"],
        "candidates": total,
        "truncated": cands.get("truncated", 0),
        "truncated_share": round(cands.get("truncated", 0) / total, 3) if total else None,
        "pairs": manifest["pairs"],
        "rejects": manifest["rejects"],
        "verification": manifest.get("verification"),
        "position": {k: health.get(k) for k in ("mean_rating_by_position", "first_minus_last", "monotone_calls",
                                                 "permutation_agreement")},
        "health_warnings": manifest.get("health_warnings") or [],
        # every position finding, warned about or not (cancelled for the pairs kept by the pair check)
        "position_findings": [fact for fact, _ in position_findings(health)] if health else [],
        "position_cancelled": position_cancelled(health) if health else False,
        "chosen_longer": health.get("chosen_longer"),
        "length_controlled": health.get("length_controlled"),
        "roles": {name: {k: r.get(k) for k in ("requests", "output_tokens", "busy_s")}
                  for name, r in (manifest.get("roles") or {}).items()},
        "stages": stages,
    }


def length_settings(config: dict) -> dict:
    """What shapes the answers' lengths: each generator's system prompt, template, max_tokens and repetition
    penalty, the evolver's."""
    gens = {g["name"]: {"system_prompt": g["system_prompt"], "template": g.get("template"),
                        "max_tokens": g["sampling"]["max_tokens"],
                        "repetition_penalty": g["sampling"].get("repetition_penalty", 1.0)}
            for g in config.get("generators") or []}
    evolution = config.get("evolution") or {}
    sampling = evolution.get("sampling") or {}
    judge = config.get("judge") or {}
    return {"generators": gens, "evolution_max_tokens": sampling.get("max_tokens"),
            "evolution_repetition_penalty": sampling.get("repetition_penalty", 1.0),
            "evolution_template": evolution.get("template"),
            "judge_permutations": judge.get("permutations"),
            "verification": ((config.get("pairing") or {}).get("verification") or {}).get("enabled")}


def truncation_by_origin(out: Path) -> dict:
    """Candidates and those cut off at max_tokens, per origin (generated, evolved, provided) and
    generator, read from the output's pair and reject rows (each instruction's candidates once)."""
    import pyarrow.parquet as pq

    seen, counts = set(), {}
    for folder in ("pairs", "rejects"):
        for path in sorted((out / folder).glob("*.parquet")):
            for row in pq.read_table(path, columns=["id", "candidates"]).to_pylist():
                if row["id"] in seen:
                    continue
                seen.add(row["id"])
                for c in row["candidates"] or []:
                    key = c["origin"] if c["origin"] != "generated" else f"generated:{c['generator']}"
                    into = counts.setdefault(key, {"candidates": 0, "truncated": 0})
                    into["candidates"] += 1
                    into["truncated"] += bool(c["truncated"])
    return dict(sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="YAML config (default: the embedded default)")
    parser.add_argument("--name", help="results file default_run-NAME.json (default: default_run.json)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prefgen-default-"))
    cmd = ([args.config] if args.config else []) + ["--output", str(work / "out"), "--overwrite"]
    load_before = os.getloadavg()[0]
    print(f"[bench] prefgen run {' '.join(cmd)} (log: {work / 'run.log'})", flush=True)
    wall, manifest = run_cli(cmd, work / "run.log")
    result = {
        "command": "prefgen run --overwrite" + (f" {args.config}" if args.config else ""),
        "machine": machine(),
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        **summary(wall, manifest),
        "truncated_by_origin": truncation_by_origin(work / "out"),
        "length_settings": length_settings(manifest["config"]),
    }
    save(f"default_run-{args.name}" if args.name else "default_run", result)


if __name__ == "__main__":
    main()
