"""Object stores (S3 and S3-compatible stores, GCS, Azure) behind `Storage`, through obstore.

One store per bucket. S3's endpoint, credentials and region come from the standard variables
(`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`), which obstore reads itself; an `http://`
endpoint (MinIO, a test server) is allowed. GCS reads `GOOGLE_APPLICATION_CREDENTIALS` /
`GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_SERVICE_ACCOUNT_KEY`, Azure its `AZURE_*` variables; plain HTTP
elsewhere (an emulator) takes the store's own `GOOGLE_ALLOW_HTTP` / `AZURE_ALLOW_HTTP` (`_allow_http`).

Requests, as counted: a put is one PUT up to `MULTIPART_BYTES` (above it, a multipart upload:
its parts plus the two POSTs that open and close it, all counted as PUT); a read one GET; a
listing one LIST per page of 1,000; a delete one DELETE; a bulk delete one DELETE per 1,000 keys on
S3 (per 256 on Azure, per key on GCS); a prefix delete one LIST per page and a bulk delete. Nothing
here copies or renames. obstore's errors become `Conflict` (a refused condition),
`FileNotFoundError`, or `OSError` naming the object, so callers retry storage faults as they do
on disk.

A store without conditional writes (older S3-compatible servers; obstore is told so by
`AWS_CONDITIONAL_PUT=disabled`) still works: put-if-absent and put-if-match then read the
object's head first and write after, two steps rather than one, and a warning says so once.
"""

from __future__ import annotations

import os
import posixpath
from datetime import timedelta

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError

from prefgen.output.storage import REQUEST_TIMEOUT_S, RETRY_TIMEOUT_S, Conflict, Entry, Requests

MULTIPART_BYTES = 64 * 2**20
PAGE = 1000
STORE_OF_SCHEME = {"s3": "aws", "gs": "google", "az": "azure", "abfs": "azure", "abfss": "azure", "azure": "azure"}
ENV_PREFIX = {"aws": "AWS", "google": "GOOGLE", "azure": "AZURE"}  # the store's environment variables' names
# keys per request of a bulk delete: S3's DeleteObjects takes 1,000, an Azure blob batch 256; GCS
# has no bulk delete in the API obstore speaks, so each key is a DELETE of its own
BULK_DELETE = {"aws": 1000, "azure": 256, "google": 1}
RETRY = {"max_retries": 3, "retry_timeout": timedelta(seconds=RETRY_TIMEOUT_S),
         "backoff": {"init_backoff": timedelta(milliseconds=200), "max_backoff": timedelta(seconds=5), "base": 2}}


def _endpoint(scheme: str) -> str | None:
    if scheme != "s3":
        return None
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")


def _allow_http(scheme: str) -> bool:
    """Plain HTTP for this store: an `http://` S3 endpoint, or the store's own `<PREFIX>_ALLOW_HTTP`
    (or `ALLOW_HTTP`) set true, as for a GCS emulator. obstore reads those variables itself only
    when given no client options, and prefgen always gives some (the timeout)."""
    endpoint = _endpoint(scheme)
    if endpoint and endpoint.startswith("http://"):
        return True
    names = [f"{ENV_PREFIX[STORE_OF_SCHEME[scheme]]}_ALLOW_HTTP"] if scheme in STORE_OF_SCHEME else []
    return any(os.environ.get(n, "").strip().lower() in ("1", "true", "yes") for n in (*names, "ALLOW_HTTP"))


class ObjectBackend:
    renames = False

    def __init__(self, name: str):
        """`name`: `scheme://bucket`."""
        self.name, self.requests, self.warned = name, Requests(), False
        scheme, _, self.bucket = name.partition("://")
        self.per_delete = BULK_DELETE.get(STORE_OF_SCHEME.get(scheme, ""), PAGE)  # keys per bulk DELETE request
        options = {"timeout": f"{REQUEST_TIMEOUT_S}s"}  # a write's duration is bounded: see runstate.TAKEOVER_WAIT_S
        if _allow_http(scheme):
            options["allow_http"] = True
        self.store = obstore.store.from_url(name, client_options=options, retry_config=RETRY)

    def _key(self, path: str) -> str:
        """`bucket/key` -> `key`."""
        return path.partition("/")[2]

    def _uri(self, path: str) -> str:
        return f"{self.name}/{self._key(path)}"

    def _fail(self, exc: BaseError, what: str, path: str) -> OSError:
        if isinstance(exc, FileNotFoundError):
            return FileNotFoundError(f"{self._uri(path)} does not exist")
        return OSError(f"{what} {self._uri(path)} failed: {type(exc).__name__}: {exc}")

    def read(self, path: str, uri: str) -> tuple[bytes, str]:
        self.requests.count("GET", path)
        try:
            got = obstore.get(self.store, self._key(path))
            data = bytes(got.bytes())
        except FileNotFoundError:
            raise FileNotFoundError(f"{uri} does not exist") from None
        except BaseError as exc:
            raise self._fail(exc, "reading", path) from exc
        self.requests.bytes["GET"] += len(data)
        return data, _version(got.meta)

    def _put(self, path: str, data: bytes, mode) -> str:
        parts = 1 if len(data) <= MULTIPART_BYTES else -(-len(data) // MULTIPART_BYTES) + 2
        sent = True
        try:
            return _version(obstore.put(self.store, self._key(path), data, mode=mode, use_multipart=parts > 1,
                                        chunk_size=MULTIPART_BYTES))
        except NotImplementedError:  # obstore refused the condition before sending anything
            sent = False
            raise
        finally:
            if sent:
                self.requests.count("PUT", path, n=parts, size=len(data))

    def _unconditional(self, path: str, data: bytes, expected: str | None, uri: str) -> str:
        """What a store without conditional writes gets: the head compared first, then a plain put."""
        if not self.warned:
            self.warned = True
            print(f"[prefgen] warning: {self.name} does not do conditional writes here; the lease and commits are "
                  "checked with a read before the write, not atomically: run one prefgen per output at a time")
        found = self.head(path)
        if expected is None and found is not None:
            raise Conflict(f"{uri} exists already")
        if expected is not None and (found is None or found.version.partition("|")[0] != expected.partition("|")[0]):
            raise Conflict(f"{uri} changed or is gone (expected version {expected})")
        return self.put(path, data, uri)

    def put(self, path: str, data: bytes, uri: str) -> str:
        try:
            return self._put(path, data, "overwrite")
        except BaseError as exc:
            raise self._fail(exc, "writing", path) from exc

    def put_if_absent(self, path: str, data: bytes, uri: str) -> str:
        try:
            return self._put(path, data, "create")
        except NotImplementedError:
            return self._unconditional(path, data, None, uri)
        except AlreadyExistsError:
            raise Conflict(f"{uri} exists already") from None
        except BaseError as exc:
            raise self._fail(exc, "writing", path) from exc

    def put_if_match(self, path: str, data: bytes, version: str, uri: str) -> str:
        e_tag, _, generation = version.partition("|")
        try:
            condition = {k: v for k, v in (("e_tag", e_tag), ("version", generation)) if v}
            if not condition:
                raise ValueError(f"{uri}: no version to condition the write on ({version!r})")
            return self._put(path, data, condition)
        except NotImplementedError:
            return self._unconditional(path, data, version, uri)
        except (PreconditionError, FileNotFoundError):
            raise Conflict(f"{uri} changed or is gone (expected version {version})") from None
        except BaseError as exc:
            raise self._fail(exc, "writing", path) from exc

    def head(self, path: str) -> Entry | None:
        self.requests.count("HEAD", path)
        try:
            meta = obstore.head(self.store, self._key(path))
        except FileNotFoundError:
            return None
        except BaseError as exc:
            raise self._fail(exc, "reading", path) from exc
        return Entry(path, meta["size"], _version(meta))

    def kind(self, path: str) -> str | None:
        if self.head(path) is not None:
            return "file"
        objects, folders = self.list(path)
        return "folder" if objects or folders else None

    def list(self, path: str) -> tuple[list[Entry], list[str]]:
        try:
            found = obstore.list_with_delimiter(self.store, self._key(path) or None)
        except BaseError as exc:
            raise self._fail(exc, "listing", path) from exc
        objects = [Entry(f"{self.bucket}/{m['path']}", m["size"], _version(m)) for m in found["objects"]]
        folders = [f"{self.bucket}/{p}" for p in found["common_prefixes"]]
        self._count_listing(path, len(objects) + len(folders))
        return sorted(objects, key=lambda e: e.key), sorted(folders)

    def list_all(self, path: str) -> list[Entry]:
        prefix = self._key(path)
        try:
            found = [m for chunk in obstore.list(self.store, f"{prefix}/" if prefix else None, chunk_size=PAGE)
                     for m in chunk]
        except BaseError as exc:
            raise self._fail(exc, "listing", path) from exc
        self._count_listing(path, len(found))
        return sorted((Entry(f"{self.bucket}/{m['path']}", m["size"], _version(m)) for m in found), key=lambda e: e.key)

    def _count_listing(self, path: str, entries: int) -> None:
        self.requests.count("LIST", path, n=1 + max(entries - 1, 0) // PAGE, folder=True)
        self.requests.listed += entries

    def delete(self, path: str) -> None:
        self.requests.count("DELETE", path)
        try:
            obstore.delete(self.store, self._key(path))
        except FileNotFoundError:
            pass
        except BaseError as exc:
            raise self._fail(exc, "deleting", path) from exc

    def delete_many(self, paths: list[str]) -> None:
        """Bulk DELETEs (`BULK_DELETE` keys each; S3 DeleteObjects: 1,000); keys already gone are no error."""
        folder = posixpath.commonpath(paths) if len(paths) > 1 else posixpath.dirname(paths[0])
        keys = [self._key(p) for p in paths]
        for start in range(0, len(keys), PAGE):
            chunk = keys[start:start + PAGE]
            self.requests.count("DELETE", folder, n=-(-len(chunk) // self.per_delete), folder=True)
            try:
                obstore.delete(self.store, chunk)
            except FileNotFoundError:
                pass
            except BaseError as exc:
                raise self._fail(exc, "deleting under", folder) from exc

    def delete_prefix(self, path: str) -> int:
        found = [e.key for e in self.list_all(path)]
        if found:
            self.delete_many(found)
        return len(found)

    def make_folder(self, path: str) -> None:
        """Object stores have no folders: nothing to do (and no marker object)."""

    def rename(self, src: str, dst: str) -> None:
        raise NotImplementedError(f"{self.name}: objects are never renamed on an object store")


def _version(meta) -> str:
    """`<ETag>|<version or generation>`: what `put_if_match` sends back as the store's condition."""
    return f"{meta.get('e_tag') or ''}|{meta.get('version') or ''}"
