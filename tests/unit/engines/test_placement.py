"""Placement: devices, actor resources, streaming vs phased, refusing plans that cannot fit.

That Ray grants what prefgen asks for is checked on a real Ray with logical GPUs in
`tests/integration/test_placement_gpus.py`.
"""

import os
import pytest

from prefgen.config import ConfigError, PipelineConfig, parse_config
from prefgen.run.ray_start import local_ray_env, plan_run
from prefgen.engines.placement import PlanError, actor_options, planning_resources, resolve_device
from prefgen.roles.plan import plan_stages

from support.placement import gpu_config


def mode_for(cfg, resources):
    return plan_run(cfg, plan_stages(cfg), resources)[1]


@pytest.mark.parametrize("gpus, expected", [(1, "phased"), (2, "phased"), (3, "streaming"), (8, "streaming")])
def test_auto_mode_phases_when_gpus_cannot_hold_every_stage(gpus, expected):
    assert mode_for(gpu_config(), {"CPU": 8, "GPU": gpus}) == expected


def test_streaming_refused_when_it_cannot_fit_and_phased_accepted():
    with pytest.raises(RuntimeError, match=r"5 GPUs, the cluster has 2; set ray.mode: phased"):
        mode_for(gpu_config(mode="streaming", replicas=2), {"CPU": 8, "GPU": 2})
    assert mode_for(gpu_config(mode="phased", replicas=2), {"CPU": 8, "GPU": 2}) == "phased"


def test_stage_needing_more_gpus_than_the_cluster_is_refused_by_name():
    with pytest.raises(RuntimeError, match=r"\(judge:judge, verify:judge\): needs 4 GPU\(s\) per replica, the cluster has 2"):
        mode_for(gpu_config(tp_judge=4), {"CPU": 8, "GPU": 2})


def test_autoscaling_cluster_plans_for_expected_resources():
    """Right after `ray up` the head alone is there (CPU 0, no GPU): plan for what it can grow to."""
    cfg = gpu_config()
    resources = planning_resources({"CPU": 0.0, "memory": 1e9}, {"GPU": 6, "CPU": 80})
    assert resources["GPU"] == 6 and resources["CPU"] == 80 and resources["memory"] == 1e9
    assert mode_for(cfg, resources) == "streaming"
    with pytest.raises(PlanError, match="ray.expected_resources"):
        mode_for(cfg, {"CPU": 0.0})


def test_accelerator_type_is_checked_against_the_cluster():
    cfg = gpu_config(judge_accelerator="A10G")
    with pytest.raises(PlanError, match=r"\(judge:judge, verify:judge\): needs accelerator type A10G, the cluster has L4"):
        mode_for(cfg, {"CPU": 8, "GPU": 4, "accelerator_type:L4": 1})
    assert mode_for(cfg, {"CPU": 8, "GPU": 4, "accelerator_type:A10G": 1}) == "streaming"
    # an autoscaling cluster whose A10G workers do not exist yet: planned from expected_resources
    grown = planning_resources({"CPU": 0.0}, {"CPU": 80, "GPU": 6, "accelerator_type:A10G": 6})
    assert mode_for(cfg, grown) == "streaming"
    auto = gpu_config(judge_accelerator="A10G", device="auto")
    with pytest.raises(PlanError, match="has no GPUs, so the stage would run on the CPU"):
        mode_for(auto, {"CPU": 8})


def test_fractional_gpus_share_one_gpu_and_are_checked_up_front():
    half = {"device": "gpu", "gpus_per_replica": 0.5, "gpu_memory_utilization": 0.45}
    cfg = parse_config({"generators": [{"name": "a", "engine": half, "num_completions": 2}], "evolution": {"enabled": False},
                        "judge": {"engine": {**half, "seed": 1}}, "ray": {"mode": "streaming"}})
    assert mode_for(cfg, {"CPU": 4, "GPU": 1}) == "streaming"  # two engines on one GPU
    assert actor_options(cfg.models[cfg.judge.model].engine, "gpu")["num_gpus"] == 0.5
    with pytest.raises(ConfigError, match=r"judge.engine: .*gpu_memory_utilization: 0.9 .* at most 0.5"):
        parse_config({"judge": {"engine": {"device": "gpu", "gpus_per_replica": 0.5}}})
    with pytest.raises(ConfigError, match="tensor_parallel_size must be 1"):
        parse_config({"judge": {"engine": {"gpus_per_replica": 0.5, "gpu_memory_utilization": 0.4,
                                           "tensor_parallel_size": 2}}})


def test_replica_range_gives_an_autoscaling_pool_and_plans_for_its_minimum():
    cfg = gpu_config(replicas=[1, 4], mode="streaming")
    engine = cfg.models[cfg.judge.model].engine
    assert engine.replica_range == (1, 1)
    pooled = cfg.models[cfg.generators[0].model].engine
    assert pooled.replica_range == (1, 4)
    assert mode_for(cfg, {"CPU": 8, "GPU": 3}) == "streaming"  # the minimum of each pool fits
    with pytest.raises(ConfigError, match=r"replicas"):
        parse_config({"judge": {"engine": {"replicas": [3, 1]}}})


def test_accelerator_type_on_a_cpu_engine_is_a_config_error():
    with pytest.raises(ConfigError, match=r"judge.engine: .*accelerator_type 'A10G' needs device gpu or auto"):
        gpu_config(judge_accelerator="A10G", device="cpu")


def test_cpu_plans_stream_and_devices_resolve():
    cfg = PipelineConfig()
    devices, mode, _ = plan_run(cfg, plan_stages(cfg), {"CPU": 5})
    assert set(devices.values()) == {"cpu"} and mode == "streaming"
    assert resolve_device(cfg.model_of(cfg.judge).engine, 4) == "gpu"


def test_actor_options_per_device():
    cfg = gpu_config(tp_judge=2)
    gpu = actor_options(cfg.model_of(cfg.judge).engine, "gpu")
    assert gpu["num_gpus"] == 2 and gpu["num_cpus"] == 1
    # the CUDA build ignores it; vLLM's CPU build on a logical GPU must float like a CPU engine
    assert gpu["runtime_env"]["env_vars"] == {"VLLM_WORKER_MULTIPROC_METHOD": "spawn", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                                              "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                                              "PREFGEN_CPU_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
    default = PipelineConfig()
    cpu = actor_options(default.model_of(default.judge).engine, "cpu")
    assert "num_gpus" not in cpu
    assert cpu["runtime_env"]["env_vars"]["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    for options in (gpu, cpu):  # Ray's kill of an exiting actor's children stays on (exit.py)
        assert "RAY_kill_child_processes_on_worker_exit" not in options["runtime_env"]["env_vars"]


def test_a_local_ray_leaves_its_workers_niceness_alone_unless_the_user_says_otherwise():
    """Ray's workers make themselves 15 nicer; the engines are the run's work, so a local Ray that
    prefgen starts adds 0 (that it took is asserted on the engine actor in test_pipeline_run.py)."""
    assert local_ray_env({}) == {"RAY_process_group_cleanup_enabled": "1", "RAY_worker_niceness": "0"}
    assert local_ray_env({"RAY_worker_niceness": "10", "PATH": "/bin"}) == {"RAY_process_group_cleanup_enabled": "1"}
    assert local_ray_env({"RAY_worker_niceness": "", "RAY_process_group_cleanup_enabled": "0"}) == {}
