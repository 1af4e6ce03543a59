"""Shared helpers of the benchmark scripts: run the real CLI in a subprocess, read the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
INSTRUCTIONS = Path(__file__).parent / "data" / "instructions.jsonl"  # 48 varied instructions


def config_with_batch_size(config: str | None, batch_size: int, folder: Path) -> Path:
    """Write the config (default: the embedded default) with every model's engine.batch_size
    set, so that a run commits its rows in several batches; return the new file."""
    import yaml

    from prefgen.config import load_config
    cfg = load_config(config)
    for model in cfg.models.values():
        model.engine.batch_size = batch_size
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path


def bench_config(config: str | None, input_path: str, limit: int | None):
    """The config a benchmark runs: CONFIG (None or `default`: the embedded default) over INPUT, its
    first LIMIT rows if given."""
    from prefgen.config import load_config

    overrides = {"input.path": input_path, **({"input.limit": limit} if limit else {})}
    return load_config(None if config in (None, "default") else config, overrides)


def cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "prefgen.cli", "run", *args]


def run_cli(args: list[str], log: Path) -> tuple[float, dict]:
    """Run `prefgen run ARGS` to the end; return (wall seconds seen from outside, manifest)."""
    started = time.monotonic()
    with log.open("w") as f:
        done = subprocess.run(cli(args), stdout=f, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"prefgen failed (rc {done.returncode}); see {log}")
    out = Path(args[args.index("--output") + 1])
    return wall, json.loads((out / "manifest.json").read_text())


def stage_table(manifest: dict) -> dict:
    return {
        name: {
            "engine_start_s": round(st["engine_start_s"], 1),
            "busy_s": round(st["busy_s"], 1),
            "output_tokens": st["output_tokens"],
            "tokens_per_s": round(st["output_tokens"] / max(st["busy_s"], 1e-9), 1),
        }
        for name, st in manifest["stages"].items()
    }


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    print(json.dumps(data, indent=2))
    print(f"written to {path}")
    return path
