"""The commit log of an output folder, rolled up into segments so that a resume reads few objects.

Under `_commits/`:
- `<key>.json`: one batch's commit, written by the driver once the batch's shards exist: the ids
  it finished and its counts (`report.batch_counts`).
- `seg-<level>-<id>.json`: a segment, `{"segment": level, "commits": [batch commits]}`. Once
  `FANOUT` objects of one level exist (level 0: batch commits), the driver, still holding the
  lease, writes a segment of the next level holding all their commits (whole, under a unique
  name: a rename on local disk, one PUT on an object store), then deletes them. Level L covers
  FANOUT^L batches, so at most FANOUT - 1 objects of each level are left: under 16^6 (16.7
  million) batches leave at most 15 x 6 = 90 objects.
- `merge-<id>.json`: a shard compaction record (see `compaction.py`).
- `retire-<id>.json`: `{"retired": [batch keys]}`, commits that no longer count. A run that
  resumes retires the commits marked `fault` (rows rejected for a fault, `schema.FAULT_REASONS`,
  which the driver writes in batches of their own), so their rows are no longer done and are
  redone; their shards, no longer committed, are swept. A commit object (or segment) holding
  only retired commits is redundant, and so is a record none of whose keys any object holds.
A batch commit is written with put-if-absent: the first commit of a batch key stands, and a
second writer of it (a retried call whose first PUT landed, or another driver) is refused and
takes the stored commit as the batch's.

A crash between writing a segment and deleting what it covers leaves both: the reader takes
the union by batch key (the copies are the same commits) and reports the covered objects as
redundant, for the next owner to delete under its lease.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from prefgen.output.storage import Conflict, Storage, storage

COMMITS_DIR = "_commits"
FANOUT = 16  # this many objects of one level are rolled into one of the next
SEGMENT_PREFIX, MERGE_PREFIX, RETIRE_PREFIX = "seg-", "merge-", "retire-"


def compact_json(data: dict) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def write_compact_json(uri: str, name: str, data: dict) -> None:
    """Write `uri/name` whole (a rename on local disk, one PUT on an object store), as compact JSON."""
    storage(uri).put(name, compact_json(data))


def delete_quietly(store: Storage, key: str) -> None:
    """Delete `key`; no error if it is gone already."""
    store.delete(key)


@dataclass
class CommitLog:
    """The batch commits of an output, by level: level -> [(object name, its commits)]."""

    uri: str
    levels: dict[int, list[tuple[str, list[dict]]]] = field(default_factory=dict)
    merges: list[dict] = field(default_factory=list)  # shard compaction records
    redundant: list[str] = field(default_factory=list)  # objects a segment covers, left by a crash
    keys: set[str] = field(default_factory=set)
    retired: set[str] = field(default_factory=set)  # batch keys whose commits no longer count

    @classmethod
    def read(cls, uri: str) -> CommitLog:
        """Read every object under `_commits/` (one listing, one read each); union by batch key."""
        store = storage(uri)
        found, _ = store.list(COMMITS_DIR)
        log, objects, retirements = cls(uri), [], []
        for entry in found:
            if entry.name.startswith(".") or not entry.name.endswith(".json"):
                continue  # a temporary file of a write that never finished (local disk)
            data = json.loads(store.read(entry.key))
            if entry.name.startswith(MERGE_PREFIX):
                log.merges.append(data)
            elif entry.name.startswith(RETIRE_PREFIX):
                retirements.append((entry.name, set(data["retired"])))
                log.retired.update(data["retired"])
            elif entry.name.startswith(SEGMENT_PREFIX):
                objects.append((data["segment"], entry.name, data["commits"]))
            else:
                objects.append((0, entry.name, [data]))
        # widest first: an object whose commits a wider one already holds is a crash's leftover
        held = set()
        for level, name, commits in sorted(objects, key=lambda o: (-o[0], -len(o[2]), o[1])):
            held.update(c["key"] for c in commits)
            new = [c for c in commits if c["key"] not in log.keys and c["key"] not in log.retired]
            if not new:
                log.redundant.append(name)
                continue
            log.keys.update(c["key"] for c in new)
            log.levels.setdefault(level, []).append((name, new))
        # a record is needed while an object it outlives still holds one of its commits
        log.redundant += [name for name, keys in retirements if not keys & held]
        log.merges.sort(key=lambda m: m["merge"])
        return log

    def commits(self) -> list[dict]:
        return [c for level in sorted(self.levels, reverse=True) for _, cs in self.levels[level] for c in cs]

    def objects(self) -> int:
        return sum(len(v) for v in self.levels.values())

    def add(self, commit: dict) -> dict | None:
        """Write a batch's commit if absent; returns the commit that stands (the stored one if
        another write of this key came first), or None if this log holds it already. Then call `roll`."""
        if commit["key"] in self.keys:
            return None
        name = f"{commit['key']}.json"
        store = storage(self.uri)
        try:
            store.put_if_absent(f"{COMMITS_DIR}/{name}", compact_json(commit))
        except Conflict:
            commit = json.loads(store.read(f"{COMMITS_DIR}/{name}"))  # the first write stands
        self.keys.add(commit["key"])
        self.levels.setdefault(0, []).append((name, [commit]))
        return commit

    def retire(self, keys: list[str]) -> None:
        """Record that these batch commits no longer count (their rows are to be redone)."""
        keys = sorted(set(keys) & self.keys)
        if not keys:
            return
        write_compact_json(self.uri, f"{COMMITS_DIR}/{RETIRE_PREFIX}{uuid.uuid4().hex[:16]}.json", {"retired": keys})
        self.retired.update(keys)
        self.keys.difference_update(keys)
        for level, objects in self.levels.items():
            kept = [(name, [c for c in cs if c["key"] not in self.retired]) for name, cs in objects]
            self.redundant += [name for name, cs in kept if not cs]  # deleted after the record is written
            self.levels[level] = [(name, cs) for name, cs in kept if cs]

    def roll(self, before_roll: Callable[[], None] | None = None) -> None:
        """Roll every full level into a segment of the next; a roll that failed is redone by the next call."""
        level = 0
        while len(self.levels.get(level, [])) >= FANOUT:
            if before_roll:
                before_roll()  # the lease check: only the folder's owner rewrites its log
            covered = self.levels[level]
            name = f"{SEGMENT_PREFIX}{level + 1}-{uuid.uuid4().hex[:16]}.json"
            commits = [c for _, cs in covered for c in cs]
            write_compact_json(self.uri, f"{COMMITS_DIR}/{name}", {"segment": level + 1, "commits": commits})
            self.levels[level] = []
            self.levels.setdefault(level + 1, []).append((name, commits))
            self.redundant += [n for n, _ in covered]
            level += 1
        self.delete_redundant()

    def delete_redundant(self) -> None:
        """Delete the objects a segment covers; one that fails stays listed, for a later try."""
        if not self.redundant:
            return
        store = storage(self.uri)
        left = []
        for name in self.redundant:
            try:
                delete_quietly(store, f"{COMMITS_DIR}/{name}")
            except OSError:
                left.append(name)
        self.redundant = left
