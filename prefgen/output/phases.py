"""Phased mode's bookkeeping: which phases an earlier attempt finished, so that a resumed run
reuses them instead of starting their engines again.

In phased mode every stage but the last writes its output rows (rejected rows included) under
`<output>/_phases/<config digest>/`:
- `<nn>-<stage>-<token8>/`: the Parquet files one attempt wrote for phase nn; the attempt's
  lease token in the name keeps the writers of different attempts apart, so a stray writer of a
  killed attempt cannot add rows to the folder a later attempt reads;
- `<nn>-<stage>.json`: the phase's marker, written by the driver once the write has completed
  (and while it holds the lease): the folder, its row count and ids digest, and the ids of the
  rows that went in but did not come out (batches Ray Data gave up on).
A phase is finished only with its marker, and only while its folder holds exactly the rows the
marker names. A resumed attempt reuses the finished phases in order as long as each holds every
row still to do (a row lost with its batch in a phase is not held: it is to be redone, there
or after a lost node, and not rejected again), reading back only those rows (the last stage streams into the writer and may
have committed some batches before the crash). From the first phase it cannot reuse on, it
deletes that phase's folders and markers and those of every later phase, and runs them again.
`RunState.finish` deletes `_phases/` when the run completes; `--overwrite` deletes it too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from prefgen.input.read import read_parquet

from prefgen.output.files import PHASES_DIR, write_json
from prefgen.output.storage import Storage
from prefgen.output.runstate import batch_key


def keep_ids(batch: pa.Table, ids: list[str]) -> pa.Table:
    """The rows of `batch` whose id is in `ids` (a reused phase read back for the rows still to do)."""
    return batch.filter(pc.is_in(batch["id"], value_set=pa.array(ids, pa.string())))


def phase_name(index: int, stage: str) -> str:
    """`01-<stage>` for the first phase: a file name (a stage name may hold '#' or ':')."""
    return f"{index + 1:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '-', stage)}"


@dataclass
class Phase:
    """A finished phase: where its rows are and which rows it covered."""

    index: int
    stage: str
    path: str  # folder URI of its Parquet files
    ids: set[str]  # the rows it wrote
    failed: set[str]  # the rows that went in and did not come out

    @property
    def covered(self) -> set[str]:
        return self.ids | self.failed


def reuse_refusal(marker: dict | None, found: list[str] | None, todo: set[str]) -> str | None:
    """Why a phase cannot be reused for the rows `todo`, or None if it can.

    `marker` is the phase's marker (None: the phase never finished), `found` the ids its folder
    holds now (None: the folder is gone)."""
    if marker is None:
        return "not finished"
    if found is None:
        return "its output folder is missing"
    if len(found) != marker["rows"] or batch_key(found) != marker["ids_digest"]:
        return f"its output holds {len(found)} rows, not the {marker['rows']} its marker names"
    missing = todo - set(found)  # rows the phase lost are run again, not given up on
    if missing:
        return f"{len(missing)} rows still to do are not in it"
    return None


class PhaseStore:
    """The phase folders and markers of one run (one config digest) in one output folder."""

    def __init__(self, output: Storage, config_digest: str, token: str):
        self.parent, self.digest, self.token = output.child(PHASES_DIR), config_digest, token
        self.store = self.parent.child(config_digest)

    def folder(self, index: int, stage: str) -> str:
        """The URI this attempt writes phase `index` to (Ray Data's writers take a URI)."""
        return self.store.join(f"{phase_name(index, stage)}-{self.token[:8]}")

    def _marker(self, index: int, stage: str) -> dict | None:
        return self.store.read_json(f"{phase_name(index, stage)}.json")

    def _ids(self, folder: str) -> list[str] | None:
        """The ids a phase folder holds (None if it is gone)."""
        files = [e for e in self.store.list_all(folder) if e.name.endswith(".parquet") and not e.name[0] in "._"]
        if not files:
            return [] if self.store.kind(folder) == "folder" else None
        return [i for e in files for i in read_parquet(self.store, e.key, columns=["id"])["id"].to_pylist()]

    def _delete(self, key: str, folder: bool) -> None:
        self.store.delete_prefix(key) if folder else self.store.delete(key)

    def clear_others(self) -> int:
        """Delete phase folders of another config (or of the older, token-keyed layout)."""
        objects, folders = self.parent.list()
        others = [(e.key, False) for e in objects] + [(f, True) for f in folders if f != self.digest]
        for key, folder in others:
            self.parent.delete_prefix(key) if folder else self.parent.delete(key)
        return len(others)

    def discard(self, index: int, stage: str) -> None:
        """Delete phase `index`'s marker and every folder of it (finished or not)."""
        name = phase_name(index, stage)
        objects, folders = self.store.list()
        for key, folder in [(e.key, False) for e in objects] + [(f, True) for f in folders]:
            if key == f"{name}.json" or key.startswith(f"{name}-"):
                self._delete(key, folder)

    def finished(self, stages: list[str], todo: set[str], log: Callable[[str], None] = print) -> list[Phase]:
        """The finished phases to reuse for the rows `todo`, in order; every phase from the first
        one that cannot be reused on is discarded, to be run again."""
        self.clear_others()
        reused: list[Phase] = []
        for index, stage in enumerate(stages):
            marker = self._marker(index, stage)
            found = self._ids(marker["folder"]) if marker else None
            refusal = reuse_refusal(marker, found, todo)
            if refusal is None:
                reused.append(Phase(index, stage, self.store.join(marker["folder"]), set(found),
                                    set(marker.get("failed_ids", []))))
                todo = todo & set(found)  # the next phase was fed these
                continue
            if marker is not None:
                log(f"[prefgen] phase {index + 1} ({stage}) of an earlier attempt is not reused: {refusal}")
            for later, later_stage in enumerate(stages[index:], start=index):
                self.discard(later, later_stage)
            break
        return reused

    def mark_done(self, index: int, stage: str, fed: set[str], before: Callable[[], None] | None = None) -> Phase:
        """Record that this attempt's write of phase `index` completed, from the rows `fed` in.

        `before` runs first (the run's lease check): a driver that lost the folder marks nothing."""
        folder = self.folder(index, stage).rsplit("/", 1)[1]
        found = self._ids(folder) or []
        failed = fed - set(found)
        if before:
            before()
        write_json(self.store, f"{phase_name(index, stage)}.json", {
            "phase": index + 1, "stage": stage, "folder": folder, "rows": len(found), "ids_digest": batch_key(found),
            "failed_ids": sorted(failed), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        return Phase(index, stage, self.store.join(folder), set(found), failed)
