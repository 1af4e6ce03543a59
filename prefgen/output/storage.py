"""The one storage object every reader and writer of prefgen goes through: local disk or an object store.

`storage(uri)` gives a `Storage` rooted at a folder (or a file) URI: a local path, `file://`,
`s3://bucket/prefix`, `gs://bucket/prefix` (also `az://`, which obstore serves the same way).
A URI becomes a `Storage` once, where it comes in (the run's output, an input file, a CLI
argument); from there the `Storage` is passed on, `child(key)` for a folder under it. Sent to
another process (an engine actor, a writer task) it travels as its URI and is served there by
that process's own backend. Keys are relative, `/`-separated (`_commits/k.json`). Operations: `read`, `read_versioned`,
`put`, `put_if_absent`, `put_if_match` (on the version `read_versioned` or a put returned),
`read_json`, `head`, `exists`, `kind`, `list` (one level, with sizes), `list_all` (recursive), `delete`,
`delete_many` (bulk), `delete_prefix`, and `make_folder` (local disk only: object stores have no folders and get no
directory-marker objects). `Conflict` is what a conditional write raises when refused.

Backends (`local_store.py`, `object_store.py`):
- local disk: a put is a temporary file renamed into place; put-if-absent links a temporary file
  to its name (refused if it exists); put-if-match compares the content's hash under a lock on
  the folder. Exact among processes of one host, and across hosts only where the shared mount
  honours `flock` and hard links (see README).
- object stores through obstore: one PUT per object (parts for over 64 MiB), nothing renamed,
  never a COPY; put-if-absent is `If-None-Match: *` (S3) / generation 0 (GCS); put-if-match is
  `If-Match: <ETag>` (S3) / the generation (GCS). A store without them gets a head read before
  the write instead (`object_store.py`; README).

Why obstore: of the maintained clients, it alone offers both conditional writes on S3, GCS and
Azure through one API (`mode="create"`, `UpdateVersion(e_tag=, version=)`), reads the standard
`AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, credentials, region) as AWS's
tools do, and maps each call to one request: a small object is one PUT, and it writes no
directory markers. The others: pyarrow's filesystems have no conditional put, their `move` is a
COPY plus a DELETE, `create_dir` writes a marker object per folder level and their output
streams upload small files as multipart (three requests); s3fs/fsspec has put-if-absent only
(`pipe_file(mode="create")`, "only known to work on AWS S3" by its own docstring), no `If-Match`
on a write, and is S3 only (GCS is gcsfs, another API); boto3 has both conditions, for S3 only.
`datasets` still reads `s3://` through s3fs.

Every storage counts its requests by kind (PUT, GET, LIST, DELETE, COPY, HEAD) with bytes and
per folder (`Requests`), shared by every `Storage` of one backend: what a run costs on an object
store, measured by `benchmarks/bookkeeping.py` and the tests. Retries: obstore retries transient
HTTP faults itself (3 times within 30 s); a whole write (a shard, a commit) is tried again by
`with_retries` as README promises: 5 tries, pausing 0.5, 1, 2 and 4 s.
"""

from __future__ import annotations

import json
import posixpath
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REQUEST_KINDS = ("PUT", "GET", "LIST", "DELETE", "COPY", "HEAD")
OBJECT_SCHEMES = ("s3", "gs", "az", "abfs", "abfss")
WRITE_ATTEMPTS = 5  # a write is tried this often...
WRITE_PAUSE_S = 0.5  # ...pausing 0.5, 1, 2, 4 s in between
REQUEST_TIMEOUT_S, RETRY_TIMEOUT_S = 30, 30  # an object store request's limit; its client's retries' window
WRITE_BOUND_S = REQUEST_TIMEOUT_S + RETRY_TIMEOUT_S  # the longest one write (a try of `with_retries`) lasts


class Conflict(Exception):
    """A conditional write was refused: the object exists (put-if-absent) or changed (put-if-match)."""


@dataclass(frozen=True)
class Entry:
    """An object: its key relative to the storage's root, size in bytes and version (ETag or hash)."""

    key: str
    size: int
    version: str | None = None

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)


class Requests:
    """Requests made, by kind (`calls`), bytes moved by kind (`bytes`), and per (kind, folder)."""

    def __init__(self):
        self.calls: Counter = Counter()
        self.bytes: Counter = Counter()
        self.by_folder: Counter = Counter()  # (kind, absolute folder) -> requests
        self.listed = 0  # entries the LIST requests returned
        self._lock = threading.Lock()

    def count(self, kind: str, path: str, n: int = 1, size: int = 0, folder: bool = False) -> None:
        with self._lock:
            self.calls[kind] += n
            self.bytes[kind] += size
            self.by_folder[(kind, path.rstrip("/") if folder else posixpath.dirname(path))] += n

    def in_folder(self, kind: str, folder_uri: str) -> int:
        """Requests of `kind` on objects directly under `folder_uri` (as `storage(...).uri` spells it)."""
        return self.by_folder[(kind, _path_of(folder_uri).rstrip("/"))]

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.bytes.clear()
            self.by_folder.clear()
            self.listed = 0

    def snapshot(self) -> dict:
        kinds = [*REQUEST_KINDS, *sorted(set(self.calls) - set(REQUEST_KINDS))]  # RENAME: local disk
        return {"requests": {k: self.calls[k] for k in kinds}, "bytes": {k: self.bytes[k] for k in kinds},
                "listed": self.listed}


def scheme_of(uri: str) -> str:
    """A URI's scheme: `file` for a local path or a file:// URI, else `s3`, `gs`, `az`, ..."""
    return uri.partition("://")[0] if "://" in uri else "file"


def _path_of(uri: str) -> str:
    """The backend's path for a URI: an absolute local path, or `bucket/key` for an object store."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return str(Path(uri).expanduser().resolve())
    if scheme == "file":
        return str(Path(rest).resolve())
    return rest.rstrip("/")


class Storage:
    """A folder (or file) on one backend; keys are relative to it."""

    def __init__(self, uri: str, backend):
        self.uri, self.backend, self.root = uri.rstrip("/") or uri, backend, _path_of(uri)
        self.requests: Requests = backend.requests
        self.renames: bool = backend.renames  # whether a rename is one atomic step (local disk only)

    def __repr__(self):
        return f"Storage({self.uri!r})"

    def __reduce__(self):  # sent to another process: that process's own backend serves it
        return storage, (self.uri,)

    def path(self, key: str = "") -> str:
        return f"{self.root}/{key}" if key else self.root

    def join(self, key: str) -> str:
        """The URI of `key`."""
        return f"{self.uri}/{key}" if key else self.uri

    def child(self, key: str) -> Storage:
        """The storage rooted at folder `key` under this one, on the same backend."""
        return Storage(self.join(key), self.backend)

    def read(self, key: str = "") -> bytes:
        """The object's bytes; FileNotFoundError naming its URI when there is none."""
        return self.backend.read(self.path(key), self.join(key))[0]

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """(bytes, version) of the object, or None when there is none: the version for `put_if_match`."""
        try:
            return self.backend.read(self.path(key), self.join(key))
        except FileNotFoundError:
            return None

    def read_json(self, key: str) -> dict | None:
        found = self.read_versioned(key)
        return None if found is None else json.loads(found[0])

    def put(self, key: str, data: bytes) -> str:
        """Write the object whole (readers see the old or the new one, never a part); returns its version."""
        return self.backend.put(self.path(key), data, self.join(key))

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Write the object only if none exists; Conflict otherwise."""
        return self.backend.put_if_absent(self.path(key), data, self.join(key))

    def put_if_match(self, key: str, data: bytes, version: str) -> str:
        """Replace the object only if it still has `version`; Conflict if it changed or is gone."""
        return self.backend.put_if_match(self.path(key), data, version, self.join(key))

    def head(self, key: str = "") -> Entry | None:
        found = self.backend.head(self.path(key))
        return None if found is None else Entry(key, found.size, found.version)

    def exists(self, key: str = "") -> bool:
        return self.head(key) is not None

    def kind(self, key: str = "") -> str | None:
        """"file", "folder" (a directory, or a prefix objects live under) or None."""
        return self.backend.kind(self.path(key))

    def list(self, prefix: str = "") -> tuple[list[Entry], list[str]]:
        """The objects directly under folder `prefix` (sorted by key) and its subfolders' keys."""
        objects, folders = self.backend.list(self.path(prefix))
        return ([Entry(self._key(e.key), e.size, e.version) for e in objects],
                [self._key(f) for f in folders])

    def list_all(self, prefix: str = "") -> list[Entry]:
        """Every object under folder `prefix`, at any depth."""
        return [Entry(self._key(e.key), e.size, e.version) for e in self.backend.list_all(self.path(prefix))]

    def delete(self, key: str) -> None:
        """Delete the object; no error if it is already gone."""
        self.backend.delete(self.path(key))

    def delete_many(self, keys: list[str]) -> None:
        """Delete these objects (no error for one already gone): on an object store one bulk request
        per 1,000 keys (S3 DeleteObjects), on local disk one unlink each."""
        if keys:
            self.backend.delete_many([self.path(k) for k in keys])

    def delete_prefix(self, prefix: str) -> int:
        """Delete everything under folder `prefix` (the folder too, on local disk); returns how many objects."""
        return self.backend.delete_prefix(self.path(prefix))

    def make_folder(self, prefix: str) -> None:
        """Create the folder on local disk; nothing on an object store (no marker objects)."""
        self.backend.make_folder(self.path(prefix))

    def rename(self, src: str, dst: str) -> None:
        """Local disk only (`renames`): move an object atomically."""
        self.backend.rename(self.path(src), self.path(dst))

    def _key(self, path: str) -> str:
        return path[len(self.root):].lstrip("/")


_BACKENDS: dict[str, object] = {}
_LOCK = threading.Lock()


def backend_for(uri: str):
    """The backend serving `uri`: one per process for local disk, one per bucket for object stores."""
    scheme = scheme_of(uri)
    name = "local" if scheme == "file" else f"{scheme}://{_path_of(uri).split('/', 1)[0]}"
    with _LOCK:
        if name not in _BACKENDS:
            if scheme == "file":
                from prefgen.output.local_store import LocalBackend
                _BACKENDS[name] = LocalBackend()
            elif scheme in OBJECT_SCHEMES:
                from prefgen.output.object_store import ObjectBackend
                _BACKENDS[name] = ObjectBackend(name)
            else:
                raise ValueError(f"{uri}: unknown storage scheme '{scheme}://' "
                                 "(local paths, file://, s3://, gs://, az://)")
        return _BACKENDS[name]


def storage(uri: str) -> Storage:
    """The storage rooted at `uri` (a folder or a file)."""
    return Storage(uri, backend_for(uri))


def storage_of_file(uri: str) -> tuple[Storage, str]:
    """(storage of the file's folder, the file's name): to read or write one file given by its URI."""
    head, _, name = uri.rstrip("/").rpartition("/")
    if "://" not in uri:
        parent = Path(uri).expanduser().resolve()
        return storage(str(parent.parent)), parent.name
    return storage(head), name


def with_retries(write: Callable[[], object], attempts: int = WRITE_ATTEMPTS, pause_s: float = WRITE_PAUSE_S,
                 sleep: Callable[[float], None] = time.sleep, log=print, no_retry: tuple[type, ...] = ()):
    """Call `write` until it succeeds; retry storage errors (OSError) with doubling pauses."""
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except no_retry:
            raise
        except OSError as exc:
            if attempt == attempts:
                raise
            log(f"[prefgen] storage write failed ({exc!r}); try {attempt + 1}/{attempts} in {pause_s:.1f} s")
            sleep(pause_s)
            pause_s *= 2
    raise AssertionError("unreachable")
