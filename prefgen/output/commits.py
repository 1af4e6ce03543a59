"""The commit log of an output folder, rolled up into segments so that a resume reads few objects.

Under `_commits/`:
- `<key>.json`: one batch's commit, written by the driver once the batch's shards exist: the ids
  it finished and its counts (`report.batch_counts`). One PUT (put-if-absent).
- `seg-<level>-<id>.json`: a segment, `{"segment": level, "commits": [batch commits]}`, level L
  holding FANOUT^L commits. Rolling up costs no request of its own: the commit that would make
  the FANOUT-th object of level 0 is written as a level-1 segment instead, holding the FANOUT - 1
  commits of level 0 and itself (and, when level 1 then holds FANOUT - 1 segments too, as a
  level-2 segment holding all of those, and so on: a carry, as in counting). So every batch
  commit is exactly one PUT, and at most FANOUT - 1 live objects of each level exist: under
  16^6 (16.7 million) batches, at most 15 x 6 = 90.
- `merge-<id>.json`: a shard compaction record (see `compaction.py`).
- `retire-<id>.json`: `{"retired": [batch keys]}`, commits that no longer count. A run that
  resumes retires the commits marked `fault` (rows rejected for a fault, `schema.FAULT_REASONS`,
  which the driver writes in batches of their own), so their rows are no longer done and are
  redone; their shards, no longer committed, are swept. A commit object (or segment) holding
  only retired commits is redundant, and so is a record none of whose keys any object holds.
The objects a segment covers are redundant. They are deleted in bulk (one request per 1,000) once
`DELETE_BATCH` of them wait, and when a run opens or finishes: so fewer than `DELETE_BATCH`
redundant objects stay in the folder while a run goes. A reader skips them without reading
them: a batch commit's key is its name, and a segment read first holds it.
A batch commit is written with put-if-absent: the first commit of a batch stands, and a
second writer of it (a retried call whose first PUT landed, or another driver) is refused and
takes the stored commit as the batch's.

A crash between writing a segment and deleting what it covers leaves both: the reader takes
the union by batch key (the copies are the same commits) and reports the covered objects as
redundant, for the next owner to delete under its lease.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from prefgen.output.storage import Conflict, Storage

COMMITS_DIR = "_commits"
FANOUT = 16  # this many objects of one level are rolled into one of the next
DELETE_BATCH = 256  # redundant objects wait until this many can go in one bulk request
READ_ATTEMPTS = 5  # listings a reader makes when an object it listed is deleted before its read
SEGMENT_PREFIX, MERGE_PREFIX, RETIRE_PREFIX = "seg-", "merge-", "retire-"


def compact_json(data: dict) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def write_compact_json(store: Storage, name: str, data: dict) -> None:
    """Write `name` under `store` whole (a rename on local disk, one PUT on an object store), as compact JSON."""
    store.put(name, compact_json(data))


@dataclass
class CommitLog:
    """The batch commits of an output, by level: level -> [(object name, its commits)]."""

    store: Storage  # the output folder
    levels: dict[int, list[tuple[str, list[dict]]]] = field(default_factory=dict)
    merges: list[dict] = field(default_factory=list)  # shard compaction records
    redundant: list[str] = field(default_factory=list)  # objects a segment covers, left by a crash
    keys: set[str] = field(default_factory=set)
    retired: set[str] = field(default_factory=set)  # batch keys whose commits no longer count

    @classmethod
    def read(cls, store: Storage) -> CommitLog:
        """Read the objects under `_commits/` (one listing, one read each, segments and records
        first); a batch commit a segment already holds is not read. Union by batch key.

        A reader beside a running owner (`prefgen report`, a poll) can list an object the owner
        deletes before it is read. The owner deletes only what a wider object it wrote first
        covers (a segment, a retire record), so a fresh listing holds the same commits: the read
        starts over, up to READ_ATTEMPTS times."""
        for _ in range(READ_ATTEMPTS - 1):
            try:
                return cls._read_once(store)
            except FileNotFoundError:
                continue  # listed, then deleted by the owner: list again
        return cls._read_once(store)

    @classmethod
    def _read_once(cls, store: Storage) -> CommitLog:
        found, _ = store.list(COMMITS_DIR)
        log, objects, retirements, singles = cls(store), [], [], []
        for entry in found:
            if entry.name.startswith(".") or not entry.name.endswith(".json"):
                continue  # a temporary file of a write that never finished (local disk)
            if not entry.name.startswith((MERGE_PREFIX, RETIRE_PREFIX, SEGMENT_PREFIX)):
                singles.append(entry)  # a batch commit, named by its key: read last, if needed
                continue
            data = json.loads(store.read(entry.key))
            if entry.name.startswith(MERGE_PREFIX):
                log.merges.append(data)
            elif entry.name.startswith(RETIRE_PREFIX):
                retirements.append((entry.name, set(data["retired"])))
                log.retired.update(data["retired"])
            else:
                objects.append((data["segment"], entry.name, data["commits"]))
        in_segments = {c["key"] for _, _, commits in objects for c in commits}
        for entry in singles:
            key = entry.name.removesuffix(".json")
            if key in in_segments or key in log.retired:
                log.redundant.append(entry.name)  # covered (or retired): no need to read it
            else:
                objects.append((0, entry.name, [json.loads(store.read(entry.key))]))
        # widest first: an object whose commits a wider one already holds is a crash's leftover
        held = set(in_segments)
        for level, name, commits in sorted(objects, key=lambda o: (-o[0], -len(o[2]), o[1])):
            held.update(c["key"] for c in commits)
            new = [c for c in commits if c["key"] not in log.keys and c["key"] not in log.retired]
            if not new:
                log.redundant.append(name)
                continue
            log.keys.update(c["key"] for c in new)
            log.levels.setdefault(level, []).append((name, new))
        # a record is needed while an object it outlives still holds one of its commits
        held.update(e.name.removesuffix(".json") for e in singles)
        log.redundant += [name for name, keys in retirements if not keys & held]
        log.merges.sort(key=lambda m: m["merge"])
        return log

    def commits(self) -> list[dict]:
        return [c for level in sorted(self.levels, reverse=True) for _, cs in self.levels[level] for c in cs]

    def objects(self) -> int:
        return sum(len(v) for v in self.levels.values())

    def add(self, commit: dict) -> dict | None:
        """Write a batch's commit (one PUT) if this log does not hold it; returns the commit that
        stands (the stored one if another write of this key came first), or None if this log
        holds it already. The commit that fills level 0 is written as a segment (module doc)."""
        if commit["key"] in self.keys:
            return None
        carry = self._carry_level()
        if carry:
            covered = [o for level in range(carry) for o in self.levels.get(level, [])]
            commits = [c for _, cs in covered for c in cs] + [commit]
            name = f"{SEGMENT_PREFIX}{carry}-{uuid.uuid4().hex[:16]}.json"
            write_compact_json(self.store, f"{COMMITS_DIR}/{name}", {"segment": carry, "commits": commits})
            for level in range(carry):
                self.levels[level] = []
            self.levels.setdefault(carry, []).append((name, commits))
            self.redundant += [n for n, _ in covered]
        else:
            name = f"{commit['key']}.json"
            try:
                self.store.put_if_absent(f"{COMMITS_DIR}/{name}", compact_json(commit))
            except Conflict:
                commit = json.loads(self.store.read(f"{COMMITS_DIR}/{name}"))  # the first write stands
            self.levels.setdefault(0, []).append((name, [commit]))
        self.keys.add(commit["key"])
        return commit

    def _carry_level(self) -> int:
        """0 if the next commit goes in its own object; else the level of the segment it is
        written as: one above the run of full levels (FANOUT - 1 objects) from level 0 up."""
        level = 0
        while len(self.levels.get(level, [])) >= FANOUT - 1:
            level += 1
        return level

    def retire(self, keys: list[str]) -> None:
        """Record that these batch commits no longer count (their rows are to be redone)."""
        keys = sorted(set(keys) & self.keys)
        if not keys:
            return
        write_compact_json(self.store, f"{COMMITS_DIR}/{RETIRE_PREFIX}{uuid.uuid4().hex[:16]}.json", {"retired": keys})
        self.retired.update(keys)
        self.keys.difference_update(keys)
        for level, objects in self.levels.items():
            kept = [(name, [c for c in cs if c["key"] not in self.retired]) for name, cs in objects]
            self.redundant += [name for name, cs in kept if not cs]  # deleted after the record is written
            self.levels[level] = [(name, cs) for name, cs in kept if cs]

    def delete_redundant(self, at_least: int = 1) -> None:
        """Delete the objects segments cover, in bulk, once `at_least` of them wait; a delete that
        fails leaves them listed, for a later try."""
        if len(self.redundant) < max(at_least, 1):
            return
        try:
            self.store.delete_many([f"{COMMITS_DIR}/{name}" for name in self.redundant])
        except OSError:
            return
        self.redundant = []
