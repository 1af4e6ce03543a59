"""prefgen as a Ray job: `ray job submit` against a real Ray head, the way users run it on a cluster.

A module fixture starts a head on loopback (CPU only, token authentication on, free ports, its
own --temp-dir and HOME) with the real `ray` CLI; the tests submit `jobs/run_pipeline.py` with
`ray job submit --runtime-env jobs/runtime_env.yaml --working-dir <repo>`, so the code reaches
the job the way it reaches a cluster: zipped, uploaded, and run from the uploaded copy. The
teardown stops exactly the processes of this head, never another Ray on the machine.

The runtime-env files themselves are checked without a cluster in `tests/unit/config/test_runtime_env.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml
from support.paths import REPO

# The interpreter running the tests is the one with prefgen's dependencies; the head's PATH
# need not contain it, so the job names it by absolute path (not resolved: a venv's python is
# a symlink whose target would lose the venv).
PYTHON = sys.executable
RAY = str(Path(sys.executable).parent / "ray")
RUNTIME_ENV = REPO / "jobs" / "runtime_env.yaml"
JOB_CONFIG = "tests/data/job_config.yaml"  # relative: read from the uploaded working dir
JOB_INPUT_ROWS = 3
NUM_CPUS = 6  # logical CPUs: two engine actors at 1 each, the data tasks, the job supervisor
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


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _head_env(home: Path) -> dict:
    # No RAY_* from the caller's environment: no RAY_ADDRESS of another cluster, no token
    # (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH) other than the one generated below.
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


def _submit(head: Head, submission_id: str, *pipeline_args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`ray job submit` as a user types it; blocks until the job ends (it streams the logs)."""
    cmd = [
        RAY, "job", "submit",
        "--address", head.address,
        "--submission-id", submission_id,
        "--runtime-env", str(RUNTIME_ENV),
        "--working-dir", str(REPO),
        "--log-style", "record",
        "--",
        PYTHON, "jobs/run_pipeline.py", *pipeline_args,
    ]  # fmt: skip
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=head.env, capture_output=True, text=True, timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        _ray(head.env, "job", "stop", "--address", head.address, submission_id)
        raise
    return proc, time.monotonic() - started


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    assert Path(RAY).exists(), f"no ray CLI next to {PYTHON}"
    root = tmp_path_factory.mktemp("job_submit")
    home = root / "home"
    home.mkdir()
    env = _head_env(home)

    gen = _ray(env, "get-auth-token", "--generate")
    assert gen.returncode == 0, gen.stderr
    assert (home / ".ray" / "auth_token").read_text().strip() == gen.stdout.strip()

    # Short path: Ray's unix sockets live under it (limit ~107 characters).
    temp_dir = Path(tempfile.mkdtemp(prefix="prefgen-ray-"))
    gcs, dash, node_mgr, obj_mgr, agent_http, agent_grpc, env_agent, metrics, client = _free_ports(9)
    cmd = [
        RAY, "start", "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--node-manager-port={node_mgr}",
        f"--object-manager-port={obj_mgr}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={env_agent}",
        f"--metrics-export-port={metrics}",
        f"--ray-client-server-port={client}",
        f"--num-cpus={NUM_CPUS}",
        "--num-gpus=0",
        f"--object-store-memory={1024**3}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]  # fmt: skip
    # A new session: every process the head spawns (GCS, raylet, dashboard, workers, engines)
    # carries this session id, which is how the teardown finds them.
    start = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    sid = start.pid
    try:
        out, _ = start.communicate(timeout=300)
        (root / "ray_start.txt").write_text(out)
        assert start.returncode == 0, out[-5000:]
        h = Head(address=f"http://127.0.0.1:{dash}", env=env, root=root, temp_dir=temp_dir)
        # `ray start` returns before the job server answers; wait until `ray job list` works.
        deadline = time.monotonic() + 180
        while True:
            probe = _ray(env, "job", "list", "--address", h.address)
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, probe.stdout[-2000:] + probe.stderr[-3000:]
            time.sleep(2)
        yield h
    finally:
        if start.poll() is None:
            start.kill()
        _stop_head(sid, temp_dir)
        leftover = _head_processes(sid, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not leftover, f"head processes still alive: {[p.pid for p in leftover]}"


@pytest.mark.integration
def test_token_auth_guards_the_head(head):
    # A client without the token (a HOME with no ~/.ray/auth_token), and one with a wrong token.
    no_token = dict(head.env, RAY_AUTH_MODE="disabled", HOME=str(head.root))
    wrong_token = dict(head.env, RAY_AUTH_TOKEN="0" * 32)
    for env in (no_token, wrong_token):
        proc = _ray(env, "job", "list", "--address", head.address)
        assert proc.returncode != 0
        assert "AuthenticationError" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.integration
def test_pipeline_job_succeeds_and_writes_the_dataset(head):
    out = head.root / "out"
    sid = f"prefgen-test-{uuid.uuid4().hex[:8]}"
    proc, wall = _submit(head, sid, "run", JOB_CONFIG, "--output", str(out))
    (head.root / "submit_ok.txt").write_text(f"wall {wall:.1f} s\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    info = _job_info(head, sid)
    if info["end_time"] and info["start_time"]:
        server = (info["end_time"] - info["start_time"]) / 1000
        print(f"\n[job_submit] {sid}: `ray job submit` to exit {wall:.1f} s, job start to end {server:.1f} s")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert info["status"] == "SUCCEEDED" and info["driver_exit_code"] == 0, info

    logs = _ray(head.env, "job", "logs", "--address", head.address, sid)
    assert logs.returncode == 0, logs.stderr
    assert "[prefgen] done" in logs.stdout
    assert f"rows in:        {JOB_INPUT_ROWS}" in logs.stdout

    # The run's summary: manifest.json (it replaced summary.json), counts that add up.
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["status"] == "complete"
    assert summary["input_rows"] == JOB_INPUT_ROWS
    assert summary["paired_rows"] + sum(summary["rejects"].values()) == JOB_INPUT_ROWS
    # The shards on disk hold what the summary counts.
    on_disk = {d: sum(pq.read_metadata(f).num_rows for f in (out / d).glob("*.parquet")) for d in ("pairs", "rejects")}
    assert on_disk == {"pairs": summary["pairs"], "rejects": sum(summary["rejects"].values())}, (on_disk, summary)


@pytest.mark.integration
def test_bad_config_job_fails_with_the_key_named(head):
    bad = head.root / "bad.yaml"
    bad.write_text(yaml.safe_dump({"judge": {"sampling": {"temprature": 0.0}}}))
    sid = f"prefgen-bad-{uuid.uuid4().hex[:8]}"
    proc, _ = _submit(head, sid, "run", str(bad), "--output", str(head.root / "bad-out"))
    assert proc.returncode != 0
    info = _job_info(head, sid)
    assert info["status"] == "FAILED" and info["driver_exit_code"] == 2, info
    logs = _ray(head.env, "job", "logs", "--address", head.address, sid)
    assert "judge.sampling.temprature: Extra inputs are not permitted" in logs.stdout
    assert not (head.root / "bad-out").exists()
