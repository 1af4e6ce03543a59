"""A small, hand-made output folder for the report, card and export tests (no engine).

Three instructions: "a" and "b" give one pair each, "c" is rejected (all tied). Two models:
`org/m1` (generator g1 and the evolver) and an endpoint model `m2` (generator g2); the judge
showed every call in two orders (the second the mirror of the first). The expected figures are
worked out by hand in test_report_card.py.
"""

from __future__ import annotations

from prefgen.report.health import batch_health, health_figures, health_warnings
from prefgen.output.files import write_json, write_shard
from prefgen.output.storage import storage
from prefgen.report.summary import batch_counts
from prefgen.roles.pair import pair_row
from prefgen.schema import PAIR_ROW, REJECT_ROW, candidate, reject_row

CONFIG = {
    "models": {"m1": {"kind": "vllm", "source": "org/m1"},
               "m2": {"kind": "endpoint", "base_url": "https://api.example.com/v1", "model": "m2"}},
    "generators": [{"name": "g1", "model": "m1", "num_completions": 1, "system_prompt": "Be brief.",
                    "sampling": {"temperature": 0.3, "max_tokens": 64}},
                   {"name": "g2", "model": "m2", "num_completions": 1, "sampling": {"temperature": 1.0, "max_tokens": 64}}],
    "evolution": {"enabled": True, "model": "m1", "num_evolutions": 1, "criteria": {"details": "...", "creativity": "..."},
                  "keep_original": True, "template": "custom"},
    "judge": {"name": "judge", "model": "m1", "mode": "joint", "aspects": ["overall"], "permutations": 2,
              "combine": "mean", "rubrics": {}},
    "jury": [],
    "pairing": {"strategy": "best_vs_worst", "min_margin": 1.0, "length_matched": False, "allow_truncated_chosen": False},
    "input": {"path": "instructions.jsonl", "field": "instruction"},
    "seed": 0,
}
MODEL = {"g1": "org/m1", "g2": "m2", "evolver": "org/m1"}


def judgment(perm: int, pos: int, rating: float) -> dict:
    return {"judge": "judge", "aspect": "overall", "permutation": perm, "position": pos, "label": "ABC"[pos],
            "order_seed": 7, "rating": rating, "not_applicable": False, "rationale": None, "raw": "{}", "error": None,
            "attempts": 1, "retried_because": None, "max_tokens": 512, "truncated": False, "truncated_answers": 0}


def cand(cid: str, rating: float, positions: tuple[int, int], text: str, criterion: str | None = None) -> dict:
    """A rated candidate shown at `positions` (order 1, order 2); `<row>/<gen>/<k>[/e1]` ids."""
    parts = cid.split("/")
    evolved = len(parts) > 3
    generator = "evolver" if evolved else parts[1]
    return candidate(candidate_id=cid, text=text, model=MODEL[generator], generator=generator,
                     origin="evolved" if evolved else "generated", parent_id="/".join(parts[:3]) if evolved else None,
                     criterion=criterion, truncated=False, rating=rating,
                     judgments=[judgment(p, pos, rating) for p, pos in enumerate(positions)])


def rows() -> list[dict]:
    base = {"source": "instructions.jsonl", "output_tokens": 0, "reject_reason": None, "reject_detail": None}
    return [
        {**base, "id": "a", "instruction": "Say A.", "line": 1, "candidates": [
            cand("a/g1/0", 5.0, (0, 2), "a" * 50), cand("a/g2/0", 2.0, (1, 1), "a" * 20),
            cand("a/g1/0/e1", 3.0, (2, 0), "a" * 70, "details")]},
        {**base, "id": "b", "instruction": "Say B.", "line": 2, "candidates": [
            cand("b/g1/0", 1.5, (1, 1), "b" * 30), cand("b/g2/0", 2.5, (2, 0), "b" * 40),
            cand("b/g2/0/e1", 4.0, (0, 2), "b" * 100, "creativity")]},
        {**base, "id": "c", "instruction": "Say C.", "line": 3, "candidates": [
            cand("c/g1/0", 3.0, (0, 1), "c" * 10), cand("c/g2/0", 3.0, (1, 0), "c" * 10)]},
    ]


def split(all_rows: list[dict]) -> tuple[list[dict], list[dict]]:
    by_id = {r["id"]: {c["candidate_id"]: c for c in r["candidates"]} for r in all_rows}
    a, b, c = all_rows
    pairs = [pair_row(a, by_id["a"]["a/g1/0"], by_id["a"]["a/g2/0"], 0),
             pair_row(b, by_id["b"]["b/g2/0/e1"], by_id["b"]["b/g1/0"], 0)]
    return pairs, [reject_row(c, "all_tied", "every candidate rated 3")]


def write_output(folder) -> dict:
    """Write the three rows as one committed batch, plus an uncommitted shard that must be ignored."""
    uri = str(folder)  # a local folder or a URI (s3://)
    for d in ("pairs", "rejects", "_commits"):
        storage(uri).make_folder(d)
    all_rows = rows()
    pairs, rejects = split(all_rows)
    write_shard(storage(uri), "pairs", "k1", pairs, PAIR_ROW)
    write_shard(storage(uri), "rejects", "k1", rejects, REJECT_ROW)
    write_shard(storage(uri), "pairs", "uncommitted", pairs, PAIR_ROW)  # a crash between shard and commit
    write_json(storage(uri), "_commits/k1.json", batch_counts("k1", all_rows, pairs, rejects))  # as the driver commits it
    health = health_figures(batch_health(all_rows, pairs))
    manifest = {"status": "complete", "config": CONFIG, "config_digest": "0123456789abcdef", "input_digest": "feed",
                "input_rows": 3, "output": uri, "health": health, "health_warnings": health_warnings(health) + ["a test warning"],
                "versions": {"prefgen": "0.1.0"}, "warnings": [], "candidates": {"generated": 6, "evolved": 2}}
    write_json(storage(uri), "manifest.json", manifest)
    return {"uri": uri, "rows": all_rows, "pairs": pairs, "rejects": rejects, "manifest": manifest}
