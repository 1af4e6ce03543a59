"""Storage: paths and URIs, and the output's files: Parquet shards written atomically, JSON files.

Paths may be local or any URI pyarrow's filesystems accept (s3://, gs://, file://). Output shards
are written under a temporary name and then moved into place, so a reader never sees half a
shard; JSON files the same way.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from prefgen.schema import to_table


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def absolute_uri(uri: str) -> str:
    """A local path made absolute (workers do not share the driver's working directory)."""
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


# --- output -------------------------------------------------------------------------------------

PAIRS_DIR, REJECTS_DIR, STATS_DIR, PHASES_DIR = "pairs", "rejects", "_stats", "_phases"


def write_shard(uri: str, kind: str, key: str, rows: list[dict], schema: pa.Schema, before_visible=None) -> str:
    """Write rows as uri/kind/part-<key>.parquet, atomically: a temporary file moved into place.

    `before_visible` runs between the two (the run's lease check), so a writer that lost the
    folder leaves nothing a reader can see.
    """
    fs, base = filesystem(uri)
    final = f"{base}/{kind}/part-{key}.parquet"
    tmp = f"{base}/{kind}/.tmp-{uuid.uuid4().hex}.parquet"
    pq.write_table(to_table(rows, schema), tmp, filesystem=fs)
    try:
        if before_visible:
            before_visible()
    except BaseException:
        fs.delete_file(tmp)
        raise
    fs.move(tmp, final)
    return final


def read_json(uri: str, name: str) -> dict | None:
    """The JSON file `name` under `uri`, or None when it does not exist."""
    fs, base = filesystem(uri)
    try:
        with fs.open_input_stream(f"{base}/{name}") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def read_jsons(uri: str, folder: str) -> list[dict]:
    fs, base = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(f"{base}/{folder}", allow_not_found=True))
    found = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.path.endswith(".json"):
            with fs.open_input_stream(info.path) as f:
                found.append(json.loads(f.read()))
    return found


def write_json(uri: str, name: str, data: dict) -> str:
    fs, base = filesystem(uri)
    tmp = f"{base}/{name}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(data, indent=2, sort_keys=True).encode())
    fs.move(tmp, f"{base}/{name}")
    return f"{uri.rstrip('/')}/{name}"
