"""An autoscaling Ray cluster on one machine, as `cluster.yaml` users run one: a head with no
CPU and no workers, under Ray's own autoscaler with its fake multi-node provider, which starts and
stops worker "nodes" (each its own raylet on this machine) as the demand asks.

The worker type advertises what `cluster.yaml`'s GPU workers do (`GPU: 1`,
`accelerator_type:A10G`), as logical resources: no GPU is needed (vLLM's CPU build runs in the
actors that hold them). Token authentication is on, with a token generated under the head's own
HOME (`ray_head._head_env`); the GCS listens on a free port (the provider is told it, else its
workers dial 6379), the dashboard too. The workers use the head's temp dir, each unpacking a job's
working dir into a folder of its own (`support/fake_nodes.py` says why), and inherit the head's
environment (an S3 endpoint, say). The teardown stops exactly this cluster's processes
(`ray_head.stop_cluster`): the fake workers are children of the head's autoscaler, so they share
its session.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from support.ports import free_ports
from support.ray_head import PYTHON, Head, _head_env, _ray, stop_cluster

IDLE_TIMEOUT_MIN = 0.25  # a worker with nothing to do goes away after 15 s
WORKER = {"CPU": 2, "GPU": 1, "accelerator_type:A10G": 1}
MAX_WORKERS = 2


def autoscaling_config(gcs: str) -> dict:
    """A cluster-launcher config for the fake provider: the launcher's keys present, empty."""
    return {
        "cluster_name": "prefgen-test",
        "max_workers": MAX_WORKERS,
        "idle_timeout_minutes": IDLE_TIMEOUT_MIN,
        "upscaling_speed": 1.0,
        # Ray's fake provider, each node unpacking runtime envs into its own folder (support/fake_nodes.py)
        "provider": {"type": "external", "module": "support.fake_nodes.OwnDiskFakeProvider",
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs},
        "auth": {"ssh_user": "ubuntu"},
        "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "max_workers": 0, "node_config": {}},
            "gpu_worker": {"resources": WORKER, "min_workers": 0, "max_workers": MAX_WORKERS, "node_config": {}},
        },
    }


def start_autoscaling_head(root: Path, extra_env: dict | None = None):
    """The cluster for one test module (a generator: yields the Head, then stops its processes)."""
    home = root / "home"
    home.mkdir()
    env = dict(_head_env(home), **(extra_env or {}))
    gen = _ray(env, "get-auth-token", "--generate")
    assert gen.returncode == 0, gen.stderr
    temp_dir = Path(tempfile.mkdtemp(prefix="prefgen-as-"))  # short: Ray's unix sockets live under it
    # every port free, the agents' too: Ray's defaults (the dashboard agent's 52365) may be held by
    # another Ray on the machine (the session's `local_ray`, say), and a head whose agent cannot
    # listen takes no job ("No available agent to submit job")
    gcs, dash, client, agent_http, agent_grpc, env_agent, metrics = free_ports(7)
    config = root / "autoscaling.yaml"
    config.write_text(yaml.safe_dump(autoscaling_config(f"127.0.0.1:{gcs}")))
    cmd = [
        str(Path(PYTHON).parent / "ray"), "start", "--head", f"--autoscaling-config={config}",
        "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=0", "--num-gpus=0",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
        f"--object-store-memory={512 << 20}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]  # fmt: skip
    tests = str(Path(__file__).resolve().parents[1])  # the autoscaler imports support.fake_nodes
    pythonpath = os.pathsep.join(filter(None, [tests, env.get("PYTHONPATH")]))
    start = subprocess.Popen(cmd, env=dict(env, RAY_FAKE_CLUSTER="1", PYTHONPATH=pythonpath),
                             stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = start.communicate(timeout=300)
        (root / "ray_start.txt").write_text(out)
        assert start.returncode == 0, out[-5000:]
        head = Head(address=f"http://127.0.0.1:{dash}", env=env, root=root, temp_dir=temp_dir,
                    gcs=f"127.0.0.1:{gcs}")
        deadline = time.monotonic() + 180
        while (probe := _ray(env, "job", "list", "--address", head.address)).returncode != 0:
            assert time.monotonic() < deadline, probe.stdout[-2000:] + probe.stderr[-3000:]
            time.sleep(2)
        # The job list answers before the head's job agent is up, and a submission until then fails
        # ("No available agent to submit job, please try again later"): a no-op job accepted says it is.
        while (probe := _ray(env, "job", "submit", "--address", head.address, "--no-wait", "--submission-id",
                             f"agent-probe-{time.monotonic_ns()}", "--", "true")).returncode != 0:
            assert "No available agent" in probe.stdout + probe.stderr, probe.stdout[-2000:] + probe.stderr[-3000:]
            assert time.monotonic() < deadline, probe.stdout[-2000:] + probe.stderr[-3000:]
            time.sleep(2)
        yield head
    finally:
        stop_cluster(start, temp_dir)
