"""Reading the config file: YAML text to a mapping, command-line overrides by dotted key, and
pydantic's validation errors in words that name the file and the dotted key.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from prefgen.models.declarations import MODEL_KINDS


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the file and the key."""


def format_errors(source: str, err: ValidationError) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc, msg = list(e["loc"]), e["msg"].removeprefix("Value error, ")
        if loc[:1] == ["models"] and len(loc) >= 3 and loc[2] in MODEL_KINDS:
            del loc[2]  # the union's tag: `models.a.source`, not `models.a.vllm.source`
        if loc[:1] == ["models"] and e["type"] == "union_tag_invalid":
            loc.append("kind")
            msg = f"unknown model kind {e['ctx']['tag']!r}; known: {', '.join(MODEL_KINDS)}"
        key = ".".join(str(p) for p in loc)
        lines.append(f"  {key}: {msg}" if key else f"  {msg}")  # checks across keys name their key
    return "\n".join(lines)


def read_yaml(path: str | Path) -> tuple[dict, str]:
    """The mapping in the YAML file at `path`, and the file's name for messages."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data, str(path)


def apply_overrides(data: dict, overrides: dict, source: str) -> None:
    """Set each dotted key of `overrides` in `data` (given on the command line), sections made as needed."""
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for depth, key in enumerate(parents):
            if node.get(key) is None:  # absent, or a section left empty (`ray:` alone reads as null)
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                where = ".".join(parents[:depth + 1])
                raise ConfigError(f"{source}: {where}: expected a mapping of keys, got {type(node).__name__}; "
                                  f"it cannot take {dotted} (given on the command line)")
        node[leaf] = value
