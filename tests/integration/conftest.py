"""Fixtures shared by the integration tests.

`no_engine_process_outlives_its_scenario` (every module): after a module's scenario, no engine
process it started is left: no engine actor (`ray::MapWorker(MapBatches(ModelStage))`, where
vLLM's engine core runs on the CPU build, `engines/stepped.py`) and no process of vLLM's own
(`VLLM::EngineCore`, `VLLM::Worker`), found by a marker in their environment that every process
started under this test session inherits. A leaked engine
holds gigabytes; on a long-lived cluster every run would leave one.

`ray_cluster`: a real multi-node Ray cluster on this machine (`support/ray_cluster.py`): a head
and two worker nodes, each its own raylet, token authentication on; started once per module
(its nodes' default agent ports would stop a later module's Ray head from taking jobs).

`local_ray`: one Ray in the test process for the whole session, for the tests that only need a
Ray to run Ray Data or place actors (no prefgen run of their own): started once, with logical
GPUs and an accelerator type so placement can be checked without a GPU. A test that runs
`prefgen run` gets the Ray that run starts itself, as a user's run does; the kill-and-resume
tests need that, since a resume stops only a Ray its killed driver started.
"""

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from support.ray_cluster import ray_cluster  # noqa: F401 - fixture: a multi-node Ray on this machine

from prefgen.run.ray_start import keep_local_workers_on_this_interpreter

MARKER = "PREFGEN_TEST_SESSION"
os.environ.setdefault(MARKER, uuid.uuid4().hex)  # inherited by every process the tests start


def engine_processes() -> dict[int, str]:
    """This test session's engine processes still alive (engine actors, vLLM's): pid -> process title."""
    found = {}
    mark = f"{MARKER}={os.environ[MARKER]}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            engine = title.startswith("VLLM::") or (title.startswith("ray::") and "ModelStage" in title.split(" ")[0])
            if engine and mark in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found[int(entry.name)] = title
        except OSError:
            continue
    return found


@pytest.fixture(scope="module", autouse=True)
def no_engine_process_outlives_its_scenario():
    before = set(engine_processes())
    yield
    deadline = time.monotonic() + 60  # an engine's own exit takes a few seconds
    left = {}
    while time.monotonic() < deadline:
        left = {pid: title for pid, title in engine_processes().items() if pid not in before}
        if not left:
            return
        time.sleep(1)
    for pid in left:  # so that the next scenario starts clean
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    pytest.fail(f"engine processes outlived their scenario by 60 s: {left}")


@pytest.fixture(scope="session")
def local_ray():
    import ray

    keep_local_workers_on_this_interpreter()
    ray.init(address="local", num_cpus=4, num_gpus=2, resources={"accelerator_type:A10G": 1},
             include_dashboard=False, object_store_memory=256 << 20)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
