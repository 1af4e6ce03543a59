"""Stopping a Ray job at a chosen moment, and the engine processes a test cluster holds.

`ReadyJobStop` is the `ray` command (`ray.scripts.scripts.main`), imported ahead in a process
of its own that waits for its arguments: `ray job stop` then lands within a fraction of a second
of the event a test waits for, instead of after the second or two the CLI takes to import Ray.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil

from support.ray_head import PYTHON, Head

_RAY_CLI_READY = ("import sys\nfrom ray.scripts.scripts import main\n"
                  "sys.argv = ['ray', *sys.stdin.readline().split()]\nsys.exit(main())\n")


class ReadyJobStop:
    """`ray job stop --address <head> <submission id>`, started now, run on `stop()`."""

    def __init__(self, head: Head, submission_id: str):
        self.args = f"job stop --address {head.address} {submission_id}\n"
        self.proc = subprocess.Popen([PYTHON, "-c", _RAY_CLI_READY], env=head.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self, timeout: float = 120) -> tuple[int, str]:
        """Run it (it waits until the job has stopped); returns its exit code and output."""
        out, _ = self.proc.communicate(self.args, timeout=timeout)
        return self.proc.returncode, out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _title(proc: psutil.Process) -> str:
    return " ".join(proc.cmdline())


def _is_engine(title: str) -> bool:
    """An engine actor's worker (Ray titles it `ray::MapWorker(MapBatches(ModelStage))`, the
    method it runs after a dot) or a process of vLLM's (`VLLM::EngineCore`, `VLLM::Worker`)."""
    return (title.startswith("ray::") and "ModelStage" in title.partition(" ")[0]) or title.startswith("VLLM")


def engine_processes(temp_dir: Path) -> list[psutil.Process]:
    """The engines of the cluster whose --temp-dir this is: its engine actors' processes, vLLM's
    processes, and every process these started. An actor's process is its engine even where vLLM
    starts no process of its own (its engine core inside the actor's process, `engines/stepped.py`);
    where vLLM does spawn some (`AsyncLLM`'s engine core, a worker), they count too. They all run
    in a job's working directory, unpacked under the temp dir."""
    found = set()
    for proc in psutil.process_iter():
        try:
            if _is_engine(_title(proc)) and Path(proc.cwd()).is_relative_to(temp_dir):
                found.add(proc)
                found.update(proc.children(recursive=True))
        except (psutil.Error, OSError):
            pass
    return sorted(found, key=lambda p: p.pid)


def still_running(temp_dir: Path, seen: list[psutil.Process]) -> list[psutil.Process]:
    """`engine_processes` now, and those of `seen` still alive (the same pid and start time): a
    process an engine started, orphaned when the engine went, counts too."""
    alive = set(engine_processes(temp_dir)) | {p for p in seen if p.is_running()}
    return sorted(alive, key=lambda p: p.pid)


def titles(procs: list[psutil.Process]) -> dict[int, str]:
    """pid -> command line (a process title) of those still alive, for an assertion's message."""
    found = {}
    for proc in procs:
        try:
            found[proc.pid] = _title(proc)
        except psutil.NoSuchProcess:
            pass
        except psutil.Error:  # alive, its command line not readable (a zombie)
            found[proc.pid] = ""
    return found
