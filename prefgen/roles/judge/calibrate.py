"""Judge validity: run the configured judge on labelled preference pairs and measure agreement.

`prefgen calibrate CONFIG --pairs FILE` reads pairs a person (or a trusted source) labelled, in
TRL's preference shape: one JSON object per line with `prompt`, `chosen` and `rejected`, each a
string or a message list (read by `input/rows.py`, as a run reads `input.preference` rows). The judge (the config's `judge`, or a juror by name) rates both answers
exactly as in a run (same prompts, orders, retries), then the figures say how often it agrees with
the labels, with and without ties, and how often its verdict survives a change of order. With the
pair check on (`pairing.verification`, a generative judge), the judge also compares each labelled
chosen with its rejected in both orders, as a run checks its pairs (`roles/verify/task.py`), and the same
figures are given for those verdicts (`verdicts.calibration_verdict_figures`). A judge is chosen on
that evidence, before it labels a whole dataset.

The logic (reading, rows, figures) is pure; `calibrate` starts one engine in this process.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefgen.config import PipelineConfig
from prefgen.models.declarations import EndpointModel, RewardModel
from prefgen.roles.judge.config import JudgeConfig
from prefgen.input.rows import Rejected, conversation_text, read_prompt, response_text
from prefgen.schema import candidate
from prefgen.roles.verify.verdicts import calibration_verdict_figures


class PairsError(ValueError):
    """A labelled-pairs file that cannot be used; names the file and line."""


def _read_pair(data: dict, where: str) -> dict:
    """prompt (as the judge sees it), messages, chosen, rejected of one labelled pair, read as a run
    reads a preference row (`input/rows.py`): the prompt a string or a conversation, each answer a
    string or a message list whose last turn is the assistant's."""
    try:
        messages = read_prompt(data, "prompt")
    except Rejected as exc:
        raise PairsError(f"{where}: 'prompt' must be a non-empty string or message list ({exc.detail})") from None
    pair = {"prompt": conversation_text(messages), "messages": messages}
    for key in ("chosen", "rejected"):
        try:
            pair[key] = response_text(data[key], key)
        except Rejected as exc:
            raise PairsError(f"{where}: '{key}' must be a non-empty string or message list ({exc.detail})") from None
    return pair


def read_labelled_pairs(path: str | Path, limit: int | None = None) -> list[dict]:
    """[{id, prompt, chosen, rejected}] from a JSONL file; a bad line is an error naming it."""
    pairs = []
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise PairsError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PairsError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise PairsError(f"{where}: expected an object with prompt, chosen, rejected")
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in data]
        if missing:
            raise PairsError(f"{where}: missing {', '.join(missing)}")
        pairs.append({"id": f"pair{number}", **_read_pair(data, where)})
        if limit and len(pairs) >= limit:
            break
    if not pairs:
        raise PairsError(f"{path}: no labelled pairs")
    return pairs


def calibration_rows(pairs: list[dict], source: str) -> list[dict]:
    """Work rows whose two candidates are the labelled answers (ids end in /chosen, /rejected)."""
    return [
        {"id": p["id"], "instruction": p["prompt"], "messages": p.get("messages"), "source": source, "line": i, "output_tokens": 0,
         "reject_reason": None, "reject_detail": None,
         "candidates": [candidate(candidate_id=f"{p['id']}/{side}", text=p[side], model="labelled",
                                  generator=side, origin="provided") for side in ("chosen", "rejected")]}
        for i, p in enumerate(pairs, start=1)
    ]


def _verdict(chosen: float | None, rejected: float | None) -> str | None:
    if chosen is None or rejected is None:
        return None
    return "agree" if chosen > rejected else "tie" if chosen == rejected else "disagree"


def calibration_figures(rows: list[dict]) -> dict:
    """Agreement with the labels (ties excluded, and counted as half), per-order consistency and how
    often the answer shown first won a decided order."""
    verdicts, consistent, orders_judged, first_wins, decided_orders = [], 0, 0, 0, 0
    for row in rows:
        chosen, rejected = row["candidates"]
        verdicts.append(_verdict(chosen["rating"], rejected["rating"]))
        per_order: dict[tuple, dict[str, tuple[float, int]]] = {}
        for side, cand in (("chosen", chosen), ("rejected", rejected)):
            for j in cand["judgments"] or []:
                if j["rating"] is not None:
                    per_order.setdefault((j["judge"], j["aspect"], j["permutation"]), {})[side] = (j["rating"], j["position"])
        order_verdicts = []
        for cell in per_order.values():
            if len(cell) == 2:
                (c, c_pos), (r, _r_pos) = cell["chosen"], cell["rejected"]
                order_verdicts.append(_verdict(c, r))
                if c != r and c_pos is not None:  # a reward model shows no order: no first-shown figure
                    decided_orders += 1
                    first_wins += (c > r) == (c_pos == 0)
        if len(order_verdicts) >= 2:
            orders_judged += 1
            consistent += len(set(order_verdicts)) == 1
    rated = [v for v in verdicts if v is not None]
    decided = [v for v in rated if v != "tie"]
    share = lambda num, den: round(num / den, 3) if den else None  # noqa: E731
    return {
        "pairs": len(rows),
        "rated": len(rated),
        "agreement": share(sum(v == "agree" for v in decided), len(decided)),
        "agreement_ties_half": share(sum(v == "agree" for v in rated) + 0.5 * rated.count("tie"), len(rated)),
        "ties": share(rated.count("tie"), len(rated)),
        "order_consistency": share(consistent, orders_judged),
        "first_shown_wins": share(first_wins, decided_orders),
        "orders_compared": orders_judged,
    }


def figure_lines(fig: dict) -> list[str]:
    pct = lambda v: "n/a" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    lines = [
        f"labelled pairs:     {fig['pairs']} ({fig['rated']} rated on both sides)",
        f"agreement:          {pct(fig['agreement'])} of decided pairs (chance 50%); "
        f"{pct(fig['agreement_ties_half'])} counting ties as half",
        f"ties:               {pct(fig['ties'])}",
        f"same verdict in every order: {pct(fig['order_consistency'])} of {fig['orders_compared']} pairs"
        + (" (one order per pair: a reward model, or permutations 1)" if not fig["orders_compared"] else ""),
        f"answer shown first won:      {pct(fig['first_shown_wins'])} of decided orders (unbiased: 50%)",
    ]
    if "verified_pairs" not in fig:
        return lines + ["pair check:         off (pairing.verification, or a reward-model judge)"]
    return lines + [
        f"pair check, both orders name the label's chosen: {pct(fig['verdict_agreement'])} of "
        f"{fig['verified_pairs']} pairs with both verdicts",
        f"pair check, same verdict in both orders:        {pct(fig['verdict_order_consistency'])}",
        f"pair check, answer shown first won:             {pct(fig['verdict_first_shown_wins'])} of verdicts "
        "(unbiased: 50%)",
    ]


def check_pairs(cfg: PipelineConfig, judge: JudgeConfig, rows: list[dict], engine) -> dict:
    """The pair check on the labelled pairs (labelled chosen against labelled rejected, whatever the
    ratings), when a run would check pairs and the judge answers in words; {} otherwise."""
    from prefgen.config.checks import verifies
    from prefgen.roles.plan import verify_task

    if not verifies(cfg) or isinstance(cfg.model_of(judge), RewardModel):
        return {}
    verify_task(cfg, judge).run(rows, engine, pairs_of=lambda row: [tuple(row["candidates"])])
    return calibration_verdict_figures(rows)


def pick_judge(cfg: PipelineConfig, name: str | None) -> JudgeConfig:
    if name is None:
        return cfg.judge
    for judge in cfg.judges:
        if judge.name == name:
            return judge
    raise PairsError(f"no judge named {name!r}; judges: {', '.join(j.name for j in cfg.judges)}")


def calibrate(cfg: PipelineConfig, pairs_path: str, judge_name: str | None = None, limit: int | None = None,
              log=print) -> dict:
    """Run the judge on the labelled pairs with one engine in this process; return the figures."""
    import os

    from prefgen.engines.engine import VllmEngine
    from prefgen.engines.placement import actor_options
    from prefgen.roles.plan import task_for
    from prefgen.roles.judge.reward import RewardEngine

    judge = pick_judge(cfg, judge_name)
    rows = calibration_rows(read_labelled_pairs(pairs_path, limit), str(pairs_path))
    model = cfg.model_of(judge)
    if isinstance(model, EndpointModel):
        from prefgen.engines.endpoint import BlockingEndpoint

        log(f"[prefgen] calibrating judge '{judge.name}' (endpoint {judge.model}: {model.model} at {model.base_url}) "
            f"on {len(rows)} labelled pairs")
        engine = BlockingEndpoint(model, judge.model)
        try:
            task_for(cfg, judge).run(rows, engine)
            checked = check_pairs(cfg, judge, rows, engine)
        finally:
            engine.close()
        return calibration_figures(rows) | checked
    device = model.engine.device if model.engine.device != "auto" else _local_device()
    os.environ.update(actor_options(model.engine, device)["runtime_env"]["env_vars"])
    scorer = isinstance(model, RewardModel)  # scores each answer once, through vLLM's pooling runner
    log(f"[prefgen] calibrating judge '{judge.name}' ({'reward model ' if scorer else ''}{model.source}) on "
        f"{len(rows)} labelled pairs, {device}")
    engine = RewardEngine(model.source, model.engine, device) if scorer else VllmEngine(
        model.source, model.engine, device, model.adapters)
    task_for(cfg, judge).run(rows, engine)
    return calibration_figures(rows) | check_pairs(cfg, judge, rows, engine)


def _local_device() -> str:
    try:
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"
