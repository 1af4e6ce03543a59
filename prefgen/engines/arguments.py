"""vLLM engine arguments of one model's engine, from its `EngineConfig` and the device it is
placed on: the dtype, the memory arguments, where the CPU build runs the model and on how many
threads, LoRA slots and the config's `extra`. The same arguments serve the pipeline's engine
(`AsyncLLM`, or `SteppedLLM` where `in_engine_core`), the blocking `LLM` (the reward model,
`calibrate`, the floor) and the benchmarks.
"""

from __future__ import annotations

import os

from prefgen.config import EngineConfig


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this machine's CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:  # not Linux: let vLLM decide
            return True
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_dtype(dtype: str, device: str, cpuinfo: str | None = None) -> str:
    """The dtype vLLM gets: `auto` on a CPU becomes bfloat16 or float32 by what the CPU computes natively
    (measured on a CPU without AVX512-BF16: SmolLM2-135M decoded at 11.7 tok/s in bfloat16, 24.5 in float32)."""
    if dtype != "auto" or device == "gpu":
        return dtype
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"


def vllm_device(device: str, cpu_build: bool | None = None) -> str:
    """The device vLLM computes on in this process: the placement's, except on vLLM's CPU build,
    which runs on the CPU whatever its actor holds (an actor on a logical GPU: a worker that
    advertises GPUs it lacks, as the autoscaling test cluster's do). `cpu_build`: None asks vLLM."""
    if cpu_build is None:
        from vllm.platforms import current_platform

        cpu_build = current_platform.is_cpu()
    return "cpu" if cpu_build else device


def engine_kwargs(source: str, eng: EngineConfig, device: str, adapters: dict | None = None,
                  cpu_build: bool | None = None) -> dict:
    """vLLM engine arguments of one model's engine (the same for `LLM`, `AsyncLLM` and the reward
    model's pooling `LLM`). `device` is the placement's; the memory arguments, the dtype and the
    LoRA slots follow the device vLLM computes on (`vllm_device`): a GPU's memory share given to
    the CPU build would reserve that share of the host's RAM, and fail when other processes hold
    more. `adapters`: the model's LoRA adapters by name (`AdapterSpec`), served on it."""
    from prefgen.models.adapters import engine_lora_kwargs
    from prefgen.models.embedded import resolve_model

    device = vllm_device(device, cpu_build)
    kwargs = dict(
        model=resolve_model(source),
        dtype=resolve_dtype(eng.dtype, device),
        max_model_len=eng.max_model_len,
        enforce_eager=eng.enforce_eager,
        tensor_parallel_size=eng.tensor_parallel_size,
    )
    kwargs.update(device_kwargs(eng, device))
    if eng.seed is not None:
        kwargs["seed"] = eng.seed
    kwargs.update(engine_lora_kwargs(adapters or {}, device))
    kwargs.update(eng.extra)
    return kwargs


def device_kwargs(eng: EngineConfig, device: str, environ=os.environ) -> dict:
    """Memory arguments by device, and on the CPU where the model runs. On the CPU the KV cache
    gets a fixed size: without one, vLLM reserves `gpu_memory_utilization` of the machine's RAM and
    refuses to start when other processes hold more than the rest.

    With one rank and unpinned threads, the CPU build runs the model inside vLLM's engine-core
    process (the `uni` executor) instead of a worker process of its own, which vLLM would start by
    spawn (a second import of torch and vLLM) and give one thread fewer than the machine has
    (`benchmarks/engine_start.py`). vLLM's CPU platform keeps `uni` only when
    VLLM_ENABLE_V1_MULTIPROCESSING is 0, as `placement.actor_options` sets it in engine actors;
    elsewhere the kwargs say what vLLM will do (its own worker process)."""
    if device == "gpu":
        return {"gpu_memory_utilization": eng.gpu_memory_utilization}
    kwargs: dict = {"kv_cache_memory_bytes": int(eng.cpu_kv_cache_gib * 2**30)}
    if (eng.tensor_parallel_size == 1 and environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
            and environ.get("VLLM_CPU_OMP_THREADS_BIND") == "nobind"):
        kwargs["distributed_executor_backend"] = "uni"
    return kwargs


def in_engine_core(kwargs: dict, environ=os.environ) -> bool:
    """Whether these engine arguments put the model in vLLM's engine core and that core in this
    process (a blocking engine's): then `stepped.SteppedLLM` serves the pipeline's calls, not `AsyncLLM`."""
    return kwargs.get("distributed_executor_backend") == "uni" and environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"


CPU_THREADS_ENV = "PREFGEN_CPU_THREADS"  # engine.cpu_threads, or the driver's OMP_NUM_THREADS, for the actor


def cpu_threads(environ=os.environ, cores: int | None = None) -> int:
    """Threads the CPU build computes with in this engine actor: what the driver asked for
    (`CPU_THREADS_ENV`), else every core this process may run on. Ray sets OMP_NUM_THREADS in an
    actor to its logical CPUs (1 for an engine actor by default), which left the model one core of
    a 2-core laptop while the machine's other core idled."""
    asked = environ.get(CPU_THREADS_ENV, "")
    if asked.strip():
        return max(1, int(asked))
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores


def use_cpu_threads(device: str, cpu_build: bool | None = None) -> int | None:
    """Before an engine starts in an actor: on the CPU build, set OMP_NUM_THREADS (which vLLM's
    engine-core process inherits) and torch's threads (for a model run in this process) to
    `cpu_threads()`; returns the number, or None where vLLM computes on a GPU."""
    if vllm_device(device, cpu_build) != "cpu" or CPU_THREADS_ENV not in os.environ:
        return None  # not on the CPU build, or not in an engine actor (`placement.actor_options` sets it)
    import torch

    threads = cpu_threads()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return threads
