"""Benchmark: how much work a resume saves after the driver is SIGKILLed mid-run.

Runs the pipeline once to the end (baseline); then again in a fresh folder, SIGKILLs the driver
once about half the rows are committed, and runs the same command again. Small batches make
commits land one batch at a time, so the kill falls mid-run. Prints and writes: baseline wall
time and tokens, rows and tokens done before the kill, rows skipped by the resume, the resumed
attempt's wall time and tokens, and the time saved against redoing everything.

    uv run --extra cpu python benchmarks/resume.py [--config C.yaml] [--input F] [--limit N]
                                                   [--batch-size 4] [--kill-at 0.5]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from common import INSTRUCTIONS, cli, config_with_batch_size, run_cli, save

from prefgen.output.commits import CommitLog
from prefgen.output.storage import storage


def committed(out: Path) -> list[dict]:
    return CommitLog.read(storage(str(out))).commits()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default: the embedded default)")
    parser.add_argument("--input", default=str(INSTRUCTIONS))
    parser.add_argument("--limit", type=int)
    parser.add_argument("--batch-size", type=int, default=4, help="engine.batch_size of every model")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of rows committed before the kill")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prefgen-resume-"))
    config = config_with_batch_size(args.config, args.batch_size, work)
    base = [str(config), "--input", args.input] + (["--limit", str(args.limit)] if args.limit else [])

    full_wall, full = run_cli(base + ["--output", str(work / "full")], work / "full.log")
    total = full["input_rows"]

    out = work / "killed"
    started = time.monotonic()
    proc = subprocess.Popen(cli(base + ["--output", str(out)]), stdout=(work / "killed.log").open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    while proc.poll() is None:
        if len({i for c in committed(out) for i in c["ids"]}) >= args.kill_at * total:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    killed_after = time.monotonic() - started
    before = committed(out)
    done = len({i for c in before for i in c["ids"]})
    tokens_before = sum(c["output_tokens"] for c in before)
    if done >= total:
        raise SystemExit(f"the run finished before the kill ({done}/{total} rows); lower --batch-size")

    resume_wall, resumed = run_cli(base + ["--output", str(out)], work / "resume.log")
    save("resume", {
        "input": args.input,
        "input_rows": total,
        "batch_size": args.batch_size,
        "baseline_wall_s": round(full_wall, 1),
        "baseline_output_tokens": full["output_tokens"],
        "killed_after_s": round(killed_after, 1),
        "rows_done_before_kill": done,
        "tokens_done_before_kill": tokens_before,
        "rows_skipped_by_resume": resumed["attempts"][-1]["rows_skipped"],
        "resume_wall_s": round(resume_wall, 1),
        "resume_output_tokens": resumed["output_tokens"] - tokens_before,
        "time_saved_vs_rerun_s": round(full_wall - resume_wall, 1),
        "exactly_once": resumed["paired_rows"] + sum(resumed["rejects"].values()) == total,
        "attempts": len(resumed["attempts"]),
    })


if __name__ == "__main__":
    main()
