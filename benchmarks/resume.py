"""Benchmark: how much work a resume saves after the driver is SIGKILLed mid-run.

Runs the pipeline once to the end (baseline), then again in a fresh folder, SIGKILLs the
driver once about half the rows are committed, and runs the same command again. Prints and
writes: baseline wall time, rows done before the kill, rows skipped by the resume, the resumed
attempt's wall time, and the time saved against redoing everything.

    uv run --extra cpu python benchmarks/resume.py [--config C.yaml] [--limit N] [--kill-at 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from common import cli, run_cli, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of rows committed before the kill")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prefgen-resume-"))
    base = ([args.config] if args.config else []) + (["--limit", str(args.limit)] if args.limit else [])

    full_wall, full = run_cli(base + ["--output", str(work / "full")], work / "full.log")
    total = full["input_rows"]

    out = work / "killed"
    started = time.monotonic()
    proc = subprocess.Popen(cli(base + ["--output", str(out)]), stdout=(work / "killed.log").open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    done = 0
    while proc.poll() is None:
        commits = [json.loads(p.read_text()) for p in (out / "_commits").glob("*.json")] if (out / "_commits").exists() else []
        done = len({i for c in commits for i in c["ids"]})
        if done >= args.kill_at * total:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    killed_after = time.monotonic() - started

    resume_wall, resumed = run_cli(base + ["--output", str(out)], work / "resume.log")
    skipped = resumed["attempts"][-1]["rows_skipped"]
    save("resume", {
        "input_rows": total,
        "baseline_wall_s": round(full_wall, 1),
        "killed_after_s": round(killed_after, 1),
        "rows_done_before_kill": done,
        "rows_skipped_by_resume": skipped,
        "resume_wall_s": round(resume_wall, 1),
        "time_saved_vs_rerun_s": round(full_wall - resume_wall, 1),
        "exactly_once": resumed["paired_rows"] + sum(resumed["rejects"].values()) == total,
    })


if __name__ == "__main__":
    main()
