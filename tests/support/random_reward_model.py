"""A reward model for tests only: the embedded SmolLM2-135M-Instruct with a fresh, random scoring head.

`random_reward_model(seed)` builds a `LlamaForSequenceClassification` (one output label) from the
embedded model's converted folder, its `score` head initialised from `seed` (so every build is
the same), and caches it under the prefgen cache. The head was never trained: its scores are
noise. It exercises the reward-model path (config, engine, task, pairing) and nothing else; it
says nothing about which response is better.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from prefgen.models.embedded import cache_dir, resolve_model, save_model_folder

BASE = "embedded://SmolLM2-135M-Instruct"


def random_reward_model(seed: int = 0) -> str:
    """The folder of the test reward model for `seed`, built once (about 10 s) and cached."""
    target = cache_dir() / "models" / f"SmolLM2-135M-Instruct-random-reward-seed{seed}"
    if (target / "config.json").exists():
        return str(target)
    base = resolve_model(BASE)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            _build(base, target, seed)
    return str(target)


def _build(base: str, target: Path, seed: int) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(seed)  # the only weights not loaded from `base` are the score head's
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.bfloat16)
    model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    save_model_folder(model, tokenizer, target)
