"""Files on the storage, written whole: Parquet shards and JSON under the output folder, its
folders' names, a single file given by its URI.

Every read and write goes through a `Storage` (`prefgen.output.storage`) the caller holds;
only a single file named by its URI (`write_file`) is opened here. A shard is written whole under its
final name (a rename on local disk, one PUT on an object store), so a reader never sees half a
shard.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prefgen.output.storage import Storage, storage_of_file
from prefgen.schema import to_table

PAIRS_DIR, REJECTS_DIR, STATS_DIR, PHASES_DIR = "pairs", "rejects", "_stats", "_phases"


def absolute_uri(uri: str) -> str:
    """A local path made absolute (workers do not share the driver's working directory)."""
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_shard(store: Storage, kind: str, key: str, rows: list[dict], schema: pa.Schema, before_visible=None) -> str:
    """Write rows as kind/part-<key>.parquet under `store`, whole: nothing is visible until it all is.

    `before_visible` runs just before (the run's lease check), so a writer that lost the folder
    writes nothing. On local disk the file is renamed into place; on an object store it is one
    PUT under its final name, never a copy. Returns the shard's URI."""
    data = parquet_bytes(to_table(rows, schema))
    if before_visible:
        before_visible()
    name = f"{kind}/part-{key}.parquet"
    store.put(name, data)
    return store.join(name)


def read_jsons(store: Storage, folder: str) -> list[dict]:
    """Every `*.json` directly under `folder`, by name (one listing, one read each)."""
    objects, _ = store.list(folder)
    return [json.loads(store.read(e.key)) for e in objects if e.name.endswith(".json")]


def write_json(store: Storage, name: str, data: dict) -> str:
    """Write `name` under `store` whole (readers see the old or the new one), as indented JSON; returns its URI."""
    store.put(name, json.dumps(data, indent=2, sort_keys=True).encode())
    return store.join(name)


def write_file(uri: str, data: bytes) -> None:
    """Write one file given by its URI (an export, a log)."""
    store, name = storage_of_file(uri)
    store.put(name, data)
