"""What the test suite takes, whole and per test: the figures of the CI-time budget.

Runs pytest (all tiers, or `-m "not integration"` with --unit) with `--durations=0` in a
subprocess, and writes the wall time, the outcome counts and the slowest tests (setup, call
and teardown apart: a module's shared run shows as its first test's setup) to
`benchmarks/results/ci_time-NAME.json`. `--no-avx512` runs the suite on this machine as on a
CPU without AVX-512 (`benchmarks/slow_cpu/`: torch, oneDNN and vLLM kernels held to AVX2,
float32 weights), an estimate of CI's slower machines, not a measurement of them.

    python benchmarks/ci_time.py --name after
    python benchmarks/ci_time.py --name after-no-avx512 --no-avx512
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLOW_CPU = Path(__file__).resolve().parent / "slow_cpu"
DURATION = re.compile(r"^(\d+\.\d+)s (setup|call|teardown)\s+(\S+)")
OUTCOME = re.compile(r"(\d+) (passed|failed|error|errors|skipped|deselected)")


def no_avx512_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of the emulated CPU without AVX-512 (see slow_cpu/sitecustomize.py)."""
    path = os.pathsep.join(filter(None, [str(SLOW_CPU), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def parse(output: str, slowest: int = 25) -> dict:
    """Outcome counts and the slowest entries of pytest's --durations table."""
    durations = [{"seconds": float(m[1]), "phase": m[2], "test": m[3]}
                 for m in map(DURATION.match, output.splitlines()) if m]
    durations.sort(key=lambda d: -d["seconds"])
    tail = next((line for line in reversed(output.splitlines()) if OUTCOME.search(line) and " in " in line), "")
    counts = {"error" if kind == "errors" else kind: int(n) for n, kind in OUTCOME.findall(tail)}
    return {"outcome": counts, "summary_line": tail.strip("= "), "slowest": durations[:slowest],
            "total_listed_s": round(sum(d["seconds"] for d in durations), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="results file: ci_time-NAME.json")
    parser.add_argument("--unit", action="store_true", help='only the unit tier (-m "not integration")')
    parser.add_argument("--no-avx512", action="store_true", help="emulate a CPU without AVX-512")
    parser.add_argument("pytest_args", nargs="*", help="more arguments for pytest (after --)")
    args = parser.parse_args()
    env = no_avx512_env(dict(os.environ)) if args.no_avx512 else dict(os.environ)
    cmd = [sys.executable, "-m", "pytest", "--durations=0", "-q", *(["-m", "not integration"] if args.unit else []),
           *args.pytest_args]
    print(f"[ci_time] {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    log = Path(tempfile.gettempdir()) / f"ci_time-{args.name}.log"
    log.write_text(done.stdout + done.stderr)
    from common import save
    from throughput import machine

    result = {"machine": machine(), "emulated_no_avx512": args.no_avx512, "command": cmd[1:], "returncode": done.returncode,
              "wall_s": round(wall, 1), **parse(done.stdout)}
    save(f"ci_time-{args.name}", result)
    print(f"[ci_time] log: {log}")
    if done.returncode != 0:
        sys.exit(done.returncode)


if __name__ == "__main__":
    main()
