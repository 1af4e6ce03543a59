"""The pure part of on-policy rounds: which generator is the policy, which model it trains, each
round's config, and each round's figures from its rows.

Configs here are the validated config dumped as a dict (`PipelineConfig.model_dump(mode="json")`,
as `prefgen config` prints it and the manifest records it): every generator names a declared model.
"""

from __future__ import annotations

import copy
from statistics import fmean


class RoundsError(ValueError):
    """Rounds or training that cannot go on; the message says why and what to change. `code` is the
    exit code (2: bad input or config; a round's run that stopped passes its own on)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def adapter_name(round_no: int) -> str:
    """The name the adapter trained in round `round_no` is declared under in later rounds."""
    return f"round{round_no}"


def policy_generator(config: dict, name: str | None = None) -> dict:
    """The generator whose candidates are the policy's: the one named, else the config's only one."""
    generators = config.get("generators") or []
    names = [g["name"] for g in generators]
    if name is not None:
        if name not in names:
            raise RoundsError(f"--policy {name}: no generator of that name; the config's generators: "
                              f"{', '.join(names) or 'none'}")
        return generators[names.index(name)]
    if len(generators) == 1:
        return generators[0]
    if not generators:
        raise RoundsError("the config has no generators: on-policy rounds need the policy to write the candidates")
    raise RoundsError(f"the config has {len(generators)} generators ({', '.join(names)}): name the policy "
                      "with --policy NAME")


def policy_model(config: dict, generator: dict) -> tuple[str, dict]:
    """The policy generator's model (name, declaration); it must be a vLLM model (adapters are served there)."""
    name = generator["model"]
    model = config["models"][name]
    if model.get("kind", "vllm") != "vllm":
        raise RoundsError(f"generators.{generator['name']}: the policy runs on model {name!r} of kind "
                          f"{model.get('kind')}; a trained adapter is served by a kind vllm model only")
    return name, model


def base_source(config: dict, policy: str | None = None) -> str:
    """The base model DPO trains an adapter of: the policy's model (the one named, or the model every
    generator runs on)."""
    generators = config.get("generators") or []
    if policy is not None or len({g["model"] for g in generators}) == 1:
        _, model = policy_model(config, policy_generator(config, policy) if policy else generators[0])
        return model["source"]
    if not generators:
        raise RoundsError("the run's config has no generators: give the base model with --base SOURCE")
    models = {g["model"]: config["models"][g["model"]] for g in generators}
    sources = {m.get("source") or f"{name} ({m.get('kind')})" for name, m in models.items()}
    if len(sources) == 1 and all(m.get("kind", "vllm") == "vllm" for m in models.values()):
        return sources.pop()
    raise RoundsError(f"the run's generators run on {len(sources)} models ({', '.join(sorted(sources))}): name "
                      "the policy with --policy NAME, or the base with --base SOURCE")


def round_config(config: dict, round_no: int, folder: str, policy: str, previous_adapter: str | None) -> dict:
    """Round `round_no`'s config: `config` writing to `folder`/output, its policy generator on the
    adapter trained in the previous round (declared on the policy's model as `round<k-1>`), or as
    `config` has it in round 1 (no previous adapter)."""
    cfg = copy.deepcopy(config)
    cfg["output"] = {**cfg.get("output", {}), "path": f"{folder.rstrip('/')}/output", "overwrite": False}
    if previous_adapter is None:
        return cfg
    generator = policy_generator(cfg, policy)
    model_name, model = policy_model(cfg, generator)
    name = adapter_name(round_no - 1)
    model["adapters"] = {**(model.get("adapters") or {}), name: {"path": previous_adapter, "rank": None}}
    generator["adapter"] = name
    return cfg


def sampled_adapter(config: dict, policy: str) -> str | None:
    """The folder of the adapter the policy generator samples in `config` (None: the base)."""
    generator = policy_generator(config, policy)
    if not generator.get("adapter"):
        return None
    _, model = policy_model(config, generator)
    return model["adapters"][generator["adapter"]]["path"]


def _mean(values: list[float]) -> float | None:
    return round(fmean(values), 4) if values else None


def policy_ratings(rows: list[dict], policy: str) -> dict[str, float]:
    """Prompt id -> the mean rating of the policy's own (generated, rated) candidates on it. `rows`
    are a run's pair and reject rows: each carries its prompt's candidates (a prompt's several pairs
    carry the same ones, counted once)."""
    seen, per_prompt = set(), {}
    for row in rows:
        for cand in row.get("candidates") or []:
            if (cand["candidate_id"] in seen or cand["generator"] != policy or cand["origin"] != "generated"
                    or cand["rating"] is None):
                continue
            seen.add(cand["candidate_id"])
            per_prompt.setdefault(row["id"], []).append(cand["rating"])
    return {prompt: fmean(r) for prompt, r in per_prompt.items()}


def round_figures(pairs: list[dict], rejects: list[dict], ratings: dict[str, float]) -> dict:
    """One round's figures: pairs, rejects, the mean chosen and rejected ratings, the policy's mean
    rating (`ratings`: `policy_ratings` of the round's rows)."""
    return {"pairs": len(pairs), "rejects": len(rejects),
            "mean_chosen_rating": _mean([p["chosen_rating"] for p in pairs]),
            "mean_rejected_rating": _mean([p["rejected_rating"] for p in pairs]),
            "policy_prompts_rated": len(ratings), "policy_mean_rating": _mean(list(ratings.values()))}


def versus_previous(current: dict[str, float], previous: dict[str, float] | None) -> dict | None:
    """The policy's mean rating this round and last round on the prompts rated in both (None in round 1)."""
    if previous is None:
        return None
    shared = sorted(current.keys() & previous.keys())
    now, before = _mean([current[p] for p in shared]), _mean([previous[p] for p in shared])
    return {"prompts": len(shared), "policy_mean_rating": now, "previous_policy_mean_rating": before,
            "change": round(now - before, 4) if shared else None}


def summary_line(entry: dict) -> str:
    """A round's summary in one line."""
    def num(value):
        return "n/a" if value is None else f"{value:.2f}"

    line = (f"round {entry['round']}: {entry['pairs']} pairs, {entry['rejects']} rejects, mean chosen rating "
            f"{num(entry['mean_chosen_rating'])}, policy mean rating {num(entry['policy_mean_rating'])} over "
            f"{entry['policy_prompts_rated']} prompts")
    vs = entry.get("vs_previous")
    if vs:
        line += (f"; vs round {entry['round'] - 1} on the {vs['prompts']} prompts rated in both: "
                 f"{num(vs['policy_mean_rating'])} vs {num(vs['previous_policy_mean_rating'])}")
    return line
