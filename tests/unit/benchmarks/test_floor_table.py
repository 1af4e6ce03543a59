"""README's floor table is rendered from a result file's own figures."""

import json

from benchmarks.floor_table import render, table_row

RESULT = {
    "limit": 16,
    "machine": {"cpu": "Some CPU", "avx512": False, "prefgen_commit": "abc1234"},
    "prefgen": {"rows": 16, "wall_s": 200.04, "engine_start_s": 30.0, "output_tokens": 12000,
                "engines": {"a": {"busy_s": 100.0}, "b": {"busy_s": 50.0}}},
    "floor": {"wall_s": 160.0, "engine_start_s": 20.0, "work_s": 120.0, "output_tokens": 11500},
    "prefgen_over_floor": {"wall_with_start": 1.25, "wall_without_start": 1.21},
}


def test_a_row_holds_the_files_figures_and_the_busy_time_of_every_engine_over_the_floors_work():
    row = table_row(RESULT, "throughput-x.json")
    assert row.startswith("| 16 ([throughput-x.json](benchmarks/results/throughput-x.json)) | Some CPU, `abc1234` |")
    assert "| 200.0 s | 160.0 s | **1.25x** (1.21x) | - | 30.0 s / 20.0 s |" in row  # the floor ran in-process
    assert "| 150 s / 120 s (1.25x) | 12,000 / 11,500 |" in row  # both engines' busy time summed


def test_where_the_floor_ran_as_a_process_both_process_walls_and_their_ratio_are_shown():
    result = json.loads(json.dumps(RESULT))
    result["floor"]["process_wall_s"], result["prefgen_over_floor"]["process_wall"] = 165.04, 1.21
    assert "| **1.25x** (1.21x) | **1.21x** (200.0 s / 165.0 s) | 30.0 s / 20.0 s |" in table_row(result, "x.json")


def test_the_table_has_one_row_per_file_in_the_order_given(tmp_path):
    paths = []
    for rows in (48, 16):
        path = tmp_path / f"throughput-{rows}.json"
        path.write_text(json.dumps(dict(RESULT, limit=rows)))
        paths.append(path)
    lines = render(paths).splitlines()
    assert len(lines) == 4 and lines[1].count("---") == lines[0].count(" | ") + 1
    assert lines[2].startswith("| 48 (") and lines[3].startswith("| 16 (")


def test_the_engines_steps_give_tokens_per_step_second_and_sequences_where_the_file_has_them():
    assert row_end(table_row(RESULT, "x.json")) == "| - / - |"
    steps = {"step_s": 100.0, "mean_running": 40.0}
    result = json.loads(json.dumps(RESULT))
    result["prefgen"]["engines"] = {"a": {"busy_s": 150.0, "output_tokens": 12000, "engine_steps": steps}}
    result["floor"]["engines"] = {"e": {"output_tokens": 11500, "engine_steps": dict(steps, step_s=115.0, mean_running=50.0)}}
    assert row_end(table_row(result, "x.json")) == "| 120 (40.0) / 100 (50.0) |"


def row_end(row: str) -> str:
    return "| " + row.rsplit(" | ", 1)[1]
