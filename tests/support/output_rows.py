"""Minimal output rows for the bookkeeping tests (commits, compaction, storage): a reject and a
pair per id, each a valid row of its schema and nothing more."""


def reject(rid):
    return {"id": rid, "instruction": f"q {rid}", "source": "s", "line": 1, "reason": "empty_instruction",
            "detail": None, "candidates": []}


def pair(rid):
    msg = [{"role": "user", "content": f"q {rid}"}]
    return {"id": rid, "pair_id": f"{rid}/0", "prompt": msg, "chosen": msg, "rejected": msg, "chosen_rating": 2.0,
            "rejected_rating": 1.0, "chosen_model": "m", "rejected_model": "m", "chosen_candidate_id": "a",
            "rejected_candidate_id": "b", "candidates": [], "source": "s", "line": 1}
