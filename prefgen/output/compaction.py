"""Shard compaction at the end of a run: the small shards of many batches merged into files of
about `SHARD_TARGET_BYTES`, every row still exactly once.

Each merged file is made in four steps, by the driver under the run's lease:
1. the rows of a group of committed batch shards are copied, one shard at a time, into
   `<kind>/.tmp-merge-<id>.parquet` (a dot name: plain readers of `<kind>/*.parquet` skip it);
2. the record `_commits/merge-<id>.json` is written (atomically), naming the batch keys whose
   shards it replaces and the merged file: the commit point;
3. the replaced shards are deleted (in bulk: one request per 1,000 on an object store; a crash may
   leave any part of them);
4. the temporary file is moved to `<kind>/part-merged-<id>.parquet`.
A crash before 2 leaves an unrecorded temporary file, which the next sweep deletes: the batch
shards still count. A crash after 2 is finished by the next owner (`roll_forward`, run when
the folder is opened, before the sweep): it deletes what is left of the replaced shards and
moves the merged file into place. A reader following the records (`committed_shards`)
sees every row once at every step. A plain reader of `<kind>/*.parquet` never sees a row twice,
but while a finish is between steps 3 and 4 it misses the rows being merged: read a folder
whose manifest says `complete`.

On an object store nothing is renamed (a move would be a COPY and a DELETE): step 1 writes the
merged file under its final name in one PUT and step 4 is not needed. A crash before 2 leaves it
unrecorded, and the sweep deletes it as it deletes any file no record names; so a plain reader
of `<kind>/*.parquet` there may see the merged rows twice until step 3 ends (read `complete`
folders, or through `committed_shards`, which is exact at every step).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from prefgen.output.commits import COMMITS_DIR, MERGE_PREFIX, CommitLog, write_compact_json
from prefgen.input.read import read_parquet
from prefgen.output.files import PAIRS_DIR, REJECTS_DIR
from prefgen.output.storage import Storage

SHARD_TARGET_BYTES = 128 * 2**20  # merged files grow to about this size
SHARD_KINDS = (PAIRS_DIR, REJECTS_DIR)


class BrokenMerge(RuntimeError):
    """A merge record names a file that is neither in place nor waiting under its temporary name."""


def merged_name(merge_id: str) -> str:
    return f"part-merged-{merge_id}.parquet"


def temporary_name(merge_id: str, store: Storage | None = None) -> str:
    """Where step 1 writes: a dot name on local disk; the final name where nothing is renamed."""
    return f".tmp-merge-{merge_id}.parquet" if store is None or store.renames else merged_name(merge_id)


def has_shard(commit: dict, kind: str) -> bool:
    """Whether a batch wrote a shard of this kind (a writer skips an empty one)."""
    return commit["pairs"] > 0 if kind == PAIRS_DIR else sum(commit["rejects"].values()) > 0


def shard_names(commits: list[dict], merges: list[dict], kind: str) -> list[str]:
    """The committed shard files of one kind, by name: merged files replace the batch shards they hold."""
    replaced = {key for m in merges if m["kind"] == kind for key in m["sources"]}
    names = [f"part-{c['key']}.parquet" for c in commits if has_shard(c, kind) and c["key"] not in replaced]
    return sorted(names) + [merged_name(m["merge"]) for m in merges if m["kind"] == kind]


def roll_forward(store: Storage, merges: list[dict]) -> int:
    """Finish the merges a crash interrupted after their record (steps 3 and 4); returns how many.

    Lists each kind's folder once (only when there are merge records)."""
    finished, listed = 0, {}
    for m in merges:
        kind = m["kind"]
        final, tmp = f"{kind}/{merged_name(m['merge'])}", f"{kind}/{temporary_name(m['merge'], store)}"
        if kind not in listed:
            listed[kind] = {e.key for e in store.list(kind)[0]}
        present = listed[kind]
        left = [key for key in (f"{kind}/part-{source}.parquet" for source in m["sources"]) if key in present]
        if final in present and (store.renames or not left):
            continue
        if tmp not in present:
            raise BrokenMerge(f"{store.join(COMMITS_DIR)}/{MERGE_PREFIX}{m['merge']}.json names {final}, "
                              f"which is neither there nor under {tmp}")
        store.delete_many(left)
        if store.renames:
            store.rename(tmp, final)
        finished += 1
    return finished


def plan_groups(sizes: dict[str, int], target: int) -> list[list[str]]:
    """Batch shards (name -> bytes) grouped, in name order, into groups of at most `target` bytes;
    a group of one is left alone, and merged files are never merged again."""
    groups, current, total = [], [], 0
    for name in sorted(n for n in sizes if not n.startswith("part-merged-")):
        if current and total + sizes[name] > target:
            groups.append(current)
            current, total = [], 0
        current.append(name)
        total += sizes[name]
    groups.append(current)
    return [g for g in groups if len(g) > 1]


def compact(store: Storage, kind: str, sizes: dict[str, int], before_commit: Callable[[], None],
            target: int = SHARD_TARGET_BYTES, after_step: Callable[[str], None] = lambda step: None) -> list[dict]:
    """Merge the committed batch shards of `kind` (name -> bytes) towards `target`; returns the records.

    `before_commit` runs before each record is written (the lease check); `after_step` after
    each step (tests inject crashes there)."""
    records = []
    for group in plan_groups(sizes, target):
        merge_id = uuid.uuid4().hex[:16]
        tmp = f"{kind}/{temporary_name(merge_id, store)}"
        rows, writer, sink = 0, None, pa.BufferOutputStream()
        try:
            for name in group:
                table = read_parquet(store, f"{kind}/{name}")
                writer = writer or pq.ParquetWriter(sink, table.schema)
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer:
                writer.close()
        store.put(tmp, sink.getvalue().to_pybytes())
        after_step("written")
        before_commit()
        record = {"merge": merge_id, "kind": kind, "sources": [n.removeprefix("part-").removesuffix(".parquet")
                                                               for n in group], "rows": rows}
        write_compact_json(store, f"{COMMITS_DIR}/{MERGE_PREFIX}{merge_id}.json", record)
        after_step("recorded")
        store.delete_many([f"{kind}/{name}" for name in group])  # one bulk request per 1,000 on an object store
        after_step("deleted")
        if store.renames:
            store.rename(tmp, f"{kind}/{merged_name(merge_id)}")
        after_step("moved")
        records.append(record)
    return records


def committed_shards(store: Storage, kind: str = PAIRS_DIR) -> list[str]:
    """The shard files of `kind` (pairs or rejects) that count, as keys under `store`: every row once.

    Follows the commit log, so it never returns an uncommitted shard nor a batch shard a merged
    file replaced, and lists no data folder; during a finish's compaction it may name a merged
    file still under its temporary name (if that file is gone when read, the merge has just moved
    it: call again). Read these, not `pairs/*.parquet`, while a run owns the folder."""
    log = CommitLog.read(store)
    names = shard_names(log.commits(), log.merges, kind)
    pending = [m for m in log.merges if m["kind"] == kind] if store.renames else []  # nothing renamed elsewhere
    for m in pending:
        if not store.exists(f"{kind}/{merged_name(m['merge'])}"):
            names[names.index(merged_name(m["merge"]))] = temporary_name(m["merge"])
    return [f"{kind}/{name}" for name in names]
