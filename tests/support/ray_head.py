"""A Ray head for job tests, and what tests do with it: the handle (`Head`: its job server's
address, the environment every CLI call against it uses, its temp dir), the head's environment
(token authentication on, its own HOME, no RAY_* of the caller's), `ray job submit` as a user
types it, a job's status, and the teardown that stops exactly this cluster's processes, never
another Ray on the machine. The cluster itself is `autoscaling_head.py`'s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from support.paths import REPO

# The interpreter running the tests is the one with prefgen's dependencies; the head's PATH
# need not contain it, so the job names it by absolute path (not resolved: a venv's python is
# a symlink whose target would lose the venv).
PYTHON = sys.executable
RAY = str(Path(sys.executable).parent / "ray")
RUNTIME_ENV = REPO / "jobs" / "runtime_env.yaml"
JOB_TIMEOUT = 900
# The embedded model is converted once into the real cache; the head runs under a temporary
# HOME, so point it there explicitly instead of converting again under the temporary HOME.
PREFGEN_CACHE = os.environ.get("PREFGEN_CACHE") or str(Path.home() / ".cache" / "prefgen")


@dataclass
class Head:
    address: str  # the dashboard (job server) URL
    env: dict  # environment for every CLI call against this head: temp HOME, token auth
    root: Path  # per-module scratch: HOME, job outputs
    temp_dir: Path  # the head's --temp-dir (sessions, logs, sockets, uploaded packages)
    gcs: str = ""  # the GCS address a worker node or a driver joins

    def alive_resources(self) -> dict[str, dict]:
        """Each alive node's id -> its resources, the head's first."""
        script = ("import json, sys, ray\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
                  "print('NODES', json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))\n")
        proc = subprocess.run([PYTHON, "-c", script, self.gcs], env=self.env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # the line of its own: Ray's driver may print autoscaler events around it
        found = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("NODES "))[6:])
        return dict(sorted(found.items(), key=lambda item: "node:__internal_head__" not in item[1]))


def _head_env(home: Path) -> dict:
    # No RAY_* from the caller's environment: no RAY_ADDRESS of another cluster, no token
    # (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH) other than the one generated under this HOME.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        HOME=str(home),  # `ray get-auth-token --generate` always writes ~/.ray/auth_token
        RAY_AUTH_MODE="token",
        RAY_USAGE_STATS_ENABLED="0",
        PREFGEN_CACHE=PREFGEN_CACHE,
        HF_HUB_OFFLINE="1",
    )
    return env


def _ray(head_env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], env=head_env, capture_output=True, text=True, timeout=timeout)


def _head_processes(sid: int, temp_dir: Path) -> list[psutil.Process]:
    """Every process of this head: its session (ray start ran in a new one), or anything whose
    command line or working directory lies under its temp dir (job drivers start sessions of
    their own but run inside the uploaded working dir)."""
    mine = []
    marker = str(temp_dir)
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid():
                continue
            if os.getsid(proc.pid) == sid or marker in " ".join(proc.cmdline()) or proc.cwd().startswith(marker):
                mine.append(proc)
        except (psutil.Error, OSError):
            pass
    return mine


def _stop_head(sid: int, temp_dir: Path) -> None:
    # Not `ray stop --force`: it kills every Ray process on the machine, including the local
    # Ray of another test (or another user). This stops this head's processes only.
    for _ in range(3):
        procs = _head_processes(sid, temp_dir)
        if not procs:
            return
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)


def _job_info(head: Head, submission_id: str) -> dict:
    script = (
        "import json, sys\n"
        "from ray.job_submission import JobSubmissionClient\n"
        "info = JobSubmissionClient(sys.argv[1]).get_job_info(sys.argv[2])\n"
        "print(json.dumps({'status': str(info.status), 'driver_exit_code': info.driver_exit_code,"
        " 'message': info.message, 'start_time': info.start_time, 'end_time': info.end_time}))\n"
    )
    proc = subprocess.run(
        [PYTHON, "-c", script, head.address, submission_id],
        env=head.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _submit(head: Head, submission_id: str, *pipeline_args: str,
            entrypoint: str = "jobs/run_pipeline.py") -> tuple[subprocess.CompletedProcess, float]:
    """`ray job submit` as a user types it; blocks until the job ends (it streams the logs).
    `entrypoint`: the script the job runs, relative to the repository (the uploaded working dir)."""
    cmd = submit_command(head, submission_id, *pipeline_args, entrypoint=entrypoint)
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=head.env, capture_output=True, text=True, timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        _ray(head.env, "job", "stop", "--address", head.address, submission_id)
        raise
    return proc, time.monotonic() - started


def submit_command(head: Head, submission_id: str, *pipeline_args: str,
                   entrypoint: str = "jobs/run_pipeline.py") -> list[str]:
    """The `ray job submit` command line that runs `entrypoint` with these arguments."""
    return [
        RAY, "job", "submit",
        "--address", head.address,
        "--submission-id", submission_id,
        "--runtime-env", str(RUNTIME_ENV),
        "--working-dir", str(REPO),
        "--log-style", "record",
        "--",
        PYTHON, entrypoint, *pipeline_args,
    ]  # fmt: skip


def stop_cluster(start: subprocess.Popen, temp_dir: Path) -> None:
    """Stop every process of the cluster `start` (a `ray start --head` in a session of its own)
    began, remove its temp dir, and fail if any process is left."""
    if start.poll() is None:
        start.kill()
    _stop_head(start.pid, temp_dir)
    leftover = _head_processes(start.pid, temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert not leftover, f"cluster processes still alive: {[p.pid for p in leftover]}"


