"""A real multi-node Ray cluster for the integration tests (the fixture `ray_cluster`).

`ray_cluster`: a real multi-node Ray cluster on this machine, started once per test module that uses
it (and torn down at its end, so that no later module's Ray meets its ports): a
head that runs no work (no logical CPU, as `cluster.yaml`'s head) and two worker nodes, each its
own raylet with two logical CPUs and a custom resource naming it (`node:a`, `node:b`), so a test
can pin work to a node or find out where something ran. Token authentication is on, as
`cluster.yaml` runs it, with a token of the session's own (`RAY_AUTH_MODE=token` and
`RAY_AUTH_TOKEN_PATH` in the environment, which the raylets and any driver a test starts
inherit; `~/.ray` is left alone). The session's S3 server (`support/s3_server.py`) is in that
environment too, so every node's workers reach it, as a cluster's nodes reach their bucket. Ports are picked free by Ray (no dashboard, so no 8265 clash),
on this machine's own address (`127.0.0.1` made the head hang here, see the shared notes).
Torn down at the session's end, leaving no process; Ray's "current cluster" file, which the rig
would otherwise point at itself (a bare `ray.init()` elsewhere on the machine would join it), is
put back as it was.

Ray gives a new node's raylet a fixed 30 s to register; on a 2-core machine shared with other
test runs (load average 20 seen here) that is too short, so while the rig adds a node Ray's node
module sees a clock running at a quarter of the speed (`patient_startup`): two minutes.
"""

from __future__ import annotations

import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from prefgen.engines.orphans import stop_orphans

WORKER_CPUS = 2
OBJECT_STORE = 128 << 20
STARTUP_SLOWDOWN = 4  # Ray's 30 s for a raylet to register becomes 2 minutes
# How soon the head finds a killed node dead: Ray's default checks every 3 s and needs 5 failed
# checks (15 s, measured: a lost node's rows waited 14 s for it); every second and 3 failures
# here. A check that gets no answer still waits its 10 s (Ray's default), so a node only busy on
# a loaded machine is not taken for dead.
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


class _SlowClock:
    """The `time` module as Ray's node module sees it while a node starts: `monotonic` slowed."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def monotonic() -> float:
        return time.monotonic() / STARTUP_SLOWDOWN


@contextmanager
def patient_startup():
    import ray._private.node as node_module

    node_module.time = _SlowClock()
    try:
        yield
    finally:
        node_module.time = time


@dataclass
class RayRig:
    """The session's cluster: its address, its worker nodes by name, and helpers to change it."""

    cluster: object  # ray.cluster_utils.Cluster
    env: dict[str, str]  # what a driver process needs to join it (address, auth mode and token)
    workers: dict[str, object] = field(default_factory=dict)  # name -> ray._private.node.Node

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_worker(self, name: str, **resources) -> object:
        """A worker node with WORKER_CPUS logical CPUs and the resource `node:<name>`."""
        with patient_startup():
            node = self.cluster.add_node(num_cpus=WORKER_CPUS, object_store_memory=OBJECT_STORE,
                                         resources={f"node:{name}": 1, **resources})
        self.workers[name] = node
        return node

    def remove_worker(self, name: str) -> None:
        """Kill a worker node outright, as a lost spot node goes (no graceful drain)."""
        self.cluster.remove_node(self.workers.pop(name), allow_graceful=False)

    def name_of(self, node_id: str) -> str | None:
        """Which worker a Ray node id is (None: the head, or a node gone)."""
        return next((n for n, node in self.workers.items() if node.node_id == node_id), None)

    def restore(self) -> None:
        """Back to a head and two workers `a` and `b` (after a test removed one)."""
        for name in ("a", "b"):
            if name not in self.workers:
                self.add_worker(name)
        self.cluster.wait_for_nodes(timeout=120)


def _address_file() -> Path:
    return Path("/tmp/ray/ray_current_cluster")


def _put_back(address_before: str | None) -> None:
    if address_before is None:
        _address_file().unlink(missing_ok=True)
    else:
        _address_file().write_text(address_before)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, s3_server):
    from ray._private.authentication_test_utils import reset_auth_token_state
    from ray.cluster_utils import Cluster

    token_file = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file), **s3_server.env}
    saved = {k: os.environ.get(k) for k in (*env, "RAY_AUTH_TOKEN")}
    address_before = _address_file().read_text() if _address_file().exists() else None
    os.environ.update(env)
    os.environ.pop("RAY_AUTH_TOKEN", None)  # the file is the one source
    reset_auth_token_state()  # this process read the mode when it imported Ray
    started = time.monotonic()
    with patient_startup():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                               "object_store_memory": OBJECT_STORE,
                                                               "_system_config": HEALTH_CHECKS})
    # A driver joins with the venv it runs on; the nodes are this machine, with the same venv, so
    # Ray's `uv run` integration (a fresh virtualenv synced per worker) is turned off for it.
    rig = RayRig(cluster, dict(env, RAY_ADDRESS=cluster.address, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0"))
    try:
        rig.restore()
        _put_back(address_before)
        print(f"\n[rig] Ray cluster of 3 nodes up in {time.monotonic() - started:.1f} s at {cluster.address}")
        yield rig
    finally:
        session = cluster.head_node.get_session_dir_path() if cluster.head_node else None
        cluster.shutdown()
        if session:  # a node whose start timed out (a loaded machine) is not the cluster's to stop
            stop_orphans(session)
        _put_back(address_before)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_auth_token_state()
