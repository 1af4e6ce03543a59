"""The run's Ray: a configured cluster joined or a local Ray started for the plan's engines, and
the plan's devices and mode on the resources there (also `prefgen plan`'s, without Ray).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prefgen.config import PipelineConfig
from prefgen.engines.placement import choose_mode, planning_resources, resolve_device
from prefgen.roles.plan import StagePlan


def init_ray(cfg: PipelineConfig, stages: list[StagePlan], worker_logs: bool = True):
    """Join the configured cluster, or start a local Ray; returns (ray, session dir we own).

    `worker_logs=False` leaves the workers' output in the Ray session's log files instead of
    streaming it to the driver (the quiet console, see `run/console.py`)."""
    import ray

    if ray.is_initialized():
        return ray, None
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=worker_logs)
        return ray, None
    keep_local_workers_on_this_interpreter()
    os.environ.update(local_ray_env(os.environ))  # read by the raylet and workers ray.init starts
    # A local Ray needs a logical CPU per engine actor plus one for the other tasks; on a
    # laptop that can exceed the cores, and the engines then share them.
    needed = int(sum(s.model.engine.cpus_per_replica * s.model.engine.replica_range[1] for s in stages)) + 1
    context = ray.init(address="local", num_cpus=cfg.ray.num_cpus or max(os.cpu_count() or 1, needed),
                       include_dashboard=cfg.ray.dashboard, log_to_driver=worker_logs)
    return ray, context.address_info.get("session_dir")


LOCAL_RAY_ENV = {
    # Each worker in a process group of its own, killed with the worker (Ray's documented switch):
    # an engine actor that dies, even by SIGKILL, takes vLLM's engine processes with it.
    "RAY_process_group_cleanup_enabled": "1",
    # Each Ray worker adds 15 to its niceness when it starts (Ray's `worker_niceness`, by
    # `nice()`), to leave the CPU to the driver and Ray's services. Here the workers are the
    # engines, the run's work: 15 nicer, they lose the CPU to anything else on the machine.
    # 0 adds nothing: they run at the raylet's niceness, which is the driver's.
    "RAY_worker_niceness": "0",
}


def local_ray_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Ray's settings prefgen gives a local Ray it starts (`LOCAL_RAY_ENV`), less any the user
    set in the environment: theirs are kept."""
    return {key: value for key, value in LOCAL_RAY_ENV.items() if key not in environ}


def keep_local_workers_on_this_interpreter() -> None:
    """Keep a local Ray's workers on the driver's own interpreter.

    Under `uv run`, Ray (>= 2.47) by default makes every worker start through `uv run` in a copy
    of the working directory, which builds and re-syncs a second virtualenv there; workers that
    start while another one syncs can find vLLM half installed. A local Ray's workers run on this
    machine, where the driver's interpreter already has everything, so prefgen turns that off
    (`RAY_ENABLE_UV_RUN_RUNTIME_ENV=0`, Ray's documented switch) before it starts one. Ray reads
    the switch when it is imported, so the already-read value is set too."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False


def plan_run(cfg: PipelineConfig, stages: list[StagePlan], cluster: dict,
             nodes: list[dict] | None = None) -> tuple[dict[str, str], str, dict]:
    """Devices per stage, the mode, and the resources planned for; PlanError if it cannot fit.
    `nodes`: each alive node's resources, if known; with `ray.expected_resources` the shapes of
    the workers to come are not known, so the cluster grown to it counts as one more node."""
    resources = planning_resources(cluster, cfg.ray.expected_resources)
    devices = {s.name: resolve_device(s.model.engine, resources.get("GPU", 0)) for s in stages}
    if nodes is not None and cfg.ray.expected_resources:
        nodes = [*nodes, resources]
    mode = choose_mode(cfg.ray.mode, [(s.label, s.model.engine, devices[s.name]) for s in stages], resources, nodes)
    return devices, mode, resources
