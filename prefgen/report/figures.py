"""What the dataset holds, in numbers: the figures the report's plots and the dataset card show.

Pure functions from output rows (pair rows and reject rows, as dicts of `schema.PAIR_ROW` /
`REJECT_ROW`) to plain dicts of numbers: ratings per model and per origin, margins, chosen and
rejected lengths, where the chosen answer was shown to the judge, win rates, rewrites against
their originals. The judge-health figures are not here: they are summed per batch while the run
writes and kept in the manifest (`prefgen.report.health`); the report renders them from there.
"""

from __future__ import annotations

import bisect
import statistics

HIST_BINS = 20  # bins of a histogram of continuous values (reward-model scores, means of several ratings)


def row_candidates(pairs: list[dict], rejects: list[dict]) -> list[dict]:
    """Every candidate of the output once: an instruction's pairs share its candidates."""
    seen, out = set(), []
    for row in [*pairs, *rejects]:
        if row["id"] in seen:
            continue
        seen.add(row["id"])
        out.extend(row.get("candidates") or [])
    return out


def histogram(values: list[float], edges: list[float] | None = None) -> dict:
    """Counts of values in bins: one bin per value when the values sit on a grid of 1 or 0.5
    (rubric levels and their means over two ratings), else HIST_BINS equal bins."""
    edges = edges if edges is not None else bin_edges(values)
    counts = [0] * max(len(edges) - 1, 0)
    for v in values:
        i = bisect.bisect_right(edges, v) - 1
        if 0 <= i < len(counts) or (counts and v == edges[-1]):  # the last bin holds its right edge
            counts[min(i, len(counts) - 1)] += 1
    return {"edges": edges, "counts": counts}


def bin_edges(values: list[float]) -> list[float]:
    if not values:
        return []
    low, high = min(values), max(values)
    for step in (1.0, 0.5):
        if all(abs(v / step - round(v / step)) < 1e-9 for v in values) and (high - low) / step <= 40:
            n = round((high - low) / step) + 1
            return [low - step / 2 + i * step for i in range(n + 1)]
    if high == low:
        return [low - 0.5, high + 0.5]
    width = (high - low) / HIST_BINS
    return [low + i * width for i in range(HIST_BINS)] + [high]


def _label(value, missing: str = "(none)") -> str:
    return missing if value is None else str(value)


def rating_histograms(candidates: list[dict]) -> dict:
    """Combined ratings of the rated candidates, per model and per origin, on shared bins."""
    rated = [c for c in candidates if c.get("rating") is not None]
    edges = bin_edges([c["rating"] for c in rated])
    out = {"n": len(rated), "edges": edges, "by_model": {}, "by_origin": {}}
    for key, field in (("by_model", "model"), ("by_origin", "origin")):
        groups: dict[str, list[float]] = {}
        for c in rated:
            groups.setdefault(_label(c.get(field)), []).append(c["rating"])
        out[key] = {name: {"n": len(vals), "mean": statistics.fmean(vals), "counts": histogram(vals, edges)["counts"]}
                    for name, vals in sorted(groups.items())}
    return out


def margins(pairs: list[dict]) -> dict:
    """Chosen rating minus rejected rating, per pair."""
    values = [p["chosen_rating"] - p["rejected_rating"] for p in pairs
              if p.get("chosen_rating") is not None and p.get("rejected_rating") is not None]
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "median": statistics.median(values) if values else None, **histogram(values)}


def _text(messages: list[dict] | None) -> str:
    return "".join(m.get("content") or "" for m in messages or [])


def lengths(pairs: list[dict]) -> dict:
    """Characters of the chosen and of the rejected answer, pair by pair (same order)."""
    chosen = [len(_text(p["chosen"])) for p in pairs]
    rejected = [len(_text(p["rejected"])) for p in pairs]
    return {"n": len(pairs), "chosen": chosen, "rejected": rejected,
            "chosen_median": statistics.median(chosen) if chosen else None,
            "rejected_median": statistics.median(rejected) if rejected else None}


def chosen_positions(pairs: list[dict]) -> dict:
    """Where the chosen answer stood in each order shown to a judge (joint mode), per judge and
    order, against what chance gives (1/n per position in a call showing n answers).

    Positions are 0-based in the data, 1-based in the labels a plot shows."""
    judges = {j["judge"] for p in pairs for c in p.get("candidates") or [] for j in c.get("judgments") or []}
    orders: dict[str, dict] = {}
    for p in pairs:
        cands = p.get("candidates") or []
        shown: dict[tuple, int] = {}  # (judge, aspect, permutation) -> answers in that call
        for c in cands:
            for j in c.get("judgments") or []:
                if j.get("order_seed") is not None:
                    key = (j["judge"], j["aspect"], j["permutation"])
                    shown[key] = shown.get(key, 0) + 1
        chosen = next((c for c in cands if c["candidate_id"] == p["chosen_candidate_id"]), None)
        for j in (chosen or {}).get("judgments") or []:
            if j.get("order_seed") is None or j.get("position") is None:
                continue
            n = shown[(j["judge"], j["aspect"], j["permutation"])]
            label = f"order {j['permutation'] + 1}" if len(judges) == 1 else f"{j['judge']}, order {j['permutation'] + 1}"
            cell = orders.setdefault(label, {"calls": 0, "counts": [], "expected": []})
            width = max(n, j["position"] + 1, len(cell["counts"]))
            cell["counts"] += [0] * (width - len(cell["counts"]))
            cell["expected"] += [0.0] * (width - len(cell["expected"]))
            cell["calls"] += 1
            cell["counts"][j["position"]] += 1
            for pos in range(n):
                cell["expected"][pos] += 1 / n
    return {"n": sum(c["calls"] for c in orders.values()), "orders": dict(sorted(orders.items()))}


def source_label(cand: dict) -> str:
    """A candidate's writer: its generator, or `<generator> rewritten` for a rewrite of one."""
    if cand.get("origin") == "evolved":
        parts = (cand.get("candidate_id") or "").split("/")
        root = parts[1] if len(parts) > 2 else "evolver"
        return f"{root} rewritten"
    return _label(cand.get("generator") or cand.get("origin"))


def win_rates(pairs: list[dict]) -> dict:
    """Per model and per writer (generator, or its rewrites): how often it was the chosen side of a
    pair (wins) and the rejected side (losses). Both sides of a pair may be the same model."""
    out: dict[str, dict] = {"n": len(pairs), "by_model": {}, "by_writer": {}}
    for p in pairs:
        by_id = {c["candidate_id"]: c for c in p.get("candidates") or []}
        for side, won in (("chosen", True), ("rejected", False)):
            cand = by_id.get(p[f"{side}_candidate_id"], {})
            for key, name in (("by_model", _label(p.get(f"{side}_model"))), ("by_writer", source_label(cand))):
                cell = out[key].setdefault(name, {"wins": 0, "losses": 0})
                cell["wins" if won else "losses"] += 1
    for key in ("by_model", "by_writer"):
        for cell in out[key].values():
            cell["rate"] = cell["wins"] / (cell["wins"] + cell["losses"])
        out[key] = dict(sorted(out[key].items()))
    return out


def evolved_vs_parent(candidates: list[dict]) -> dict:
    """Each rated rewrite against the rated answer it rewrote: wins, ties, losses per criterion."""
    by_id = {c["candidate_id"]: c for c in candidates}
    out: dict[str, dict] = {}
    for c in candidates:
        parent = by_id.get(c.get("parent_id")) if c.get("origin") == "evolved" else None
        if parent is None or c.get("rating") is None or parent.get("rating") is None:
            continue
        cell = out.setdefault(_label(c.get("criterion")), {"wins": 0, "ties": 0, "losses": 0})
        diff = c["rating"] - parent["rating"]
        cell["wins" if diff > 0 else "ties" if diff == 0 else "losses"] += 1
    total = {k: sum(cell[k] for cell in out.values()) for k in ("wins", "ties", "losses")}
    return {"n": sum(total.values()), "total": total, "by_criterion": dict(sorted(out.items()))}


def dataset_figures(pairs: list[dict], rejects: list[dict]) -> dict:
    """Every figure of the output's rows, by name."""
    candidates = row_candidates(pairs, rejects)
    return {
        "ratings": rating_histograms(candidates),
        "margins": margins(pairs),
        "lengths": lengths(pairs),
        "chosen_position": chosen_positions(pairs),
        "win_rates": win_rates(pairs),
        "evolved_vs_parent": evolved_vs_parent(candidates),
    }
