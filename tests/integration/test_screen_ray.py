"""Screening as a Ray Data stage decides exactly as in process (local Ray, no engines)."""

import json

from prefgen.config import InputConfig
from prefgen.input.read import InputRows
from prefgen.input.screen import prepare, screen_input

TOPICS = ["rivers", "volcanoes", "bees", "glaciers", "comets", "coral reefs", "deserts", "owls", "tides", "moss"]


def synthetic_rows():
    rows = InputRows(source="in.jsonl")
    for i in range(120):
        topic = TOPICS[i % len(TOPICS)]
        text = f"Write a short paragraph for children about {topic} and why case number {i // 3} matters to them."
        if i % 3 == 2:  # every third row edits the row before it by one word
            text = text.replace("short", "brief")
        rows.add(i + 1, {"instruction": text})
    return rows


def test_ray_path_gives_the_same_decisions_as_in_process(tmp_path, monkeypatch, local_ray):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"prompt": synthetic_rows().rows[10]["instruction"]}) + "\n")
    cfg = InputConfig.model_validate({"near_duplicates": {"distributed_above": 10}, "decontaminate": [str(bench)]})
    index = prepare(cfg)
    local = synthetic_rows()
    local_counts = screen_input(local, cfg, index)
    assert local_counts["near_duplicate"] > 10 and local_counts["contaminated"] >= 1
    import prefgen.input.screen as screen

    monkeypatch.setattr(screen, "RAY_BLOCK_ROWS", 25)  # several blocks: results are put back in order
    calls = []
    original = screen.per_row_on_ray
    monkeypatch.setattr(screen, "per_row_on_ray", lambda *a: calls.append(1) or original(*a))
    distributed = synthetic_rows()
    assert screen.screen_input(distributed, cfg, index, ray=local_ray) == local_counts
    assert calls == [1]  # the Ray Data stage did the per-row work
    assert distributed.rejects == local.rejects
    assert distributed.rows == local.rows
