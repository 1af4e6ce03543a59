"""Counting: what each written batch reports, and the run summary built from those reports.

A batch's counts are computed where it is written (`batch_counts`), committed by the driver,
and summed into a `RunSummary`, whose lines end a run and whose fields land in the manifest.
Judge health (`prefgen.report.health`) travels the same way: summable statistics per batch, figures
and warnings computed there from the sums; this module only renders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from prefgen.engines.endpoint_rules import cost
from prefgen.engines.step_log import combined
from prefgen.report.health import add_health, batch_health, health_figures, health_warnings
from prefgen.report.health_text import health_lines  # noqa: F401 - re-exported (card.py)
from prefgen.roles.verify.verdicts import VERIFY_COUNTS, verification_counts, verification_figures, verification_warnings

CANDIDATE_COUNTS = ("generated", "provided", "evolved", "rated", "unrated", "truncated")
ENDPOINT_COUNTS = ("requests", "retries", "failed", "schema_fallbacks", "top_ups", "prompt_tokens",
                   "completion_tokens", "answers_without_usage")
JUDGE_COUNTS = (
    "judgments", "not_applicable", "judge_calls", "parse_failures", "truncated_answers", "retries", "calls_given_up",
    "candidates_missing_orders", "uninformative_answers", "uninformative_calls",
)


def format_counts(counts: dict[str, int]) -> str:
    """`a=1, b=2`, in the dict's own order."""
    return ", ".join(f"{k}={v}" for k, v in counts.items())


def count_reasons(rejects: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rejects:
        counts[r["reason"]] = counts.get(r["reason"], 0) + 1
    return counts


def _parse_failures(j: dict) -> int:
    """Complete answers of one call that did not validate: the answers not kept, less the cut-off ones."""
    not_kept = j["attempts"] - (0 if j["error"] else 1)
    cut_not_kept = (j.get("truncated_answers") or 0) - (1 if j.get("truncated") and not j["error"] else 0)
    # an uninformative answer validated: asked again, it is no parse failure either
    empty_not_kept = (j.get("uninformative_answers") or 0) - (1 if j.get("uninformative") else 0)
    return not_kept - cut_not_kept - empty_not_kept


def judge_counts(candidates: list[dict]) -> dict[str, int]:
    """Judgments made, and per judge call: parse failures, retries, calls given up.

    An answer cut off at max_tokens counts under `truncated_answers` (kept or not), never as a
    parse failure: `parse_failures` are complete answers that did not validate."""
    judgments = [j for c in candidates for j in c["judgments"] or []]
    calls = {}
    for c in candidates:
        for j in c["judgments"] or []:
            # a joint call shows several candidates: count it once, by its row/judge/aspect/order
            call_of = j["order_seed"] if j["order_seed"] is not None else c["candidate_id"]
            calls[(c["candidate_id"].split("/")[0], j["judge"], j["aspect"], j["permutation"], call_of)] = j
    return {
        "judgments": len(judgments),
        "not_applicable": sum(bool(j["not_applicable"]) for j in judgments),
        "judge_calls": len(calls),
        "parse_failures": sum(_parse_failures(j) for j in calls.values() if j["raw"] is not None),
        "truncated_answers": sum(j.get("truncated_answers") or 0 for j in calls.values()),
        "retries": sum(j["attempts"] - 1 for j in calls.values()),
        "calls_given_up": sum(1 for j in calls.values() if j["error"]),
        # rated, but not in every order: position is not cancelled for them (see roles/judge/combine.py, combine_candidate)
        "candidates_missing_orders": sum(1 for c in candidates if c.get("failed_orders")),
        # answers that rated all alike with rationales that say nothing; calls that kept one after a retry
        "uninformative_answers": sum(j.get("uninformative_answers") or 0 for j in calls.values()),
        "uninformative_calls": sum(1 for j in calls.values() if j.get("uninformative")),
    }


def original_roots(candidates: list[dict], origin: str) -> set[str]:
    """The original answers of one origin ("generated" or "provided") behind these candidates: each
    such candidate, and the one each rewrite descends from (`<row>/<generator>/<k>/e1/e2` ->
    `<row>/<generator>/<k>`; a provided one is `<row>/input.<column>/<k>`), so that they count when
    `evolution.keep_original: false` left only their rewrites in the output."""
    roots = {re.sub(r"(/e\d+)+$", "", c["candidate_id"]) for c in candidates if c["origin"] in (origin, "evolved")}
    return {r for r in roots if (r.split("/") + [""])[1].startswith("input.") == (origin == "provided")}


def generated_roots(candidates: list[dict]) -> set[str]:
    return original_roots(candidates, "generated")


def batch_counts(key: str, rows: list[dict], pairs: list[dict], rejects: list[dict]) -> dict:
    """The report of one written batch: the ids it finished and what it holds."""
    candidates = [c for row in rows for c in row.get("candidates") or []]
    return {
        "key": key,
        "ids": sorted({r["id"] for r in pairs} | {r["id"] for r in rejects}),
        "paired_rows": len({p["id"] for p in pairs}),
        "pairs": len(pairs),
        "rejects": count_reasons(rejects),
        "output_tokens": sum(row.get("output_tokens") or 0 for row in rows),
        "generated": len(generated_roots(candidates)),
        "provided": len(original_roots(candidates, "provided")),
        "evolved": sum(c["origin"] == "evolved" for c in candidates),
        "rated": sum(c["rating"] is not None for c in candidates),
        "unrated": sum(c["rating"] is None for c in candidates),
        "truncated": sum(bool(c.get("truncated")) for c in candidates),
        **judge_counts(candidates),
        "verification": verification_counts(rows, pairs),
        "health": batch_health(rows, pairs),
    }


@dataclass
class RunSummary:
    output: str
    input_rows: int = 0
    paired_rows: int = 0
    pairs: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    candidates: dict[str, int] = field(default_factory=dict)
    judging: dict[str, int] = field(default_factory=dict)
    verification: dict[str, int] = field(default_factory=dict)  # the pair check's counts (verdicts.VERIFY_COUNTS)
    warnings: list[str] = field(default_factory=list)
    output_tokens: int = 0
    attempt_tokens: int = 0  # generated by this attempt (the rest by earlier ones)
    stages: dict[str, dict] = field(default_factory=dict)  # per engine stage
    roles: dict[str, dict] = field(default_factory=dict)  # per role (generate:<name>, evolve, judge:<name>)
    rows_skipped: int = 0  # finished by an earlier attempt of this run
    mode: str = ""  # streaming or phased
    wall_seconds: float = 0.0
    config_digest: str = ""
    health_stats: dict = field(default_factory=dict)  # summed over batches (prefgen.report.health)
    health: dict = field(default_factory=dict)  # the figures of those sums
    health_warnings: list[str] = field(default_factory=list)
    endpoints: dict[str, dict] = field(default_factory=dict)  # per endpoint model: requests, retries, tokens, cost

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejects.values())

    @property
    def done_rows(self) -> int:
        return self.paired_rows + self.rejected_rows

    def add(self, counts: dict) -> None:
        self.paired_rows += counts["paired_rows"]
        self.pairs += counts["pairs"]
        self.output_tokens += counts["output_tokens"]
        for reason, n in counts["rejects"].items():
            self.rejects[reason] = self.rejects.get(reason, 0) + n
        for key in CANDIDATE_COUNTS:  # .get: commits written before a counter existed lack it
            self.candidates[key] = self.candidates.get(key, 0) + counts.get(key, 0)
        for key in JUDGE_COUNTS:
            self.judging[key] = self.judging.get(key, 0) + counts.get(key, 0)
        for key in VERIFY_COUNTS:
            self.verification[key] = self.verification.get(key, 0) + (counts.get("verification") or {}).get(key, 0)
        self.health_stats = add_health(self.health_stats, counts.get("health") or {})  # older reports: none
        self.health = health_figures(self.health_stats) | {"pair_verification": verification_figures(self.verification)}
        self.health_warnings = health_warnings(self.health) + verification_warnings(self.health["pair_verification"])

    def add_stage_stats(self, actor_stats: list[dict], plan: list[tuple[str, list[str]]]) -> None:
        """Sum this attempt's per-actor stats files: per engine stage (replicas, restarts, start,
        busy time) and per role (rows, requests, tokens, busy time, dropped outputs), in pipeline
        order. A replica is one Ray actor, however often Ray restarted it; a start that never
        became ready (killed or failed while loading) is counted, never summed."""
        named = [(st, st.get("actor") or f"file-{i}") for i, st in enumerate(actor_stats)]  # no Ray: one per file
        for name in dict.fromkeys(st["stage"] for st, _ in named):
            mine = [(st, actor) for st, actor in named if st["stage"] == name]
            self.stages.setdefault(name, {"replicas": 0, "restarts": 0, "unfinished_starts": 0, "engine_start_s": 0.0,
                                          "busy_s": 0.0, "output_tokens": 0, "roles": []})
            self.stages[name]["replicas"] += len({a for st, a in mine if st.get("ready", True)})
            self.stages[name]["restarts"] += len(mine) - len({a for _, a in mine})
            self.stages[name]["unfinished_starts"] += sum(not st.get("ready", True) for st, _ in mine)
        for st in actor_stats:
            if not st.get("ready", True):  # files from before `ready` existed were written when ready
                continue
            if st.get("endpoint"):
                self._add_endpoint(st["stage"].split("#")[0], st["endpoint"])
            agg = self.stages[st["stage"]]
            agg["engine_start_s"] = max(agg["engine_start_s"], st["engine_start_s"])
            agg["busy_s"] += st["busy_s"]
            for role, rs in st["roles"].items():
                agg["output_tokens"] += rs["output_tokens"]
                if role not in agg["roles"]:
                    agg["roles"].append(role)
                into = self.roles.setdefault(role, {"stage": st["stage"], "rows": 0, "requests": 0,
                                                    "output_tokens": 0, "busy_s": 0.0, "dropped": {}})
                for key in ("rows", "requests", "output_tokens", "busy_s"):
                    into[key] += rs[key]
                for reason, n in rs.get("dropped", {}).items():  # plain dicts: asdict() would garble a Counter
                    into["dropped"][reason] = into["dropped"].get(reason, 0) + n
        for name, agg in self.stages.items():  # the engines' widths where they were seen (`step_log.py`)
            steps = combined([st.get("engine_steps") for st in actor_stats if st["stage"] == name])
            if steps:
                agg["engine_steps"] = steps
        order = [name for name, _ in plan]
        role_order = [r for _, roles in plan for r in roles]
        self.stages = {name: self.stages[name] for name in order if name in self.stages}
        self.roles = {name: self.roles[name] for name in role_order if name in self.roles}
        for st in self.stages.values():  # stats files may list roles in any order: the plan's
            st["roles"] = [r for r in role_order if r in st["roles"]] + [r for r in st["roles"] if r not in role_order]

    def _add_endpoint(self, name: str, usage: dict) -> None:
        """Sum one actor's endpoint counts into the endpoint's; the cost follows the summed tokens."""
        into = self.endpoints.setdefault(name, {"model": usage["model"], "base_url": usage["base_url"],
                                                **dict.fromkeys(ENDPOINT_COUNTS, 0), "http_errors": {}, "cost": None})
        for key in ENDPOINT_COUNTS:
            into[key] += usage.get(key, 0)
        for status, n in usage.get("http_errors", {}).items():
            into["http_errors"][status] = into["http_errors"].get(status, 0) + n
        into["cost"] = cost(into["prompt_tokens"], into["completion_tokens"], usage.get("price_prompt_per_mtok"),
                            usage.get("price_completion_per_mtok"))

    def endpoint_lines(self) -> list[str]:
        lines = []
        for name, e in self.endpoints.items():
            errors = f", HTTP errors: {format_counts(e['http_errors'])}" if e["http_errors"] else ""
            lines.append(f"endpoint {name} ({e['model']} at {e['base_url']}): {e['requests']} requests, "
                         f"{e['retries']} retries, {e['failed']} failed, {e['schema_fallbacks']} schema fallbacks"
                         f"{errors}; tokens: {e['prompt_tokens']} prompt + {e['completion_tokens']} completion")
            if e["cost"] is not None:
                lines.append(f"  cost: {e['cost']:.4f} at the configured prices per million tokens")
        return lines

    def _stage_lines(self) -> list[str]:
        lines = []
        for name, st in self.stages.items():
            restarts = "".join(f", {st[k]} {w}" for k, w in (("restarts", "restart(s)"), ("unfinished_starts", "start(s) never finished"))
                               if st.get(k))
            lines.append(f"  engine {name} ({st['replicas']} actor(s){restarts}): start {st['engine_start_s']:.0f} s, "
                         f"busy {st['busy_s']:.0f} s, {st['output_tokens']} tokens "
                         f"({st['output_tokens'] / max(st['busy_s'], 1e-9):.0f} tok/s busy)")
            if steps := st.get("engine_steps"):
                lines.append(f"    steps: {steps['steps']} in {steps['step_s']:.0f} s, {steps['mean_running']:g} "
                             f"sequences each on average (at most {steps['max_running']}), requests waiting "
                             f"{steps['waiting_share']:.0%} of the time")
            for role in st["roles"]:
                rs = self.roles[role]
                line = (f"    {role}: {rs['rows']} rows, {rs['requests']} requests, {rs['output_tokens']} tokens "
                        f"in {rs['busy_s']:.0f} s")
                if rs["dropped"]:
                    line += (f"; outputs dropped: {sum(rs['dropped'].values())} "
                             f"({format_counts(dict(sorted(rs['dropped'].items())))})")
                lines.append(line)
        return lines

    def lines(self) -> list[str]:
        tps = self.attempt_tokens / self.wall_seconds if self.wall_seconds else 0.0
        reasons = format_counts(dict(sorted(self.rejects.items()))) or "none"
        return [
            f"rows in:        {self.input_rows}" + (f" ({self.rows_skipped} done by an earlier attempt)" if self.rows_skipped else ""),
            f"pairs out:      {self.pairs} (from {self.paired_rows} instructions)",
            f"rows rejected:  {self.rejected_rows} ({reasons})",
            "candidates:     " + format_counts(self.candidates),
            "judging:        " + format_counts(self.judging),
            *(["pair check:     " + format_counts(self.verification)] if self.verification.get("pairs_checked") else []),
            f"tokens:         {self.output_tokens} generated ({tps:.1f} tok/s over the wall time)",
            *self._stage_lines(),
            *self.endpoint_lines(),
            *health_lines(self.health, self.health_warnings),
            *(f"warning:        {w}" for w in self.warnings),
            f"wall time:      {self.wall_seconds:.1f} s" + (f" ({self.mode} mode)" if self.mode else ""),
            f"output:         {self.output}",
        ]
