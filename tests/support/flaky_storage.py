"""Local storage that fails on purpose: for unit tests of what prefgen does when storage errs.

`FlakyStorage` is prefgen's local-disk backend raising `OSError` (what a storage fault is) on
writes whose path contains `match`, the first `failures` times (or always, with failures=None)."""

from prefgen.output import storage
from prefgen.output.local_store import LocalBackend


class FlakyStorage(LocalBackend):
    def __init__(self, failures: int | None, match: str = ""):
        super().__init__()
        self.failures, self.match, self.failed = failures, match, 0

    def _maybe_fail(self, path: str) -> None:
        if self.match in path and (self.failures is None or self.failed < self.failures):
            self.failed += 1
            raise OSError(f"injected storage fault #{self.failed} on {path}")

    def put(self, path, data, uri):
        self._maybe_fail(path)
        return super().put(path, data, uri)


def use_flaky_storage(monkeypatch, handler: FlakyStorage) -> FlakyStorage:
    """Make prefgen's local storage (every `storage(path)`) go through `handler`."""
    monkeypatch.setitem(storage._BACKENDS, "local", handler)
    return handler


def crash_after_first_shard_delete(monkeypatch, crash: Exception) -> None:
    """A bulk delete of several shards (a merge's sources) deletes the first one, then `crash` is
    raised: a bulk delete is not atomic, and the driver may die in the middle of one."""
    real = storage.Storage.delete_many

    def partial(self, keys):
        shards = [k for k in keys if "/part-" in k]
        if len(shards) > 1:
            real(self, shards[:1])
            raise crash
        return real(self, keys)

    monkeypatch.setattr(storage.Storage, "delete_many", partial)
