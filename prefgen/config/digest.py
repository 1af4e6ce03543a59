"""The config digest: what a run's output depends on, so a resume continues only a run it matches.

A killed run resumes when the new config gives the same digest; otherwise it is refused (and
`--overwrite` starts fresh). The digest therefore covers what shapes the output and nothing else:
- the roles (generators, evolution, judge, jury) with their sampling, prompts and rules, each
  role's model by what it is (its kind, source and the engine keys that change outputs,
  `models/declarations.py`, `ENGINE_OUTPUT_KEYS`, and the content hash of the LoRA adapter it
  runs on), not by the name it is declared under;
- pairing and the run seed;
- the text of every prompt sent: generator system prompts and templates, the evolution template
  and criteria (all loaded into the config from built-ins or files), and each LLM judge's prompt
  and answer schema per aspect, rendered from its rubric (built-in or its own) around
  placeholders, so an edited rubric file or built-in judge prompt changes the digest too; and the
  pair check's prompt when pairs are verified (`pairing.verification`).
Left out: `input.*` (the rows it yields are checked on their own, by the input digest of their
ids; a row's id covers its prompt, conversation and provided responses with their columns, so
`input.field`, `input.responses` and `input.preference` change it when they change what is judged), `output.*`, `ray.*`, models no role uses, evolution's settings while it is disabled, and
the engine keys that only place an engine (`ENGINE_PLACEMENT_KEYS`).

Each role says its own part (`shaping`, and `prompts_sent` for the prompts it renders, in
`roles/<kind>/config.py`); this module adds each role's model by what it is and joins the parts.

Besides the digest, `digest_parts` maps each dotted key of that content to a short hash of its
value; the manifest keeps it, so a refused resume names the keys that differ (`differing_keys`).
"""

from __future__ import annotations

import hashlib
import json

from prefgen.models.declarations import EndpointModel
from prefgen.models.settings import ENGINE_OUTPUT_KEYS
from prefgen.config.checks import verifies
from prefgen.roles.verify.config import VerificationConfig


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def model_identity(model, adapter: str | None = None) -> dict:
    """A model as the digest sees it: kind, source and the engine keys that change outputs, and the
    content hash of the LoRA `adapter` the role runs on (not its path); an endpoint by what answers
    (URL and model), not by how it is called (key source, limits, prices)."""
    if isinstance(model, EndpointModel):
        return {"kind": model.kind, "base_url": model.base_url, "model": model.model}
    engine = model.engine.model_dump(mode="json", include=set(ENGINE_OUTPUT_KEYS))
    identity = {"kind": model.kind, "source": model.source, "engine": engine}
    if adapter is not None:
        identity["adapter"] = model.adapters[adapter].content_hash
    return identity


def shaping_content(cfg) -> dict:
    """What of a `PipelineConfig` shapes its output (see the module docstring), as plain data: each
    role's part is the role's to say (`RoleConfig.shaping`, `prompts_sent`), its model is added here."""
    content = cfg.model_dump(mode="json", include={"pairing", "seed"})
    content |= {"generators": [], "evolution": {"enabled": False}, "jury": [], "prompts": {}}  # filled below
    for key, role in cfg.roles_by_key():
        model = cfg.model_of(role)
        part = role.shaping(model) | {"model": model_identity(model, role.adapter)}
        section, _, index = key.partition(".")
        if index:  # generators.N, jury.N: in order
            content[section].append(part)
        else:
            content[section] = part
        prompts = role.prompts_sent(model)
        if prompts is not None:
            content["prompts"][key] = prompts
    if verifies(cfg):  # the pair check's prompt, rendered like the judges'
        content["prompts"]["pairing.verification"] = VerificationConfig.prompt_sent()
    return content


def flatten(node, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value for every leaf; a list of plain values is one leaf."""
    if isinstance(node, dict) and node:
        items = [(str(k), v) for k, v in node.items()]
    elif isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        items = [(str(i), v) for i, v in enumerate(node)]
    else:
        return {prefix: node}
    flat: dict[str, object] = {}
    for name, value in items:
        flat.update(flatten(value, f"{prefix}.{name}" if prefix else name))
    return flat


def config_digest(cfg) -> str:
    return _hash(shaping_content(cfg))[:16]


def digest_parts(cfg) -> dict[str, str]:
    """Dotted key -> short hash of its value, for every leaf the digest covers."""
    return {key: _hash(value)[:12] for key, value in sorted(flatten(shaping_content(cfg)).items())}


def differing_keys(before: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """The keys whose values differ between two runs' parts (added and removed keys included)."""
    before = before or {}
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))


def describe_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
