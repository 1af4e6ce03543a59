"""Stopping a Ray job at a chosen moment, and the vLLM processes a test cluster holds.

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


def vllm_processes(temp_dir: Path) -> list[int]:
    """The vLLM processes (`VLLM::EngineCore`, ...) of the cluster whose --temp-dir this is: they
    run in a job's working directory, unpacked under it."""
    found = []
    for proc in psutil.process_iter():
        try:
            if " ".join(proc.cmdline()).startswith("VLLM") and proc.cwd().startswith(str(temp_dir)):
                found.append(proc.pid)
        except (psutil.Error, OSError):
            pass
    return found
