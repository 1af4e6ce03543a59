"""Benchmark: the driver's bookkeeping at scale, with the engine stages replaced by a pass-through task.

Generates a synthetic JSONL input (default 1,000,000 rows, a few of them empty or malformed
so that validation has work) and 10,000 benchmark items, then runs the driver's side
of a run in this process: reading and validation (`io.read_instructions`), near-duplicate
removal and decontamination (a hook: see `dedup_and_decontaminate`), opening the output, a
PASS-THROUGH task instead of the engine stages (each row becomes one synthetic pair, every 20th a
reject; no Ray, no engine), written in batches of 1,000 rows through the real writer and commit
path (`writer.write_rows`, `writer.commit_reports`, `RunState.commit`), finishing the run, and a
resume of the finished folder (`RunState.open` again). The storage object counts every request
by kind (PUT, GET, LIST, DELETE, COPY, HEAD, with bytes; `prefgen.output.storage.Requests`).
Prints and writes: driver peak memory, seconds and requests per phase, requests per committed
batch, and how many objects the resume listed and read, `_commits/` apart.

With `--s3` the output goes to an S3 API server on loopback (moto, a dev dependency, started in
this process: `AWS_ENDPOINT_URL` and dummy credentials set as a user would) instead of local disk.

    python benchmarks/bookkeeping.py [--rows 1000000] [--batch-rows 1000] [--items 10000] [--out NAME]
                                     [--commit-only]   # no shards: the commit log of small batches
                                     [--s3]            # output on a loopback S3 server
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from common import save

from prefgen.config import InputConfig
from prefgen.input.read import read_instructions
from prefgen.output.storage import Requests, storage
from prefgen.report.summary import RunSummary, batch_counts
from prefgen.output.commits import COMMITS_DIR
from prefgen.output.manifest import input_digest
from prefgen.output.runstate import RunState, batch_key
from prefgen.schema import REJECT_MARGIN, reject_row
from prefgen.output.writer import commit_reports, write_rows

WORDS = ("explain write list compare describe summarise translate why how what the a of python river "
         "history energy proof poem recipe budget graph network planet market theorem").split()
PASS_THROUGH = "pass-through benchmark task: no engine ran"


def make_input(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` JSONL lines of distinct instructions, except every 500th empty and every 700th malformed
    JSON (3,143 rejects in a million); every 900th is a short one."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for n in range(1, rows + 1):
            if n % 500 == 0:
                f.write('{"instruction": "   "}\n')
            elif n % 700 == 0:
                f.write('{"instruction": \n')
            elif n % 900 == 0:
                f.write(json.dumps({"instruction": f"instruction number {n - 1} "}) + "\n")
            else:
                text = f"instruction number {n} " + " ".join(rng.choices(WORDS, k=12))
                f.write(json.dumps({"instruction": text}) + "\n")


def make_items(path: Path, count: int, seed: int = 1) -> None:
    """`count` benchmark items, as JSONL with a `prompt` field."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(count):
            f.write(json.dumps({"prompt": f"benchmark item {i}: " + " ".join(rng.choices(WORDS, k=15))}) + "\n")


def dedup_and_decontaminate(inputs, source: Path, items: Path) -> tuple[int, str]:
    """Near-duplicate removal and decontamination against the items, in place: (rows rejected, note).

    HOOK: runs `prefgen.input.screen` (the `dedup` branch: input/near_duplicates.py, input/decontaminate.py) in
    process, if this tree has it; otherwise a no-op that says so in the note."""
    try:
        from prefgen.input.screen import prepare, screen_input
    except ModuleNotFoundError as exc:
        if exc.name != "prefgen.input.screen":
            raise  # the module is there but broken: say so, do not pass for "not run"
        return 0, "NOT RUN: prefgen.input.screen (input/near_duplicates.py, input/decontaminate.py) is not in this tree"
    cfg = InputConfig(path=str(source), decontaminate=[{"path": str(items)}])
    counts = screen_input(inputs, cfg, prepare(cfg))
    return sum(counts.values()), f"prefgen.input.screen in process, defaults: {counts}"


def pass_through(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The stand-in for the engine stages: one synthetic pair per row, every 20th row a reject."""
    pairs, rejects = [], []
    for r in rows:
        if r["line"] % 20 == 0:
            rejects.append(reject_row(r, REJECT_MARGIN, PASS_THROUGH))
            continue
        prompt = [{"role": "user", "content": r["instruction"]}]
        pairs.append({"id": r["id"], "pair_id": f"{r['id']}/0", "prompt": prompt,
                      "chosen": [{"role": "assistant", "content": "a synthetic chosen answer"}],
                      "rejected": [{"role": "assistant", "content": "a synthetic rejected answer"}],
                      "chosen_rating": 9.0, "rejected_rating": 3.0, "chosen_model": "pass-through",
                      "rejected_model": "pass-through", "chosen_candidate_id": f"{r['id']}/a/0",
                      "rejected_candidate_id": f"{r['id']}/b/0", "candidates": [], "source": r["source"],
                      "line": r["line"]})
    return pairs, rejects


def peak_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # Linux: KiB


def start_s3() -> tuple[object, str]:
    """An S3 API server on loopback with a bucket; the environment points at it. (server, folder URI)"""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    boto3.client("s3").create_bucket(Bucket="prefs-bucket")
    return server, f"s3://prefs-bucket/bookkeeping-{uuid.uuid4().hex[:8]}"


def resume_figures(requests: Requests, out: str, exactly_once: bool) -> dict:
    """What opening the output cost: requests by kind, objects read, `_commits/` apart."""
    calls = requests.calls
    total = sum(calls.values())
    return {
        "requests": requests.snapshot()["requests"],
        "objects_listed": requests.listed,
        "objects_read": calls["GET"],
        "commit_objects_read": requests.in_folder("GET", f"{out}/{COMMITS_DIR}"),
        "listings_of_shard_folders": sum(requests.in_folder("LIST", f"{out}/{kind}") for kind in ("pairs", "rejects")),
        "requests_to_open": total,
        "seconds_at_20ms_per_request": round(0.02 * total, 1),
        "exactly_once": exactly_once,
    }


def per_batch(figures: dict, batches: int) -> dict:
    """Requests by kind per committed batch, and `all` of them (the target: at most 3 while writing)."""
    kinds = {kind: round(n / max(batches, 1), 2) for kind, n in figures["requests"].items()}
    return kinds | {"all": round(sum(figures["requests"].values()) / max(batches, 1), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--out", default="bookkeeping", help="results file name (without .json)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--commit-only", action="store_true",
                        help="commit each batch without writing its shards: the commit log alone (small batches)")
    parser.add_argument("--s3", action="store_true", help="output on an S3 API server on loopback (moto)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prefgen-bookkeeping-"))
    server, out = start_s3() if args.s3 else (None, str(work / "out"))
    source = work / "instructions.jsonl"
    phases: dict[str, dict] = {}
    requests = storage(out).requests

    def phase(name: str, started: float, **extra) -> None:
        phases[name] = {"seconds": round(time.monotonic() - started, 2), "driver_peak_gib_so_far": peak_gib(),
                        **requests.snapshot(), **extra}
        requests.reset()
        print(f"[bookkeeping] {name}: {phases[name]}", flush=True)

    t = time.monotonic()
    make_input(source, args.rows)
    items = work / "benchmark_items.jsonl"
    make_items(items, args.items)
    phase("generate_input", t, mib=round(source.stat().st_size / 2**20, 1))

    t = time.monotonic()
    inputs = read_instructions(InputConfig(path=str(source)))
    phase("read_validate", t, usable=len(inputs.rows), rejected=len(inputs.rejects))

    t = time.monotonic()
    screened, note = dedup_and_decontaminate(inputs, source, items)
    phase("dedup_decontaminate", t, note=note, rejected=screened)

    t = time.monotonic()
    all_ids = sorted(r["id"] for r in inputs.rows + inputs.rejects)
    digest = input_digest(all_ids)
    del all_ids
    output = storage(out)
    state = RunState(output)
    state.open({"benchmark": "bookkeeping"}, "bench", digest, overwrite=False, log=print)
    todo = [r for r in inputs.rows if r["id"] not in state.done_ids]
    phase("open", t)

    t = time.monotonic()
    state.commit(write_rows(output, state.token, inputs.rejects, [], inputs.rejects, tag="input"))

    token = state.token

    def reports():
        for i in range(0, len(todo), args.batch_rows):
            batch = todo[i:i + args.batch_rows]
            pairs, rejects = pass_through(batch)
            if args.commit_only:
                yield batch_counts(batch_key([r["id"] for r in batch]), batch, pairs, rejects)
            else:
                yield write_rows(output, token, batch, pairs, rejects)

    commit_reports(state, reports(), todo, 0, log=print)
    batches = len(state.commits)
    writing = requests.snapshot()
    phase("write_commit", t, batches=batches, requests_per_batch=per_batch(writing, batches), note=PASS_THROUGH)

    del state  # the driver "dies" with every row committed, before it finishes
    t = time.monotonic()
    state = RunState(output)
    state.open({"benchmark": "bookkeeping"}, "bench", digest, overwrite=False, log=print)
    unfinished = resume_figures(requests, out, len(state.done_ids) == inputs.total)
    phase("resume_unfinished", t, rows_done=len(state.done_ids))

    t = time.monotonic()
    summary = RunSummary(output=out, input_rows=inputs.total, config_digest="bench")
    for commit in state.commits:
        summary.add(commit)
    assert summary.done_rows == inputs.total, (summary.done_rows, inputs.total)
    state.finish(asdict(summary))
    finishing = requests.snapshot()
    phase("finish", t, pairs=summary.pairs, rejected=summary.rejected_rows,
          requests_per_batch=per_batch(finishing, batches))
    del state, summary

    t = time.monotonic()
    resumed = RunState(output)
    resumed.open({"benchmark": "bookkeeping"}, "bench", digest, overwrite=False, log=print)
    finished = resume_figures(requests, out, len(resumed.done_ids) == inputs.total)
    phase("resume_finished", t, rows_done=len(resumed.done_ids))

    objects = {d: len(output.list(d)[0]) for d in ("pairs", "rejects", COMMITS_DIR)}
    output_mib = round(sum(e.size for e in output.list_all()) / 2**20, 1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    save(args.out, {
        "commit": commit,
        "rows": args.rows,
        "batch_rows": args.batch_rows,
        "shards_written": not args.commit_only,
        "storage": "S3 API server on loopback (moto)" if args.s3 else "local disk",
        "requests_per_committed_batch": {"write_commit": per_batch(writing, batches),
                                         "finish": per_batch(finishing, batches)},
        "benchmark_items": args.items,
        "engine_stages": PASS_THROUGH,
        "driver_peak_gib": peak_gib(),
        "seconds": {name: p["seconds"] for name, p in phases.items()},
        "resume_unfinished": unfinished,  # a folder whose driver died with every row committed
        "resume_finished": finished,  # the completed folder, opened again
        "objects_after_finish": objects,
        "output_mib": output_mib,
        "phases": phases,
    })
    if not args.keep:
        shutil.rmtree(work)
    if server:
        server.stop()


if __name__ == "__main__":
    main()
