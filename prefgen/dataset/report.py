"""The report of an output folder: its dataset card (`README.md`) and its plots (`plots/*.png`).

Written at the end of every successful run (`write_report_safely`: a failure to render warns
and never fails the run, the data being written already) and on demand by `prefgen report
OUTPUT`, which rebuilds both from what the folder holds: the committed shards (read through
`compaction.committed_shards`) and `manifest.json`. Every function takes the output folder as
a `Storage` (`prefgen.output.storage`): local paths and URIs (s3://, gs://) alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa

from prefgen.input.read import read_parquet

from prefgen.output.files import PAIRS_DIR, REJECTS_DIR
from prefgen.output.storage import Storage
from prefgen.output.compaction import committed_shards
from prefgen.output.manifest import MANIFEST_FILE
from prefgen.schema import PAIR_ROW, REJECT_ROW

CARD_FILE, PLOTS_DIR = "README.md", "plots"
SCHEMAS = {PAIRS_DIR: PAIR_ROW, REJECTS_DIR: REJECT_ROW}


class ReportError(RuntimeError):
    """The folder holds no prefgen output to report on (no manifest)."""


def read_output(output: Storage, kind: str) -> pa.Table:
    """The committed rows of `kind` (pairs or rejects) as one table (empty if none)."""
    tables = [read_parquet(output, key) for key in committed_shards(output, kind)]
    if not tables:
        return SCHEMAS[kind].empty_table()
    return pa.concat_tables(tables, promote_options="permissive")


# long texts no figure reads, by the struct that holds them: dropped before rows become dicts
UNREAD = {"candidates": ("text", "rationale"), "judgments": ("raw", "rationale", "retried_because"),
          "verdicts": ("raw", "reason")}


def slim(table: pa.Table) -> pa.Table:
    """The table without UNREAD's fields (a third of the memory), or as it is if the cast fails."""
    def drop(t: pa.DataType, holder: str) -> pa.DataType:
        if pa.types.is_list(t):
            return pa.list_(drop(t.value_type, holder))
        if pa.types.is_struct(t):
            fields = [t.field(i) for i in range(t.num_fields)]
            return pa.struct([pa.field(f.name, drop(f.type, f.name)) for f in fields if f.name not in UNREAD.get(holder, ())])
        return t
    try:
        return table.cast(pa.schema([pa.field(f.name, drop(f.type, f.name)) for f in table.schema]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return table


def data_files(output: Storage, kind: str) -> str | list[str]:
    """The card's data files of `kind`, relative to the folder: a glob when every shard there is
    committed (a finished run swept the rest), else the committed shards by key."""
    present = {e.key for e in output.list(kind)[0] if e.name.startswith("part-")}
    committed = committed_shards(output, kind)
    return f"{kind}/part-*.parquet" if present == set(committed) else committed


def read_manifest(output: Storage) -> dict:
    manifest = output.read_json(MANIFEST_FILE)
    if manifest is None:
        raise ReportError(f"{output.uri} holds no {MANIFEST_FILE}: not a prefgen output (or its run never started)")
    return manifest


@dataclass
class Report:
    card: str
    plots: dict[str, bytes] = field(default_factory=dict)  # file name under plots/ -> PNG
    figures: dict = field(default_factory=dict)
    failed_plots: list[str] = field(default_factory=list)  # plots that could not be drawn, and why


def build_report(output: Storage, repo_id: str | None = None, selection: dict | None = None) -> Report:
    """The card and plots of the output folder, in memory; `repo_id`: the card as pushed to
    that Hub dataset repo (data files as `datasets.push_to_hub` lays them out); `selection`: the
    export's margin selection (`margins.select_by_margin`), whose kept pairs the card describes."""
    from prefgen.report.card import dataset_card
    from prefgen.report.figures import dataset_figures
    from prefgen.report.margins import select_by_margin

    manifest = read_manifest(output)
    pairs, rejects = (slim(read_output(output, kind)).to_pylist() for kind in (PAIRS_DIR, REJECTS_DIR))
    if selection is not None:
        pairs = select_by_margin(pairs, selection["top_margin"], selection["min_margin"])[0]
    figures = dataset_figures(pairs, rejects)
    plots, failed = draw_plots(figures, manifest.get("health") or {})
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    files = {kind: data_files(output, kind) for kind in (PAIRS_DIR, REJECTS_DIR)}
    card = dataset_card(manifest, figures, sorted(plots), counts={"pairs": len(pairs), "rejects": reasons,
                        "instructions": len({p["id"] for p in pairs})}, output=output.uri, repo_id=repo_id,
                        failed_plots=failed, files=files, selection=selection)
    return Report(card=card, plots=plots, figures=figures, failed_plots=failed)


def draw_plots(figures: dict, health: dict) -> tuple[dict[str, bytes], list[str]]:
    """Each plot on its own: one that fails to draw is left out and named, the others stay."""
    from prefgen.report import plots as p

    drawn, failed = {}, []
    for name in p.PLOTS:  # each file's plot is drawn by the function of the same name
        draw = getattr(p, name.removesuffix(".png"))
        try:
            png = draw(health if name == "judge_health.png" else figures)
        except Exception as exc:  # noqa: BLE001 - a plot is not worth losing the others or the card
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if png is not None:
            drawn[name] = png
    return drawn, failed


def write_report(output: Storage) -> Report:
    """Write README.md and plots/*.png into the output folder (stale plots removed)."""
    report = build_report(output)
    output.delete_prefix(PLOTS_DIR)
    output.make_folder(PLOTS_DIR)
    for name, png in report.plots.items():
        output.put(f"{PLOTS_DIR}/{name}", png)
    output.put(CARD_FILE, report.card.encode())
    return report


def write_report_safely(output: Storage, log=print) -> Report | None:
    """write_report for the end of a run: a failure is logged as a warning, never raised."""
    started = time.monotonic()
    try:
        report = write_report(output)
    except Exception as exc:  # noqa: BLE001 - the data is written; the report can be redone with `prefgen report`
        log(f"[prefgen] warning: the dataset card and plots could not be written ({type(exc).__name__}: {exc}); "
            f"the data is complete; rerun `prefgen report {output.uri}` to write them")
        return None
    for failure in report.failed_plots:
        log(f"[prefgen] warning: plot not drawn: {failure}")
    log(f"[prefgen] dataset card and {len(report.plots)} plot(s) written to {output.join(CARD_FILE)} and "
        f"{PLOTS_DIR}/ in {time.monotonic() - started:.1f} s")
    return report
