"""Placement: which device an engine runs on, what Ray resources its actors ask for, and whether
a plan fits the cluster (streaming, phased, or refused before any engine starts).

Pure functions over the config and a dict of cluster resources; `run/pipeline.py` applies them.
"""

from __future__ import annotations

import os

from prefgen.config import EngineConfig
from prefgen.engines.arguments import CPU_THREADS_ENV


class PlanError(RuntimeError):
    """The configured plan cannot run on this cluster; says what is missing."""


def resolve_device(engine: EngineConfig, cluster_gpus: float) -> str:
    if engine.device != "auto":
        return engine.device
    return "gpu" if cluster_gpus > 0 else "cpu"


def gpus_per_replica(engine: EngineConfig, device: str) -> float:
    """GPUs one engine actor holds: `gpus_per_replica`, else one per tensor-parallel rank."""
    if device != "gpu":
        return 0.0
    return engine.gpus_per_replica if engine.gpus_per_replica is not None else float(engine.tensor_parallel_size)


def actor_options(engine: EngineConfig, device: str) -> dict:
    """Ray resources and environment of one engine actor."""
    options: dict = {"num_cpus": engine.cpus_per_replica}
    # (the KV cache size goes to the engine as an argument: see arguments.device_kwargs)
    # vLLM's CPU build binds every engine of a machine to the same cores; several engines on one
    # host must float instead. Set for a GPU actor too: the CUDA build never reads it, and the CPU
    # build may run there (an actor on a logical GPU: see arguments.vllm_device). Ray's own kill of an
    # exiting actor's child processes stays on: see exit.py for why.
    env = {"VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
           # vLLM's CPU build may then run the model in its engine core (arguments.device_kwargs), and
           # that core in the actor's own process: the pipeline's engine (stepped.py) and the blocking
           # `LLM` (the reward model's). `AsyncLLM` (GPUs) keeps its core in a process of its own.
           "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
           # the CPU build's threads, set in the actor (arguments.use_cpu_threads); Ray's own
           # OMP_NUM_THREADS there is the actor's logical CPUs, 1 by default
           CPU_THREADS_ENV: str(engine.cpu_threads or os.environ.get("OMP_NUM_THREADS") or "")}
    if device == "gpu":
        options["num_gpus"] = gpus_per_replica(engine, device)
        if engine.accelerator_type:
            options["accelerator_type"] = engine.accelerator_type
        if engine.tensor_parallel_size > 1:
            env["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    options["runtime_env"] = {"env_vars": env}
    return options


ACCELERATOR_SHARE = 0.001  # what Ray's `accelerator_type` option asks of a node's `accelerator_type:T`


def replica_needs(engine: EngineConfig, device: str) -> dict[str, float]:
    """The Ray resources one replica (engine actor) needs, all on one node."""
    need = {"CPU": engine.cpus_per_replica}
    gpus = gpus_per_replica(engine, device)
    if gpus:
        need["GPU"] = gpus
        if engine.accelerator_type:
            need[f"accelerator_type:{engine.accelerator_type}"] = ACCELERATOR_SHARE
    return need


def fits(need: dict[str, float], node: dict[str, float]) -> bool:
    """Whether one node (its total resources) can hold `need`."""
    return all(node.get(k, 0) >= v for k, v in need.items())


def describe(resources: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" if not k.startswith("accelerator_type:") else k for k, v in sorted(resources.items()))


def missing_on_any_node(need: dict[str, float], nodes: list[dict[str, float]]) -> str:
    """What keeps every node from holding `need`, in words: the resources no node has enough of,
    or that none has them all together."""
    short = {k: v for k, v in need.items() if max((n.get(k, 0) for n in nodes), default=0) < v}
    if short:
        most = {k: max((n.get(k, 0) for n in nodes), default=0) for k in short}
        return "; ".join(f"{k}: needs {v:g} on one node, the most any node has is {most[k]:g}"
                         for k, v in short.items())
    return f"no node has {describe(need)} together"


def check_nodes(label: str, engine: EngineConfig, device: str, nodes: list[dict[str, float]]) -> None:
    """Refuse a stage no single node can hold a replica of (a replica is one actor, on one node)."""
    need = replica_needs(engine, device)
    if nodes and not any(fits(need, n) for n in nodes):
        raise PlanError(
            f"{label}: one replica needs {describe(need)} on one node, and no node of the cluster has it "
            f"({missing_on_any_node(need, nodes)}); lower engine.cpus_per_replica, tensor_parallel_size or "
            "gpus_per_replica, add larger nodes, or on an autoscaling cluster set ray.expected_resources"
        )


def endpoint_actor_options(engine: EngineConfig) -> dict:
    """Ray resources of an endpoint's actor: a share of a CPU, no GPU, and nothing in its environment
    (the API key is read from the node's own environment or a file, never passed through Ray)."""
    return {"num_cpus": engine.cpus_per_replica}


def planning_resources(now: dict, expected: dict) -> dict:
    """What to plan for: the cluster as it is, or what it is expected to grow to, whichever is more."""
    return {k: max(now.get(k, 0), expected.get(k, 0)) for k in {*now, *expected}}


def _check_accelerator(stage: str, wanted: str, device: str, resources: dict) -> None:
    """Ray marks a node holding GPUs of type T with the resource `accelerator_type:T`."""
    if device != "gpu":
        raise PlanError(f"{stage}: accelerator_type {wanted} is set but the cluster has no GPUs, so the stage "
                        "would run on the CPU; add GPU workers or set ray.expected_resources")
    if resources.get(f"accelerator_type:{wanted}", 0) <= 0:
        have = sorted(k.split(":", 1)[1] for k, v in resources.items() if k.startswith("accelerator_type:") and v > 0)
        raise PlanError(
            f"{stage}: needs accelerator type {wanted}, the cluster has {', '.join(have) or 'none named'}; "
            f"change engine.accelerator_type, or on an autoscaling cluster add 'accelerator_type:{wanted}' "
            "to ray.expected_resources"
        )


def check_stage(label: str, engine: EngineConfig, device: str, resources: dict) -> None:
    """Refuse a stage whose one replica cannot be placed on the cluster."""
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    need = gpus_per_replica(engine, device)
    if need > gpus:
        raise PlanError(
            f"{label}: needs {need:g} GPU(s) per replica, the cluster has {gpus:g}; "
            "lower tensor_parallel_size, add GPU workers (on an autoscaling cluster: set "
            "ray.expected_resources), or set engine.device: cpu"
        )
    if engine.accelerator_type:
        _check_accelerator(label, engine.accelerator_type, device, resources)
    if engine.cpus_per_replica > cpus:
        raise PlanError(
            f"{label}: needs {engine.cpus_per_replica:g} CPUs per replica, the cluster has {cpus:g} "
            "(on an autoscaling cluster: set ray.expected_resources)"
        )


def choose_mode(requested: str, stages: list[tuple[str, EngineConfig, str]], resources: dict,
                nodes: list[dict] | None = None) -> str:
    """Check (label, engine, device) stages against the cluster, and each replica against its
    nodes' resources (`nodes`: each node's totals; none: not known); pick streaming or phased.

    Streaming holds every stage's smallest pool at once; phased one stage at a time."""
    for label, engine, device in stages:
        check_stage(label, engine, device, resources)
        check_nodes(label, engine, device, nodes or [])
    gpus = resources.get("GPU", 0)
    all_at_once = sum(gpus_per_replica(e, d) * e.replica_range[0] for _, e, d in stages)
    if requested == "streaming" and all_at_once > gpus:
        raise PlanError(
            f"streaming holds every stage's engines at once: {all_at_once:g} GPUs, the cluster has "
            f"{gpus:g}; set ray.mode: phased (or auto)"
        )
    if requested != "auto":
        return requested
    return "phased" if all_at_once > gpus else "streaming"
