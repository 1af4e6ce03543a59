"""What a run has finished, so that a killed run can be resumed with every row exactly once.

The output folder holds, besides the dataset:
- `_commits/`: the commit log (`commits.py`): one commit per written batch, naming the ids it
  finished and its counts, rolled up into segments as the run goes so that a resume reads few
  objects; and the records of shard compaction (`compaction.py`). A commit of rows rejected for a
  fault (`worker_failed`, `write_failed`, `request_failed`) is marked `fault`: a run that opens
  the folder retires it, so those rows are not done and are redone (their shards, never merged,
  are swept).
  A batch's shards (`pairs/part-<key>.parquet`, `rejects/part-<key>.parquet`) count only once
  its commit exists; the driver writes the commit after the writer reported the shards, so a
  crash in between leaves uncommitted shards. They do not count (every reader goes through
  `committed_shards`), a batch redone under the same key overwrites them, and the run sweeps the
  rest when it finishes (one listing per kind), before it merges the small shards into files of
  about 128 MiB. A resume lists no shard folder: what it reads does not grow with the batches.
- `_lease.json`: the run that owns the folder, taken with a conditional write (`lease.py`).
- `manifest.json`: the config, the input, versions, counts and the history of attempts
  (`manifest.py`), and whether a run may continue the folder's run.
`RunState` is one attempt's bookkeeping over these: it opens the folder (refusing another run,
taking the lease, reading the commit log), commits batches, and finishes (sweep, compaction,
the final manifest, the lease released).
"""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from prefgen.output.commits import COMMITS_DIR, DELETE_BATCH, CommitLog
from prefgen.output.compaction import SHARD_KINDS, SHARD_TARGET_BYTES, compact, roll_forward, shard_names
from prefgen.output.files import PAIRS_DIR, PHASES_DIR, REJECTS_DIR, STATS_DIR, write_json
from prefgen.output.lease import (LEASE_CHECK_S, LEASE_FILE, TAKEOVER_WAIT_S, check_lease, claim_lease, previous_owner,
                                  take_lease)
from prefgen.output.manifest import MANIFEST_FILE, ResumeRefused, check_resumable, new_manifest, versions
from prefgen.output.storage import Storage

DATA_DIRS = (PAIRS_DIR, REJECTS_DIR, STATS_DIR, COMMITS_DIR, PHASES_DIR)


def batch_key(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


@dataclass
class RunState:
    """The output folder's bookkeeping for one attempt of a run."""

    store: Storage  # the output folder
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    manifest: dict = field(default_factory=dict)
    done_ids: set[str] = field(default_factory=set)
    commits: list[dict] = field(default_factory=list)
    attempt: dict = field(default_factory=dict)
    log: CommitLog | None = None
    lease_version: str | None = None  # the version of the lease this run wrote: its next claim's condition
    takeover_wait_s: float = TAKEOVER_WAIT_S  # see `open`
    sleep: Callable[[float], None] = time.sleep

    def open(self, config: dict, config_digest: str, in_digest: str, overwrite: bool, log=print,
             digest_parts: dict[str, str] | None = None) -> None:
        """Start fresh, or resume a run of the same output schema, config and input; refuse anything else."""
        store = self.store
        previous = store.read_json(MANIFEST_FILE)
        present = set(store.list()[1])  # one listing: the folders (prefixes) the output holds
        leftovers = [d for d in DATA_DIRS if d in present]
        if previous and not overwrite:
            check_resumable(store.uri, previous, config_digest, in_digest, digest_parts)
        elif leftovers and not overwrite:
            raise ResumeRefused(f"{store.uri} already holds data ({', '.join(leftovers)}) and no manifest; "
                                "use --overwrite")
        lease = previous_owner(store, log)
        if overwrite or not previous:
            for d in leftovers:
                store.delete_prefix(d)
            previous = None
        for d in DATA_DIRS:
            store.make_folder(d)  # local disk only: an object store gets no marker objects
        self.lease_version = take_lease(store, self.token, lease)  # fence off every earlier owner's writers...
        if lease is not None and lease[0].get("host") != socket.gethostname() and self.takeover_wait_s > 0:
            log(f"[prefgen] {store.uri} was owned by a driver on {lease[0].get('host')}; waiting "
                f"{self.takeover_wait_s:.0f} s for any write of its processes to land before reading its commits")
            self.sleep(self.takeover_wait_s)
        self.log = CommitLog.read(store)
        faults = [c for c in self.log.commits() if c.get("fault")]
        self.log.retire([c["key"] for c in faults])  # rows rejected for a fault are redone
        self.commits = self.log.commits()
        self.done_ids = {i for c in self.commits for i in c["ids"]}
        self.log.delete_redundant()  # ...then drop what a crash left: commits a segment holds,
        roll_forward(store, self.log.merges)  # and a merge past its commit point
        # uncommitted shards are not listed here (that listing grows with the batches): they do not
        # count, a batch redone under the same key overwrites its shard, and `finish` sweeps the rest
        if previous:
            redo, why = sum(len(c["ids"]) for c in faults), ", ".join(sorted({r for c in faults for r in c["rejects"]}))
            log(f"[prefgen] resuming {store.uri}: {len(self.done_ids)} rows already done"
                + (f", {redo} rows rejected for a fault ({why}) to redo" if redo else ""))
        self.manifest = previous or new_manifest(config, config_digest, in_digest, digest_parts)
        self.manifest.update(status="running", versions=versions())
        self.attempt = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows_skipped": len(self.done_ids)}
        self.manifest["attempts"].append(self.attempt)
        write_json(store, MANIFEST_FILE, self.manifest)

    def claim(self, ray_session_dir: str | None) -> None:
        """Take the folder: later writes of any earlier owner's workers are refused.

        `open` claims it (before sweeping); the driver claims it again, same token, once it knows
        the local Ray session it started, so that a resume on this host can stop its workers."""
        self.lease_version = claim_lease(self.store, self.token, self.lease_version, ray_session_dir)

    def sweep(self) -> tuple[int, dict[str, dict[str, int]]]:
        """Delete the shard files no commit names (and temporary files); returns how many, and
        the size of each file kept, per kind (one listing per kind)."""
        store = self.store
        removed, kept = 0, {}
        for d in SHARD_KINDS:
            committed = set(shard_names(self.commits, self.log.merges, d))
            kept[d] = {}
            found = store.list(d)[0]
            kept[d] = {e.name: e.size for e in found if e.name in committed}
            gone = [e.key for e in found if e.name not in committed]
            store.delete_many(gone)  # one bulk request per 1,000 on an object store
            removed += len(gone)
        return removed, kept

    def commit(self, counts: dict) -> None:
        """Record a written batch as done (its shards exist already); safe to call again after an error."""
        check_lease(self.store, self.token, LEASE_CHECK_S)  # one GET per LEASE_CHECK_S, not per commit
        stored = self.log.add(counts)  # one PUT
        if stored is not None:
            self.commits.append(stored)
            self.done_ids.update(stored["ids"])
        self.log.delete_redundant(at_least=DELETE_BATCH)  # one bulk DELETE per DELETE_BATCH covered objects

    def fail(self, error: str, status: str = "failed") -> None:
        """Record a failed attempt (or, `status="stopped"`, one stopped on request); the folder stays resumable."""
        self.attempt.update(ended=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), status=status, error=error)
        self.manifest["status"] = status
        write_json(self.store, MANIFEST_FILE, self.manifest)

    def finish(self, summary: dict, status: str = "complete", target_bytes: int = SHARD_TARGET_BYTES) -> None:
        """Sweep what no commit names, merge small shards, write the final manifest and release the folder."""
        _, kept = self.sweep()  # still under our lease: nothing uncommitted stays visible
        self.log.delete_redundant()
        faulty = {f"part-{c['key']}.parquet" for c in self.commits if c.get("fault")}  # a rerun retires them
        for kind in SHARD_KINDS:
            self.log.merges += compact(self.store, kind, {n: b for n, b in kept[kind].items() if n not in faulty},
                                       lambda: check_lease(self.store, self.token), target_bytes)
        self.attempt.update(ended=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), status=status)
        self.manifest.update(summary)
        self.manifest["status"] = status
        write_json(self.store, MANIFEST_FILE, self.manifest)
        self.store.delete_prefix(PHASES_DIR)  # intermediate results
        self.store.make_folder(PHASES_DIR)
        check_lease(self.store, self.token)  # still ours (no store deletes on a condition everywhere)
        self.store.delete(LEASE_FILE)

