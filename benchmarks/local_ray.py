"""Benchmark: what a local Ray costs before and beside the engines, with and without its dashboard.

Starts a local Ray as `prefgen run` does (`run/ray_start.init_ray` on the embedded default's
plan), times `ray.init`, then samples the CPU of Ray's processes by kind (`process_cpu.py`) while
they idle for `--idle-s` seconds, as they do beside a working engine; shuts it down and starts
the next. Each setting `--repeats` times, alternating. Prints and writes
benchmarks/results/local_ray.json.

    uv run --extra cpu python benchmarks/local_ray.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import save

ONE_START = """
import json, sys, time
sys.path.insert(0, {bench!r})
from process_cpu import ProcessCpuSampler
from prefgen.config import load_config
from prefgen.roles.plan import plan_stages
from prefgen.run.ray_start import init_ray

cfg = load_config(None, {{"ray.dashboard": {dashboard}}})
sampler = ProcessCpuSampler().start()
started = time.monotonic()
ray, _ = init_ray(cfg, plan_stages(cfg), worker_logs=False)
start_s = time.monotonic() - started
before = sampler.stop()
idle = ProcessCpuSampler().start()
time.sleep({idle_s})
after = idle.stop()
ray.shutdown()
print("RESULT " + json.dumps({{"start_s": start_s, "start_cpu_s": before["cpu_s"], "idle_cpu_s": after["cpu_s"]}}))
"""


def one_start(dashboard: bool, idle_s: float) -> dict:
    """A fresh process per start, so that nothing of one Ray is left in the next one's driver."""
    code = ONE_START.format(bench=str(Path(__file__).parent), dashboard=dashboard, idle_s=idle_s)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=45.0, help="seconds sampled after the start")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"dashboard": [], "no_dashboard": []}
    for i in range(args.repeats):
        for dashboard in (True, False):
            name = "dashboard" if dashboard else "no_dashboard"
            result = one_start(dashboard, args.idle_s)
            runs[name].append(result)
            idle = sum(result["idle_cpu_s"].values())
            print(f"[local_ray] {name} #{i + 1}: ray.init {result['start_s']:.1f} s, idle CPU {idle:.1f} s "
                  f"in {args.idle_s:g} s", flush=True)
            time.sleep(2)
    summary = {
        name: {"start_s_median": round(statistics.median(r["start_s"] for r in rs), 2),
               "idle_cpu_s_per_min_median": round(statistics.median(
                   sum(r["idle_cpu_s"].values()) * 60 / args.idle_s for r in rs), 2)}
        for name, rs in runs.items()
    }
    save("local_ray", {"idle_s": args.idle_s, "repeats": args.repeats, "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
