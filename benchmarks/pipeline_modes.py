"""Benchmark: the same pipeline and input in streaming mode and in phased mode.

Streaming keeps every stage's engine alive at once; phased runs one stage at a time (the
one-GPU plan) and materialises results in between. Prints and writes, per mode: wall time,
tokens generated and tokens/s over the wall time, and per stage engine start, busy time and
tokens/s. Default: the embedded default config over benchmarks/data/instructions.jsonl (48).

    uv run --extra cpu python benchmarks/pipeline_modes.py [--config C.yaml] [--input F] [--limit N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import INSTRUCTIONS, run_cli, save, stage_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default: the embedded default)")
    parser.add_argument("--input", default=str(INSTRUCTIONS), help="instructions file")
    parser.add_argument("--limit", type=int, help="first N instructions only")
    parser.add_argument("--modes", default="streaming,phased")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prefgen-bench-"))
    results = {"config": args.config or "embedded default", "input": args.input, "limit": args.limit, "modes": {}}
    for mode in args.modes.split(","):
        cmd = ([args.config] if args.config else []) + ["--input", args.input, "--output", str(work / mode),
                                                         "--mode", mode, "--overwrite"]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        wall, manifest = run_cli(cmd, work / f"{mode}.log")
        results["modes"][mode] = {
            "wall_s": round(wall, 1),
            "pipeline_wall_s": round(manifest["wall_seconds"], 1),
            "input_rows": manifest["input_rows"],
            "pairs": manifest["pairs"],
            "rejects": manifest["rejects"],
            "output_tokens": manifest["output_tokens"],
            "tokens_per_s_wall": round(manifest["output_tokens"] / manifest["wall_seconds"], 1),
            "stages": stage_table(manifest),
        }
        print(f"{mode}: {wall:.1f} s, {manifest['output_tokens']} tokens", flush=True)
    modes = results["modes"]
    if {"streaming", "phased"} <= set(modes):
        results["phased_over_streaming_wall"] = round(modes["phased"]["wall_s"] / modes["streaming"]["wall_s"], 2)
    save("pipeline_modes", results)


if __name__ == "__main__":
    main()
