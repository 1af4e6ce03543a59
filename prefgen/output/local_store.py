"""Local disk (and shared mounts) behind `Storage`: whole-file writes and conditional writes with files.

- `put`: the bytes go to a temporary file beside the target (`.<name>.tmp-<id>`), which is then
  renamed over it: a reader sees the old file or the new one, never a part.
- `put_if_absent`: the temporary file is hard-linked to the target name; `link` fails if the name
  exists, atomically, so of two writers exactly one succeeds and the object appears whole.
- `put_if_match`: under an exclusive `flock` on the folder, the current file's SHA-256 is compared
  with the expected version and only then renamed over. Exact among the processes that write
  through prefgen on this host; across hosts only where the mount honours `flock` (Linux's NFS
  client maps it to NFS locks; some FUSE mounts do not). Plain puts and deletes take no lock.
A version is the content's SHA-256 (hex, first 32 digits).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import uuid
from contextlib import contextmanager

from prefgen.output.storage import Conflict, Entry, Requests


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class LocalBackend:
    renames = True

    def __init__(self):
        self.requests = Requests()

    def read(self, path: str, uri: str) -> tuple[bytes, str]:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{uri} does not exist") from None
        except IsADirectoryError:
            raise IsADirectoryError(f"{uri} is a folder, not a file") from None
        self.requests.count("GET", path, size=len(data))
        return data, version_of(data)

    def _temporary(self, path: str, data: bytes) -> str:
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:12]}")  # a dot name no reader takes
        with open(tmp, "wb") as f:
            f.write(data)
        return tmp

    def _write(self, path: str, data: bytes, place) -> str:
        """Write `data` to a temporary file, then `place(tmp)` puts it under `path` (or refuses)."""
        self.requests.count("PUT", path, size=len(data))
        tmp = self._temporary(path, data)
        try:
            place(tmp)
        finally:
            _remove(tmp)  # gone already once renamed
        return version_of(data)

    def put(self, path: str, data: bytes, uri: str) -> str:
        return self._write(path, data, lambda tmp: os.replace(tmp, path))

    def put_if_absent(self, path: str, data: bytes, uri: str) -> str:
        def link(tmp):
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise Conflict(f"{uri} exists already") from None
        return self._write(path, data, link)

    def put_if_match(self, path: str, data: bytes, version: str, uri: str) -> str:
        def compare_and_replace(tmp):
            with _folder_lock(os.path.dirname(path)):
                try:
                    with open(path, "rb") as f:
                        current = version_of(f.read())
                except FileNotFoundError:
                    raise Conflict(f"{uri} is gone (expected version {version})") from None
                if current != version:
                    raise Conflict(f"{uri} changed (version {current}, expected {version})")
                os.replace(tmp, path)
        return self._write(path, data, compare_and_replace)

    def head(self, path: str) -> Entry | None:
        self.requests.count("HEAD", path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return Entry(path, st.st_size) if not os.path.isdir(path) else None

    def kind(self, path: str) -> str | None:
        self.requests.count("HEAD", path)
        return "folder" if os.path.isdir(path) else "file" if os.path.exists(path) else None

    def list(self, path: str) -> tuple[list[Entry], list[str]]:
        objects, folders = [], []
        try:
            with os.scandir(path) as found:
                for e in found:
                    if e.is_dir():
                        folders.append(e.path)
                    else:
                        objects.append(Entry(e.path, e.stat().st_size))
        except (FileNotFoundError, NotADirectoryError):
            pass
        self.requests.count("LIST", path, folder=True)
        self.requests.listed += len(objects) + len(folders)
        return sorted(objects, key=lambda e: e.key), sorted(folders)

    def list_all(self, path: str) -> list[Entry]:
        objects, folders = self.list(path)
        for folder in folders:
            objects += self.list_all(folder)
        return sorted(objects, key=lambda e: e.key)

    def delete(self, path: str) -> None:
        self.requests.count("DELETE", path)
        _remove(path)

    def delete_many(self, paths: list[str]) -> None:
        for path in paths:
            self.delete(path)

    def delete_prefix(self, path: str) -> int:
        if not os.path.isdir(path):
            return 0
        found = self.list_all(path)
        self.requests.count("DELETE", path, n=len(found), folder=True)
        shutil.rmtree(path)
        return len(found)

    def make_folder(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def rename(self, src: str, dst: str) -> None:
        self.requests.count("RENAME", dst)  # local disk only: object stores never rename
        os.replace(src, dst)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextmanager
def _folder_lock(folder: str):
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
