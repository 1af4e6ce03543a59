"""The settings declarations and roles are built of: strict models (`Strict`: an unknown key is
an error), names used in ids and file names (`check_name`), one engine's settings
(`EngineConfig`, its keys sorted into placement and output) and a role's sampling
(`SamplingConfig`). Model declarations (`declarations.py`) and role configs (`roles/<kind>/config.py`)
import them from here.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Names that end up in ids and file names (models, generators, judges): `<row>/<generator>/<k>`,
# `judge:<name>`, `_stats/<model>-*.json`. No '/', ':', '#', spaces or other punctuation.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise ValueError(f"a {what} name is 1 to 64 letters, digits, '.', '_' or '-' (ASCII), starting with a "
                         f"letter or digit, as it is used in ids and file names; got {value!r}")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class EngineConfig(Strict):
    """How one vLLM engine is built and placed; one engine per replica."""

    dtype: str = Field(
        "auto",
        description="Weights dtype (bfloat16, float16, float32, or auto). auto: the checkpoint's own on a GPU; on a "
        "CPU bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX), else float32, which such CPUs run "
        "about twice as fast.",
    )
    max_model_len: int = Field(4096, gt=0, description="Context length; longer prompts are rejected before the engine.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica (tensor parallelism, one node).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    enforce_eager: bool = Field(True, description="Skip CUDA graph capture: faster start, slower decode.")
    replicas: int | tuple[int, int] = Field(
        1,
        description="Engine actors serving this model's stage: a number, or [min, max] for a pool that "
        "grows with the work (the autoscaler adds nodes for it).",
    )
    gpus_per_replica: float | None = Field(
        None,
        gt=0,
        description="GPUs one replica holds; none: tensor_parallel_size. Below 1 (e.g. 0.5) shares a GPU "
        "with another engine; gpu_memory_utilization must then fit the share.",
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto: GPU if the Ray cluster has GPUs, else vLLM's CPU build."
    )
    accelerator_type: str | None = Field(
        None,
        description="GPU model every replica must land on, as Ray names it (A10G, L4, A100, H100, ...); "
        "none: any GPU. GPU stages only.",
    )
    cpus_per_replica: float = Field(1.0, gt=0, description="Logical Ray CPUs each engine actor holds.")
    cpu_kv_cache_gib: float = Field(2.0, gt=0, description="KV cache size of an engine on the CPU build, GiB (passed as kv_cache_memory_bytes).")
    cpu_threads: int | None = Field(
        None,
        gt=0,
        description="Threads the CPU build computes with; none: OMP_NUM_THREADS of the driver's environment if set, "
        "else every core of the node the engine runs on (Ray's own default would be cpus_per_replica).",
    )
    batch_size: int = Field(
        64, ge=1, description="Instructions per batch sent to one engine actor. A batch runs its roles one after "
        "another, so the batches in flight drift apart into different roles, and on a CPU a step that holds one "
        "batch's long prompts and another's decoding is slow: 48 rows took 295 s of engine time as one batch "
        "against 340 s as three of 16 (README, Benchmarks). Larger batches commit less often.",
    )
    batches_in_flight: int = Field(
        4,
        ge=1,
        description="Batches one engine actor works on at once; their requests share the engine's queue, so "
        "it does not drain at the end of each batch. batch_size x batches_in_flight should cover the "
        "engine's max_num_seqs.",
    )
    seed: int | None = Field(
        None,
        description="Seeds the engine once (vLLM's CPU build rejects per-request seeds).",
    )
    extra: dict = Field(default_factory=dict, description="Further keyword arguments for vllm.LLM.")

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        if self.accelerator_type and self.device == "cpu":
            raise ValueError(f"accelerator_type {self.accelerator_type!r} needs device gpu or auto, not cpu")
        low, high = self.replica_range
        if not 1 <= low <= high:
            raise ValueError(f"replicas: {self.replicas!r} must be a number >= 1 or [min, max] with 1 <= min <= max")
        share = self.gpus_per_replica
        if share is not None:
            if share < 1 and self.tensor_parallel_size > 1:
                raise ValueError("gpus_per_replica: a fraction of a GPU holds one rank; tensor_parallel_size must be 1")
            if share >= 1 and share != self.tensor_parallel_size:
                raise ValueError(f"gpus_per_replica: {share:g} whole GPUs must equal tensor_parallel_size "
                                 f"({self.tensor_parallel_size})")
            if share < 1 and self.gpu_memory_utilization > share + 1e-9:
                raise ValueError(f"gpu_memory_utilization: {self.gpu_memory_utilization:g} of the GPU's memory does "
                                 f"not fit a replica holding {share:g} of it; set it to at most {share:g}")
        return self

    @property
    def replica_range(self) -> tuple[int, int]:
        return (self.replicas, self.replicas) if isinstance(self.replicas, int) else tuple(self.replicas)


# Every engine key is on one side, decided here and nowhere else (`digest.py` reads these):
# - placement: where an engine runs, how many, how big and how fast; a killed run may resume with
#   other values (more replicas, another GPU type, a bigger batch). They change no prompt, no
#   sampling setting and no weight; a sampled answer differs between runs anyway.
# - output: what the model computes, so what it writes; a resume with other values is refused.
#   `dtype` and `seed` change the numbers, `max_model_len` which prompts are rejected as too long,
#   and `extra` may hold any vLLM argument (quantization, a chat template...), so all of it counts.
ENGINE_PLACEMENT_KEYS = frozenset({
    "tensor_parallel_size", "gpu_memory_utilization", "enforce_eager", "replicas", "gpus_per_replica", "device",
    "accelerator_type", "cpus_per_replica", "cpu_kv_cache_gib", "cpu_threads", "batch_size", "batches_in_flight",
})
ENGINE_OUTPUT_KEYS = frozenset({"dtype", "max_model_len", "seed", "extra"})
_unsorted = set(EngineConfig.model_fields) ^ (ENGINE_PLACEMENT_KEYS | ENGINE_OUTPUT_KEYS)
if _unsorted or ENGINE_PLACEMENT_KEYS & ENGINE_OUTPUT_KEYS:  # a new engine key must be put on one side
    raise AssertionError(f"engine keys not sorted into placement or output: {sorted(_unsorted)}")


class SamplingConfig(Strict):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, gt=0)
    repetition_penalty: float = Field(
        1.0,
        gt=0,
        description="vLLM's repetition penalty: above 1 makes tokens already in the prompt or the answer less "
        "likely, which stops a small model looping on a phrase until max_tokens; 1.0 is off. Endpoint "
        "models send it as the extra body field `repetition_penalty` (vLLM's OpenAI server takes it), "
        "only when it is not 1.0.",
    )
