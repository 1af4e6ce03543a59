"""Model families, for the self-preference check: which judges share a lineage with a candidate writer.

A judge tends to favour text written by its own model, and by its siblings too (the same base
trained at another size, or tuned for chat). `model_family` names the family of a model source:
- a hub id (`Qwen/Qwen2.5-7B-Instruct`): its base name with size and variant parts removed
  (`qwen2.5`); the organisation is left out, so re-uploads (`unsloth/...`), local copies and
  the embedded model match their original;
- a local folder: the family of the `_name_or_path` in its own `config.json`, else its
  `model_type`, else the family of the folder's name;
- `embedded://SmolLM2-135M-Instruct`: `smollm2`.
`self_preference_warnings` is the rule `PipelineConfig.warnings()` applies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prefgen.models.embedded import EMBEDDED_SCHEME

# A name part from which on the rest only says size, tuning or packaging.
_SIZE = re.compile(r"^(\d+x)?\d+(\.\d+)?[bmk]$|^a\d+(\.\d+)?b$", re.I)
_VARIANTS = {
    "instruct", "chat", "it", "base", "hf", "sft", "dpo", "rlhf", "gguf", "awq", "gptq", "fp8", "int4", "int8",
    "bnb", "4bit", "8bit", "mini", "small", "medium", "large", "tiny", "nano", "xl", "coder", "math", "vl",
    "preview", "latest", "distill", "turbo", "pt",
}
_VERSION = re.compile(r"^v\d+(\.\d+)*$", re.I)


def family_of_name(name: str) -> str:
    """`Qwen2.5-7B-Instruct` -> `qwen2.5`; `gemma-2-9b-it` -> `gemma-2`; `Mistral-7B-Instruct-v0.3` -> `mistral`."""
    parts = [p for p in re.split(r"[-_ ]", name.strip().lower()) if p]
    kept = []
    for part in parts:
        if _SIZE.match(part) or part in _VARIANTS or _VERSION.match(part):
            break
        kept.append(part)
    return "-".join(kept or parts[:1])


def _local_family(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    origin = config.get("_name_or_path") if isinstance(config, dict) else None
    if isinstance(origin, str) and origin.strip(" ./"):
        return family_of_name(origin.rstrip("/").rsplit("/", 1)[-1])
    if isinstance(config, dict) and isinstance(config.get("model_type"), str):
        return config["model_type"].lower()
    return family_of_name(folder.resolve().name)


def model_family(source: str) -> str:
    """The family of a model source: hub id, local folder or embedded://NAME."""
    if source.startswith(EMBEDDED_SCHEME):
        return family_of_name(source[len(EMBEDDED_SCHEME):])
    path = Path(source).expanduser()
    if path.is_dir():
        return _local_family(path)
    return family_of_name(source.rstrip("/").rsplit("/", 1)[-1])


def self_preference_warnings(judges: list[tuple[str, str]], writers: list[str]) -> list[str]:
    """One warning per judge (name, model) whose model, or its family, also writes candidates."""
    families = {}
    for writer in writers:
        families.setdefault(model_family(writer), []).append(writer)
    warnings = []
    for name, model in judges:
        if model in writers:
            warnings.append(
                f"judge '{name}' uses {model}, which also writes candidates: it may favour its own outputs "
                "(self-preference); use a judge of another model family or add a jury"
            )
        elif model_family(model) in families:
            kin = ", ".join(sorted(set(families[model_family(model)])))
            warnings.append(
                f"judge '{name}' uses {model}, of the same family ({model_family(model)}) as the candidate "
                f"writer(s) {kin}: it may favour its family's outputs (self-preference); use a judge of "
                "another model family or add a jury"
            )
    return warnings
