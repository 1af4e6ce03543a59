"""A small real LoRA adapter for a base model folder, written in PEFT's layout with torch and
safetensors (peft is not a dependency): `adapter_config.json` (peft_type LORA, r, lora_alpha,
target_modules) and `adapter_model.safetensors` with
`base_model.model.<module>.lora_A.weight` [r, in] and `lora_B.weight` [out, r] per targeted module.

Seeded, and B is not zero (PEFT initialises it to zero, which would change nothing): served by vLLM,
the adapter's answers differ from the base's.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefgen.models.adapters import CONFIG_FILE, WEIGHTS_FILE, base_shapes

# A tiny two-layer Llama's weight shapes: a base folder of the right layout for the adapter checks
HIDDEN, KV = 32, 16
TINY_BASE = {"model.embed_tokens.weight": [100, HIDDEN]}
for _i in range(2):
    TINY_BASE |= {f"model.layers.{_i}.self_attn.q_proj.weight": [HIDDEN, HIDDEN],
                  f"model.layers.{_i}.self_attn.k_proj.weight": [KV, HIDDEN],
                  f"model.layers.{_i}.self_attn.v_proj.weight": [KV, HIDDEN],
                  f"model.layers.{_i}.self_attn.o_proj.weight": [HIDDEN, HIDDEN]}


def write_tiny_base(folder: Path, shapes: dict = TINY_BASE) -> Path:
    """A base model folder holding zero weights of `shapes` (a safetensors file and a config.json)."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    save_file({name: np.zeros(shape, dtype=np.float32) for name, shape in shapes.items()},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    return folder


def write_lora_adapter(folder: Path, base: Path, rank: int = 8, modules: tuple[str, ...] = ("q_proj", "v_proj"),
                       seed: int = 0, std: float = 0.1, alpha: int = 16) -> Path:
    """Write an adapter of `base` (a Hugging Face folder) into `folder`; returns `folder`."""
    import torch
    from safetensors.torch import save_file

    shapes = base_shapes(Path(base))
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (out_features, in_features) in sorted((n, s) for n, s in shapes.items()
                                                     if n.removesuffix(".weight").rsplit(".", 1)[-1] in modules):
        module = name.removesuffix(".weight")
        tensors[f"base_model.model.{module}.lora_A.weight"] = torch.randn(rank, in_features, generator=gen) * std
        tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn(out_features, rank, generator=gen) * std
    if not tensors:
        raise ValueError(f"{base} has no modules named {modules}")
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / WEIGHTS_FILE))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha,
              "target_modules": list(modules), "lora_dropout": 0.0, "bias": "none", "modules_to_save": None,
              "base_model_name_or_path": str(base)}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return folder
