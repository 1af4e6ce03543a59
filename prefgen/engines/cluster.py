"""The cluster a run is on: its nodes, where its output may go, and engines no node can hold.

- **Output on a cluster.** A local output path names a folder on each node's own disk. On a
  cluster of more than one node (or a joined one that autoscales: `ray.expected_resources`),
  the writers and engine actors of other nodes would write to their own disks, and the driver
  would read its own, so such a run is refused before any engine starts (exit 2, naming `output.path`)
  unless `output.shared_mount: true` says the path is one shared mount on every node. URIs
  (`s3://`, `gs://`, ...) are the same place from every node.
- **Placement.** Ray keeps an actor it cannot place pending for ever, and Ray Data waits for it
  for ever: a start that never happens is no failed start. So while a run's dataset executes,
  the driver watches the alive nodes (`PlacementWatch`): when no node can hold one replica of
  an engine stage (its node was lost and none like it is left, or an autoscaler never adds
  one) for `ray.placement_timeout_s`, the run stops with `PlacementTimeout` (exit 3), naming
  the stage and the resources missing. What was committed stays; the same command resumes.
  A replica is compared with what one node has, never with the cluster's totals. In phased
  mode only the running phase's stage is watched: an autoscaler adds a later phase's nodes
  only once its engines are asked for.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from prefgen.engines.placement import describe, fits, missing_on_any_node
from prefgen.output.storage import scheme_of


class PlacementTimeout(RuntimeError):
    """No node could hold an engine stage's replica for the whole placement timeout; resumable."""


def alive_nodes(ray) -> list[dict[str, float]]:
    """Each alive node's total resources (Ray's view)."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def output_refusal(path: str, shared_mount: bool, nodes: int, autoscaling: bool) -> str | None:
    """Why a run may not write to `path` on this cluster, or None when it may."""
    if scheme_of(path) != "file" or shared_mount or (nodes <= 1 and not autoscaling):
        return None
    where = f"a cluster of {nodes} nodes" if nodes > 1 else "an autoscaling cluster (ray.expected_resources is set)"
    return (f"output.path {path} is a local path and the run is on {where}: each node would write its shards and "
            "stats to its own disk and the driver would read only its own. Give output.path a URI every node "
            "reaches (s3://..., gs://...), or, if the path is one shared mount on every node (NFS, a cluster "
            "filesystem), set output.shared_mount: true")


class PlacementWatch:
    """Raises `PlacementTimeout` from `check()` once some stage has had no node able to hold one
    of its replicas for `timeout_s`. `needs`: stage label -> one replica's resources; `nodes`:
    returns the alive nodes' resources (asked at most every `interval_s`)."""

    def __init__(self, needs: dict[str, dict[str, float]], timeout_s: float, nodes: Callable[[], list[dict]],
                 interval_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.needs, self.timeout_s, self.nodes, self.interval_s, self.clock = needs, timeout_s, nodes, interval_s, clock
        self.all_needs = dict(needs)
        self.since: float | None = None  # when the stages last stopped fitting
        self.checked = float("-inf")
        self.rows_done: Callable[[], int] = lambda: 0

    def watch_only(self, *labels: str) -> None:
        """Watch these stages alone from now on (phased mode: the running phase's), clock reset."""
        self.needs = {label: self.all_needs[label] for label in labels}
        self.since = None

    def check(self) -> None:
        now = self.clock()
        if now - self.checked < self.interval_s:
            return
        self.checked = now
        nodes = self.nodes()
        homeless = {label: need for label, need in self.needs.items() if not any(fits(need, n) for n in nodes)}
        if not homeless:
            self.since = None
            return
        if self.since is None:
            self.since = now
        if now - self.since >= self.timeout_s:
            parts = [f"engine stage {label}: one replica needs {describe(need)} on one node; "
                     f"{missing_on_any_node(need, nodes)}" for label, need in homeless.items()]
            raise PlacementTimeout(
                f"no node of the cluster ({len(nodes)} alive) could hold an engine for ray.placement_timeout_s="
                f"{self.timeout_s:g} s: {'; '.join(parts)}. {self.rows_done()} finished rows are committed; add "
                "a node with those resources (or let the autoscaler) and rerun the same command to resume")


def watched(items: Iterable, check: Callable[[], None], poll_s: float = 1.0) -> Iterator:
    """`items`, pulled in a background thread, with `check()` called in this thread at least every
    `poll_s` while none comes (it may raise: the iteration then ends with its error; the thread,
    blocked in `items`, is left to the process's end). An error of `items` is raised here."""
    found: queue.Queue = queue.Queue()

    def pump():
        try:
            for item in items:
                found.put(("item", item))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            found.put(("error", exc))
        else:
            found.put(("end", None))

    threading.Thread(target=pump, name="prefgen-dataset", daemon=True).start()
    while True:
        try:
            kind, value = found.get(timeout=poll_s)
        except queue.Empty:
            check()
            continue
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield value
        check()
