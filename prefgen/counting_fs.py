"""Counting storage calls: how many objects prefgen lists, reads and writes, for benchmarks and tests.

`CountingStorage` wraps a pyarrow FileSystem in a `PyFileSystem` handler and counts, per kind
of call, the calls and the paths they touch (`listings` and `listed` entries, `reads`,
`writes`, `moves`, `deletes`), optionally per folder (`by_folder`). `count_storage()` makes
every prefgen module that took `prefgen.storage.filesystem` go through one, until `restore()`.
On an object store each counted call is one request, so the counts say what a run costs there.
"""

from __future__ import annotations

import posixpath
import sys
from collections import Counter

import pyarrow.fs as pafs


class CountingStorage(pafs.FileSystemHandler):
    def __init__(self, inner: pafs.FileSystem | None = None, base: str = ""):
        self.inner = inner or pafs.LocalFileSystem()
        self.base = base.rstrip("/")
        self.calls: Counter = Counter()
        self.by_folder: Counter = Counter()  # (call, folder relative to base) -> count

    def reset(self) -> None:
        self.calls.clear()
        self.by_folder.clear()

    def _count(self, call: str, path: str, n: int = 1) -> None:
        self.calls[call] += n
        folder = posixpath.dirname(path) if call != "listings" else path
        if self.base and folder.startswith(self.base):
            folder = folder[len(self.base):].lstrip("/")
        self.by_folder[(call, folder)] += n

    def get_type_name(self):
        return "counting"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        for p in paths:
            self._count("infos", p)
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector):
        found = self.inner.get_file_info(selector)
        self._count("listings", selector.base_dir)
        self._count("listed", selector.base_dir + "/x", len(found))
        return found

    def create_dir(self, path, recursive):
        self.inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self._count("deletes", path)
        self.inner.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self._count("deletes", path)
        self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("not supported by the counting filesystem")

    def delete_file(self, path):
        self._count("deletes", path)
        self.inner.delete_file(path)

    def move(self, src, dest):
        self._count("moves", dest)
        self.inner.move(src, dest)

    def copy_file(self, src, dest):
        self._count("writes", dest)
        self.inner.copy_file(src, dest)

    def open_input_stream(self, path):
        self._count("reads", path)
        return self.inner.open_input_stream(path)

    def open_input_file(self, path):
        self._count("reads", path)
        return self.inner.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self._count("writes", path)
        return self.inner.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        self._count("writes", path)
        return self.inner.open_append_stream(path, metadata=metadata)


_restore: list[tuple[object, object]] = []


def count_storage(handler: CountingStorage) -> CountingStorage:
    """Route `filesystem(uri)` of every loaded prefgen module through `handler` (local paths)."""
    import prefgen.storage

    real = prefgen.storage.filesystem

    def counted(uri):
        _, path = real(uri)
        return pafs.PyFileSystem(handler), path

    for name, module in list(sys.modules.items()):
        if name.startswith("prefgen") and getattr(module, "filesystem", None) is real:
            _restore.append((module, real))
            module.filesystem = counted
    return handler


def restore() -> None:
    while _restore:
        module, real = _restore.pop()
        module.filesystem = real
