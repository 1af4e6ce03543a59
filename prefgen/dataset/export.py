"""Export an output's pairs: as JSONL files, or to a Hugging Face Hub dataset repo with its card.

- `jsonl`: one pair a line, every column of the pair row but the nested `candidates`:
  `prompt`/`chosen`/`rejected` as message lists (TRL's conversational form), the ratings, the
  models, the candidate ids and the provenance (`id`, `pair_id`, `source`, `line`).
- `trl-strings`: TRL's standard (string) form: `prompt` the user's text, `chosen` and `rejected`
  the assistant's texts; nothing else.
- `push_to_hub`: the pairs (and rejects, as config `rejects`) through `datasets.Dataset.push_to_hub`,
  then the dataset card (written for the Hub's layout) and the plots in one `huggingface_hub`
  commit. Needs a token (`HF_TOKEN` or `huggingface-cli login`) and the network.
Both can keep only the pairs of the largest rating margin (`--top-margin`, `--min-margin`, see
`report/margins.py`); what was cut is said, written beside the JSONL and put in the pushed card.
Only committed shards are read (`dataset_report.read_output`). Paths may be URIs.
"""

from __future__ import annotations

import json

from prefgen.dataset.report import CARD_FILE, PLOTS_DIR, build_report, read_manifest, read_output
from prefgen.output.files import PAIRS_DIR, REJECTS_DIR, write_file
from prefgen.output.storage import storage
from prefgen.report.margins import MarginError, select_by_margin  # noqa: F401 - the export's selection

FORMATS = ("jsonl", "trl-strings")


class ExportError(ValueError):
    """A pair cannot be written in the asked format, or a selection cannot be made."""


def selected(pairs: list[dict], top_margin: float | None, min_margin: float | None) -> tuple[list[dict], dict | None]:
    """The pairs to export and the selection's figures (None: no selection asked for)."""
    if top_margin is None and min_margin is None:
        return pairs, None
    try:
        return select_by_margin(pairs, top_margin, min_margin)
    except MarginError as exc:
        raise ExportError(str(exc)) from None


def jsonl_row(pair: dict) -> dict:
    return {k: v for k, v in pair.items() if k != "candidates"}


def _one_text(pair: dict, column: str, role: str) -> str:
    messages = pair[column] or []
    if len(messages) != 1 or messages[0]["role"] != role:
        shape = [m["role"] for m in messages]
        raise ExportError(f"pair {pair['pair_id']}: `{column}` holds messages {shape}, not one {role} message; "
                          "the string form cannot hold it: export --format jsonl (conversational) instead")
    return messages[0]["content"]


def trl_string_row(pair: dict) -> dict:
    return {"prompt": _one_text(pair, "prompt", "user"), "chosen": _one_text(pair, "chosen", "assistant"),
            "rejected": _one_text(pair, "rejected", "assistant")}


def export_rows(pairs: list[dict], fmt: str) -> list[dict]:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return [jsonl_row(p) if fmt == "jsonl" else trl_string_row(p) for p in pairs]


def default_target(output: str, fmt: str) -> str:
    return f"{output.rstrip('/')}/export/pairs.{'trl' if fmt == 'trl-strings' else 'full'}.jsonl"


def export(output: str, fmt: str, to: str | None = None, top_margin: float | None = None,
           min_margin: float | None = None) -> tuple[str, int, dict | None]:
    """Write the output's pairs (those of the largest margins, if asked) as JSONL in `fmt` to `to`
    (default under OUTPUT/export/); returns (where, how many rows, the selection's figures or None),
    the figures also written beside it (`<name>.selection.json`)."""
    store = storage(output)
    read_manifest(store)  # a clear error if the folder holds no prefgen output
    pairs, selection = selected(read_output(store, PAIRS_DIR).to_pylist(), top_margin, min_margin)
    rows = export_rows(pairs, fmt)
    target = to or default_target(output, fmt)
    write_file(target, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode())
    if selection is not None:
        write_file(target.removesuffix(".jsonl") + ".selection.json", json.dumps(selection, indent=2).encode())
    return target, len(rows), selection


def push_to_hub(output: str, repo_id: str, private: bool | None = None, token: str | None = None,
                top_margin: float | None = None, min_margin: float | None = None) -> dict:
    """Push pairs (those of the largest margins, if asked), rejects, card and plots to the Hub
    dataset repo `repo_id`; returns what was sent."""
    import datasets
    import pyarrow as pa
    from huggingface_hub import CommitOperationAdd, HfApi

    store = storage(output)
    pairs = read_output(store, PAIRS_DIR)
    kept, selection = selected(pairs.to_pylist(), top_margin, min_margin)
    if selection is not None:
        pairs = pa.Table.from_pylist(kept, schema=pairs.schema)
    report = build_report(store, repo_id=repo_id, selection=selection)
    rejects = read_output(store, REJECTS_DIR)
    datasets.Dataset(pairs).push_to_hub(repo_id, config_name="default", split="train", private=private, token=token,
                                        commit_message="prefgen: pairs")
    if rejects.num_rows:
        datasets.Dataset(rejects).push_to_hub(repo_id, config_name="rejects", split="train", private=private,
                                              token=token, commit_message="prefgen: rejects")
    files = {CARD_FILE: report.card.encode(), **{f"{PLOTS_DIR}/{n}": png for n, png in report.plots.items()}}
    HfApi(token=token).create_commit(
        repo_id=repo_id, repo_type="dataset", commit_message="prefgen: dataset card and plots",
        operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in files.items()])
    return {"pairs": pairs.num_rows, "rejects": rejects.num_rows, "files": sorted(files), "selection": selection}
