"""A local filesystem that fails on purpose: for unit tests of what prefgen does when storage errs.

`FlakyStorage` wraps pyarrow's LocalFileSystem in a `PyFileSystem` and raises `OSError` (what
pyarrow raises for a storage fault) on writes and moves whose path contains `match`, the
first `failures` times (or always, with failures=None)."""

import pyarrow.fs as pafs


class FlakyStorage(pafs.FileSystemHandler):
    def __init__(self, failures: int | None, match: str = ""):
        self.local, self.failures, self.match, self.failed = pafs.LocalFileSystem(), failures, match, 0

    def _maybe_fail(self, path: str) -> None:
        if self.match in path and (self.failures is None or self.failed < self.failures):
            self.failed += 1
            raise OSError(f"injected storage fault #{self.failed} on {path}")

    def get_type_name(self):
        return "flaky"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("not in tests")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self._maybe_fail(dest)
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self._maybe_fail(path)
        return self.local.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.local.open_append_stream(path, metadata=metadata)


def use_flaky_storage(monkeypatch, handler: FlakyStorage) -> FlakyStorage:
    """Make prefgen's shard writes (prefgen.storage.filesystem, also prefgen.io's) go through `handler`."""
    import prefgen.io
    import prefgen.storage

    real = prefgen.storage.filesystem

    def flaky(uri):
        _, path = real(uri)
        return pafs.PyFileSystem(handler), path

    monkeypatch.setattr(prefgen.storage, "filesystem", flaky)
    monkeypatch.setattr(prefgen.io, "filesystem", flaky)
    return handler
