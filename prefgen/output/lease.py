"""The output folder's lease (`_lease.json`): which run owns the folder, and how an earlier owner is fenced off.

The lease names the run that owns the folder (a token, the driver's host and pid, the local
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
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable

from prefgen.engines.orphans import stop_orphans
from prefgen.output.manifest import ResumeRefused
from prefgen.output.storage import WRITE_BOUND_S, Conflict, Storage

LEASE_FILE = "_lease.json"
LEASE_CHECK_S = 10.0  # writers and the driver's commits read the lease at most this often (per process)
# a run taking the folder from a driver on another host waits this long before it reads the commit log:
# every write of the old run's processes has then landed or failed (a write starts within LEASE_CHECK_S of
# a lease read that found the old token, and lasts at most WRITE_BOUND_S)
TAKEOVER_WAIT_S = LEASE_CHECK_S + WRITE_BOUND_S
_LEASE_READ: dict[tuple[str, str], float] = {}  # (folder URI, token) -> when a read that found the token was sent


class StaleLease(RuntimeError):
    """A writer of a run that no longer owns the output folder tried to write to it."""


def check_lease(store: Storage, token: str, max_age_s: float = 0.0,
                clock: Callable[[], float] = time.monotonic) -> None:
    """Raise StaleLease unless the run holding `token` still owns the folder.

    With `max_age_s`, a read of the lease that found `token` and was sent less than that many
    seconds ago (in this process) stands for a new one: writers and the driver's commits pass
    `LEASE_CHECK_S`, so the lease costs one GET per process every 10 s, not two per batch. A write
    that relies on such a check starts within LEASE_CHECK_S of a read that still found the old
    lease; see `RunState.open` (`output/runstate.py`) for how a new owner waits that out."""
    seen = _LEASE_READ.get((store.uri, token))
    if seen is not None and clock() - seen < max_age_s:
        return
    sent = clock()
    lease = store.read_json(LEASE_FILE)
    if lease is None or lease.get("token") != token:
        _LEASE_READ.pop((store.uri, token), None)
        raise StaleLease(f"{store.uri} is now owned by another run; this writer is an orphan and stops")
    _LEASE_READ[(store.uri, token)] = sent


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease_body(token: str, ray_session_dir: str | None) -> bytes:
    lease = {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "ray_session_dir": ray_session_dir}
    return json.dumps(lease, indent=2, sort_keys=True).encode()


def take_lease(store: Storage, token: str, seen: tuple[dict, str] | None) -> str:
    """Write a run's lease over the one `seen` (lease, version) when opening, conditionally: of two
    runs taking the folder at once, exactly one succeeds. Returns the version written."""
    try:
        if seen is None:
            return store.put_if_absent(LEASE_FILE, lease_body(token, None))
        return store.put_if_match(LEASE_FILE, lease_body(token, None), seen[1])
    except Conflict:
        raise ResumeRefused(f"{store.join(LEASE_FILE)} changed while this run was taking it: another run "
                            "opened the folder at the same time") from None


def claim_lease(store: Storage, token: str, version: str | None, ray_session_dir: str | None) -> str:
    """Rewrite the owner's lease on its own `version` (none: where there is none); returns the new version."""
    lease = lease_body(token, ray_session_dir)
    try:
        return store.put_if_absent(LEASE_FILE, lease) if version is None else store.put_if_match(LEASE_FILE, lease, version)
    except Conflict:
        raise StaleLease(f"{store.join(LEASE_FILE)} was taken by another run; this run stops") from None


def previous_owner(store: Storage, log) -> tuple[dict, str] | None:
    """Refuse a folder a live run owns; stop the orphans of a dead local run. Returns the
    lease found and its version (None if there is none)."""
    found = store.read_versioned(LEASE_FILE)
    if found is None:
        return None
    lease = json.loads(found[0])
    if lease.get("host") != socket.gethostname():
        return lease, found[1]  # another host's driver: its writers are fenced off by the new lease token
    if lease.get("pid") != os.getpid() and _pid_alive(lease.get("pid", -1)):
        raise ResumeRefused(f"{store.uri} is in use by a running prefgen (pid {lease['pid']})")
    if lease.get("ray_session_dir"):
        killed = stop_orphans(lease["ray_session_dir"])
        if killed:
            log(f"[prefgen] stopped {killed} orphaned Ray process(es) of the killed run")
    return lease, found[1]
