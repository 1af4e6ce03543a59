"""Decontamination: reject input rows that overlap a benchmark item by word n-grams.

The rule is Tulu 3's (open-instruct's n-gram matching, n = 8, threshold 0.5): a benchmark
item's word is *matched* by a row when it lies in an n-gram the two share; the row is
contaminated by the item when more than `threshold` of the item's words are matched. Words are
lower-cased `\\w+` runs, so case, punctuation and spacing do not hide a copy. An item with
fewer than n words has no n-gram and matches nothing (as in open-instruct).

Scaling: the benchmark's n-grams go into one dict (n-gram -> item number, or a tuple of them
when several items share it); a row costs one lookup per n-gram of its own, and only the
items it hits are scored. No pairwise comparison of rows and items.

Benchmark files: JSONL, Parquet, CSV or a `datasets` folder, local or any pyarrow URI; each
item remembers its file and line (JSONL/CSV: the line in the file; Parquet/datasets: the row
number from 1), which the reject's detail names.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field


from prefgen.config.screen import BENCHMARK_FIELDS, BenchmarkFile, ContaminationConfig
from prefgen.input.read import UTF8_BOM, InputError, _detect_format, datasets_folder_table, read_parquet
from prefgen.input.near_duplicates import WORD
from prefgen.output.storage import storage


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


@dataclass
class BenchmarkIndex:
    """Benchmark items (file, line, words) and the dict of their n-grams."""

    n: int
    threshold: float
    items: list[tuple[str, int, list[str]]] = field(default_factory=list)
    grams: dict[str, int | tuple[int, ...]] = field(default_factory=dict)
    skipped: int = 0  # items without text in the field (null, not a string)

    def add(self, source: str, line: int, text) -> None:
        if not isinstance(text, str) or not text.strip():
            self.skipped += 1
            return
        number, tokens = len(self.items), words(text)
        self.items.append((source, line, tokens))
        for gram in set(ngrams(tokens, self.n)):
            held = self.grams.get(gram)
            if held is None:
                self.grams[gram] = number
            else:
                self.grams[gram] = (held, number) if isinstance(held, int) else (*held, number)

    def match(self, text: str) -> tuple[int, float] | None:
        """(item number, share of its words matched) of the item this text overlaps most past the
        threshold (ties: the first item), or None."""
        row_grams = set(ngrams(words(text), self.n))
        hit: set[int] = set()
        for gram in row_grams:
            held = self.grams.get(gram)
            if held is not None:
                hit.update((held,) if isinstance(held, int) else held)
        best = None
        for number in sorted(hit):
            tokens = self.items[number][2]
            covered = bytearray(len(tokens))
            for start, gram in enumerate(ngrams(tokens, self.n)):
                if gram in row_grams:
                    covered[start:start + self.n] = b"\x01" * self.n
            share = sum(covered) / len(tokens)
            if share > self.threshold and (best is None or share > best[1]):
                best = (number, share)
        return best

    def describe(self, match: tuple[int, float]) -> str:
        source, line, tokens = self.items[match[0]]
        return (f"{match[1]:.0%} of the {len(tokens)} words of benchmark {source} line {line} lie in "
                f"{self.n}-grams this row shares (threshold {self.threshold:.0%})")


def _pick_field(bench: BenchmarkFile, columns: list[str], uri: str) -> str:
    if bench.field is not None:
        if bench.field not in columns:
            raise InputError(f"benchmark {uri}: no field '{bench.field}' (fields: {', '.join(columns)}); "
                             "set its field in input.decontaminate")
        return bench.field
    for name in BENCHMARK_FIELDS:
        if name in columns:
            return name
    raise InputError(f"benchmark {uri}: none of the fields {', '.join(BENCHMARK_FIELDS)} (fields: "
                     f"{', '.join(columns)}); set its field in input.decontaminate")


def _read_jsonl(data: bytes, bench: BenchmarkFile, uri: str, index: BenchmarkIndex) -> None:
    fld = bench.field
    for number, raw in enumerate(data.removeprefix(UTF8_BOM).split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"benchmark {uri} line {number}: not a JSON object ({exc})") from None
        if not isinstance(record, dict):
            raise InputError(f"benchmark {uri} line {number}: a {type(record).__name__}, not an object")
        fld = fld or _pick_field(bench, list(record), uri)
        if fld not in record:
            raise InputError(f"benchmark {uri} line {number}: no field '{fld}' (fields: {', '.join(record)})")
        index.add(uri, number, record[fld])


def load_benchmark(bench: BenchmarkFile, index: BenchmarkIndex) -> None:
    """Add one benchmark file's items to the index; InputError names the file (and line) it cannot use."""
    uri = bench.path
    store = storage(uri)
    kind = store.kind()
    if kind is None:
        raise InputError(f"benchmark {uri} (input.decontaminate) does not exist")
    fmt = _detect_format(uri, kind, bench.format)
    if fmt in ("jsonl", "csv"):
        data = store.read()
        if fmt == "jsonl":
            return _read_jsonl(data, bench, uri, index)
        try:
            reader = csv.DictReader(io.StringIO(data.removeprefix(UTF8_BOM).decode("utf-8")))
        except UnicodeDecodeError as exc:
            raise InputError(f"benchmark {uri}: not UTF-8 text (byte {exc.start})") from None
        fld = _pick_field(bench, list(reader.fieldnames or []), uri)
        for record in reader:
            index.add(uri, reader.line_num, record.get(fld))
        return None
    if fmt == "parquet":
        table = read_parquet(store, what=f"{uri} (input.decontaminate)")
    else:
        table = datasets_folder_table(uri, "input.decontaminate")
    fld = _pick_field(bench, table.column_names, uri)
    for number, value in enumerate(table.column(fld).to_pylist(), start=1):
        index.add(uri, number, value)
    return None


def load_benchmarks(files: list[BenchmarkFile], cfg: ContaminationConfig) -> BenchmarkIndex | None:
    """The index of every configured benchmark file, or None when none is configured."""
    if not files:
        return None
    index = BenchmarkIndex(n=cfg.ngram, threshold=cfg.threshold)
    for bench in files:
        load_benchmark(bench, index)
    return index
