"""Reading the input: instructions in (JSONL, Parquet, CSV, datasets folder), validated row by row.

Reading validates every row and gives it a stable id; a row that cannot be used becomes a
reject with its reason, file and line, never a silent drop. Paths may be local or a URI
(s3://, gs://, file://): every read goes through `prefgen.output.storage`. A UTF-8
byte-order mark at the start of a JSONL or CSV file (Excel and Windows tools write one) is
skipped. The output's files are written by `prefgen/output/files.py`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prefgen.config import InputConfig
from prefgen.output.storage import storage
from prefgen.input.rows import (  # noqa: F401 - prompt_text: a row's prompt as one text, for screening
    Rejected,
    content_key,
    conversation_text,
    duplicate_key,
    prompt_text,
    read_prompt,
    read_responses,
)
from prefgen.schema import (
    REJECT_BAD_JSON,
    REJECT_BAD_UTF8,
    REJECT_DUPLICATE,
    REJECT_TOO_FEW_CANDIDATES,
    candidate,
    reject_row,
)

SAMPLE_INSTRUCTIONS = Path(__file__).parents[1] / "data" / "sample_instructions.jsonl"
UTF8_BOM = b"\xef\xbb\xbf"


class InputError(ValueError):
    """The input as a whole cannot be used (missing file, missing column, unknown format)."""


def row_id(source: str, line: int, text: str) -> str:
    """Stable id: the same source name, position and text give the same id on every run."""
    return hashlib.sha256(f"{source}\x00{line}\x00{text}".encode()).hexdigest()[:16]


@dataclass
class InputRows:
    """Rows read from the input: usable work rows and rejects; together they are every row."""

    source: str
    rows: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    prompt_field: str = "instruction"  # the prompt's column (an instruction or a conversation)
    responses: list[str] = field(default_factory=list)  # columns of provided responses

    @property
    def total(self) -> int:
        return len(self.rows) + len(self.rejects)

    @property
    def provided_models(self) -> list[str]:
        """The models the usable rows' provided responses name (the self-preference check's writers)."""
        return sorted({c["model"] for row in self.rows for c in row["candidates"] if c["model"]})

    def add(self, line: int, record: dict | None, reason: str | None = None, detail: str | None = None):
        """Validate one record (a row's columns) into a work row or a reject; `reason` rejects it as given."""
        name = posixpath.basename(self.source)
        messages, responses = None, []
        if reason is None:
            try:
                messages = read_prompt(record, self.prompt_field)
                responses = read_responses(record, self.responses)
            except Rejected as rejected:
                reason, detail, messages = rejected.reason, rejected.detail, None
        if messages is None:
            value = (record or {}).get(self.prompt_field)
            text = value if isinstance(value, str) else None
            # the id of a reject: from what the row holds (with responses, the whole record)
            key = repr(record) if self.responses else text if text is not None else repr(value)
            self.rejects.append(reject_row({"id": row_id(name, line, key), "instruction": text, "source": self.source,
                                            "line": line}, reason, detail))
            return
        plain = len(messages) == 1 and not responses
        rid = row_id(name, line, messages[0]["content"] if plain else content_key(messages, responses))
        candidates = [
            candidate(candidate_id=f"{rid}/input.{column}/{k}", text=text, model=model, generator=column,
                      origin="provided")
            for k, (column, model, text) in enumerate(responses)
        ]
        self.rows.append({"id": rid, "instruction": conversation_text(messages), "messages": messages,
                          "source": self.source, "line": line, "candidates": candidates, "output_tokens": 0,
                          "reject_reason": None, "reject_detail": None,
                          "_duplicate_key": duplicate_key(messages, responses)})


def _detect_format(path: str, kind: str, fmt: str) -> str:
    """The input format: `fmt` unless "auto"; `kind`: "file" or "folder" (a datasets folder)."""
    if fmt != "auto":
        return fmt
    if kind == "folder":
        return "datasets"
    suffix = posixpath.splitext(path)[1].lower()
    formats = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}
    if suffix not in formats:
        raise InputError(f"{path}: cannot tell the format from '{suffix}'; set input.format")
    return formats[suffix]


def _read_jsonl(data: bytes, out: InputRows, limit: int | None) -> None:
    for number, raw in enumerate(data.removeprefix(UTF8_BOM).split(b"\n"), start=1):
        if limit is not None and out.total >= limit:
            return
        if not raw.strip():
            continue  # a blank line is not a row
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.add(number, None, reason=REJECT_BAD_UTF8, detail=f"byte {exc.start}: {exc.reason}")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            out.add(number, None, reason=REJECT_BAD_JSON, detail=f"column {exc.colno}: {exc.msg}")
            continue
        if not isinstance(record, dict):
            out.add(number, None, reason=REJECT_BAD_JSON, detail=f"a {type(record).__name__}, not an object")
            continue
        out.add(number, record)


def _check_columns(path: str, names: list[str], out: InputRows) -> None:
    """The prompt and response columns must exist in a file with a header (CSV, Parquet, datasets)."""
    if out.prompt_field not in names:
        raise InputError(f"{path}: no column '{out.prompt_field}' (columns: {', '.join(names)}); set input.field")
    missing = [c for c in out.responses if c not in names]
    if missing:
        raise InputError(f"{path}: no column {', '.join(map(repr, missing))} named in input.responses "
                         f"(columns: {', '.join(names)})")


def _read_columns(table: pa.Table, path: str, out: InputRows, limit: int | None, first_line: int):
    _check_columns(path, table.column_names, out)
    table = table.select(list(dict.fromkeys([out.prompt_field, *out.responses])))
    records = table.slice(0, limit).to_pylist() if limit else table.to_pylist()
    for i, record in enumerate(records):
        if record[out.prompt_field] is None:  # a null cell: the field is missing from this row
            del record[out.prompt_field]
        out.add(i + first_line, record)


def read_instructions(cfg: InputConfig, candidates_for=None) -> InputRows:
    """Read and validate the configured input; raises InputError if it is unusable as a whole.

    `candidates_for(provided)`: the candidates a row with that many provided responses gets; rows
    left with fewer than two are rejected (`too_few_candidates`)."""
    uri = cfg.path or str(SAMPLE_INSTRUCTIONS)
    store = storage(uri)
    kind = store.kind()
    if kind is None:
        raise InputError(f"input {uri} does not exist")
    fmt = _detect_format(uri, kind, cfg.format)
    out = InputRows(source=uri, prompt_field=cfg.field, responses=list(cfg.responses))
    if fmt == "jsonl":
        _read_jsonl(store.read(), out, cfg.limit)
    elif fmt == "csv":
        data = store.read()
        try:
            text = data.removeprefix(UTF8_BOM).decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise InputError(f"{uri}: line {line} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        reader = csv.DictReader(io.StringIO(text))
        _check_columns(uri, reader.fieldnames or [], out)
        for record in reader:
            if cfg.limit is not None and out.total >= cfg.limit:
                break
            out.add(reader.line_num, record)
    elif fmt == "parquet":
        _read_columns(read_parquet(store, what=f"{uri} (input.path)"), uri, out, cfg.limit, first_line=1)
    else:
        out = _read_dataset_dir(uri, cfg, out)
    _reject_duplicates(out)
    if candidates_for is not None:
        reject_short_rows(out, candidates_for)
    return out


def read_parquet(store, key: str = "", columns: list[str] | None = None, what: str | None = None) -> pa.Table:
    """A Parquet file read whole through its storage. `what` names an input file (and its config
    key): one that is corrupt or not Parquet is then an InputError naming it."""
    data = store.read(key)
    try:
        return pq.read_table(pa.BufferReader(data), columns=columns)
    except pa.ArrowException as exc:
        if what is None:
            raise
        raise InputError(f"{what}: cannot be read as a Parquet file: {exc}") from None


def datasets_folder_table(uri: str, key: str) -> pa.Table:
    """The table of a folder `datasets.save_to_disk` wrote, of its one split; `key`: the config key
    that named the folder, for the error when it holds several splits."""
    import datasets

    try:
        loaded = datasets.load_from_disk(uri)
    except (OSError, ValueError, pa.ArrowException) as exc:  # not a save_to_disk folder, or its files broken
        raise InputError(f"{uri} ({key}): cannot be read as a datasets folder (written by save_to_disk): "
                         f"{exc}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise InputError(f"{uri} holds splits {list(loaded)}; point {key} at one split's folder")
        loaded = next(iter(loaded.values()))
    return loaded.data.table


def _read_dataset_dir(uri: str, cfg: InputConfig, out: InputRows) -> InputRows:
    _read_columns(datasets_folder_table(uri, "input.path"), uri, out, cfg.limit, first_line=1)
    return out


def _reject_duplicates(out: InputRows) -> None:
    first_seen: dict[str, int] = {}
    kept = []
    for row in out.rows:
        key = row.pop("_duplicate_key")
        if key in first_seen:
            what = "prompt and responses" if out.responses else "instruction"
            out.rejects.append(reject_row(row, REJECT_DUPLICATE, f"same {what} as line {first_seen[key]}"))
        else:
            first_seen[key] = row["line"]
            kept.append(row)
    out.rows = kept


def reject_short_rows(out: InputRows, candidates_for) -> None:
    """Reject the rows that would get fewer than two candidates: `candidates_for(provided)` is the
    number a row with that many provided responses gets (see config/checks.py, candidates_per_row)."""
    kept = []
    for row in out.rows:
        provided = len(row["candidates"])
        count = candidates_for(provided)
        if count < 2:
            detail = f"{provided} provided response(s) give {count} candidate(s); a pair needs two"
            out.rejects.append(reject_row(row, REJECT_TOO_FEW_CANDIDATES, detail))
        else:
            kept.append(row)
    out.rows = kept
