"""Time and peak memory of input screening (near-duplicates + decontamination) on synthetic rows.

    python benchmarks/screening.py [--rows 100000] [--items 10000] [--ray]

Writes ROWS synthetic instructions (5% one-word edits of an earlier row, 1% with a benchmark
item pasted in) and ITEMS benchmark prompts as JSONL in a temporary folder, then measures, in a
fresh process (so its peak RSS is the screening's, not the data generator's): reading the input,
loading the benchmark, and `screen_input` (in process; with --ray, as the Ray Data stage on a
local Ray: hold the engine lock). Prints the numbers and writes benchmarks/results/screening-ROWS.json.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def words(rng: random.Random, vocab: list[str], low: int, high: int) -> list[str]:
    return rng.choices(vocab, k=rng.randint(low, high))


def generate(folder: Path, rows: int, items: int, seed: int = 0) -> tuple[Path, Path]:
    rng = random.Random(seed)
    vocab = [f"w{rng.getrandbits(40):x}" for _ in range(20_000)]
    bench = [" ".join(words(rng, vocab, 15, 40)) for _ in range(items)]
    bench_path, input_path = folder / "bench.jsonl", folder / "input.jsonl"
    bench_path.write_text("".join(json.dumps({"question": b}) + "\n" for b in bench))
    texts: list[str] = []
    for _ in range(rows):
        roll = rng.random()
        if roll < 0.05 and len(texts) > 10:
            edited = rng.choice(texts).split()
            edited[rng.randrange(len(edited))] = rng.choice(vocab)
            texts.append(" ".join(edited))
        elif roll < 0.06:
            texts.append("Please answer: " + rng.choice(bench))
        else:
            texts.append(" ".join(words(rng, vocab, 10, 40)))
    input_path.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in texts))
    return input_path, bench_path


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(input_path: str, bench_path: str, use_ray: bool) -> dict:
    from prefgen.config import InputConfig
    from prefgen.input.read import read_instructions
    from prefgen.input.screen import prepare, screen_input

    cfg = InputConfig.model_validate({"path": input_path, "decontaminate": [bench_path],
                                      "near_duplicates": {"distributed_above": 1 if use_ray else 10**9}})
    result = {"baseline_peak_mib": round(peak_mib())}
    t0 = time.perf_counter()
    inputs = read_instructions(cfg)
    t1 = time.perf_counter()
    result["read_peak_mib"] = round(peak_mib())
    index = prepare(cfg)
    t2 = time.perf_counter()
    ray = None
    if use_ray:
        import ray

        from prefgen.run.ray_start import keep_local_workers_on_this_interpreter

        keep_local_workers_on_this_interpreter()
        ray.init(address="local", include_dashboard=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    t3 = time.perf_counter()
    usable = len(inputs.rows)
    counts = screen_input(inputs, cfg, index, ray=ray)
    t4 = time.perf_counter()
    if ray is not None:
        ray.shutdown()
    result.update(
        rows=inputs.total, usable_before_screening=usable, benchmark_items=len(index.items),
        benchmark_ngrams=len(index.grams), rejected=counts, path="ray" if use_ray else "in process",
        read_seconds=round(t1 - t0, 2), benchmark_load_seconds=round(t2 - t1, 2),
        screen_seconds=round(t4 - t3, 2), screen_rows_per_second=round(usable / (t4 - t3)),
        peak_rss_mib=round(peak_mib()),
        num_perm=cfg.near_duplicates.num_perm, threshold=cfg.near_duplicates.threshold,
        contamination=cfg.contamination.model_dump(),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--ray", action="store_true", help="screen as the Ray Data stage on a local Ray")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.ray)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        input_path, bench_path = generate(Path(tmp), args.rows, args.items)
        cmd = [sys.executable, __file__, "--measure", str(input_path), str(bench_path)]
        cmd += ["--ray"] if args.ray else []
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    for key, value in result.items():
        print(f"{key:>26}: {value}")
    RESULTS.mkdir(exist_ok=True)
    name = f"screening-{args.rows}{'-ray' if args.ray else ''}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS / name}")


if __name__ == "__main__":
    main()
