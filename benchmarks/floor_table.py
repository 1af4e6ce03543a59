"""README's table of prefgen against the floor, rendered from `throughput.py`'s result files only.

    python benchmarks/floor_table.py benchmarks/results/throughput-16-stepped.json ...

One row per file, in the order given: rows, the CPU, the commit measured, both walls (start-ups
included), prefgen's wall over the floor's with and without the starts, both processes' walls
from start to exit where the floor ran as a process of its own (since it does), both engine starts,
prefgen's engine busy time against the floor's work, the output tokens of each, and where the
files hold the engines' steps (`step_log.py`, since `eca4ad2`) each engine's output tokens per
second of step time and mean sequences per step. Nothing is computed here that the file does not
hold but those ratios; the figures are `throughput.py`'s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = ("| rows | CPU, commit | prefgen wall | floor wall | prefgen / floor (without starts) "
          "| processes start to exit, prefgen / floor | engine start, prefgen / floor "
          "| engine busy / floor's work | output tokens, prefgen / floor "
          "| tokens per step-second (sequences per step), prefgen / floor |")


def step_figures(side: dict) -> str | None:
    """Output tokens per second of the engines' step time, and their mean sequences per step."""
    logged = [e for e in side.get("engines", {}).values() if e.get("engine_steps")]
    step_s = sum(e["engine_steps"]["step_s"] for e in logged)
    if not logged or step_s <= 0:
        return None
    running = sum(e["engine_steps"]["mean_running"] * e["engine_steps"]["step_s"] for e in logged) / step_s
    return f"{sum(e['output_tokens'] for e in logged) / step_s:.0f} ({running:.1f})"


def process_walls(result: dict) -> str:
    """Both processes' walls, start to exit, and their ratio; `-` where the floor ran in the benchmark's process."""
    process_wall = result["floor"].get("process_wall_s")
    if process_wall is None:
        return "-"
    ratio, wall = result["prefgen_over_floor"]["process_wall"], result["prefgen"]["wall_s"]
    return f"**{ratio:.2f}x** ({wall:.1f} s / {process_wall:.1f} s)"


def table_row(result: dict, name: str) -> str:
    m, p, f, r = result["machine"], result["prefgen"], result["floor"], result["prefgen_over_floor"]
    busy = sum(e["busy_s"] for e in p["engines"].values())
    cpu = f"{m['cpu']}{' (AVX-512)' if m.get('avx512') else ''}, `{m['prefgen_commit']}`"
    return (f"| {result['limit'] or p['rows']} ([{name}](benchmarks/results/{name})) | {cpu} | {p['wall_s']:.1f} s "
            f"| {f['wall_s']:.1f} s | **{r['wall_with_start']:.2f}x** ({r['wall_without_start']:.2f}x) "
            f"| {process_walls(result)} | {p['engine_start_s']:.1f} s / {f['engine_start_s']:.1f} s "
            f"| {busy:.0f} s / {f['work_s']:.0f} s "
            f"({busy / f['work_s']:.2f}x) | {p['output_tokens']:,} / {f['output_tokens']:,} "
            f"| {step_figures(p) or '-'} / {step_figures(f) or '-'} |")


def render(paths: list[Path]) -> str:
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    lines += [table_row(json.loads(p.read_text()), p.name) for p in paths]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(render([Path(a) for a in sys.argv[1:]]))
