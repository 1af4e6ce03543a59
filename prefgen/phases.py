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

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from prefgen.io import PHASES_DIR, filesystem, write_json
from prefgen.runstate import batch_key


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

    def __init__(self, output: str, config_digest: str, token: str):
        self.output, self.token = output.rstrip("/"), token
        self.root = f"{PHASES_DIR}/{config_digest}"
        self.fs, base = filesystem(self.output)
        self.base = f"{base}/{self.root}"

    def folder(self, index: int, stage: str) -> str:
        """The URI this attempt writes phase `index` to."""
        return f"{self.output}/{self.root}/{phase_name(index, stage)}-{self.token[:8]}"

    def _marker(self, index: int, stage: str) -> dict | None:
        try:
            with self.fs.open_input_stream(f"{self.base}/{phase_name(index, stage)}.json") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    def _ids(self, folder: str) -> list[str] | None:
        """The ids a phase folder holds (None if it is gone)."""
        path = f"{self.base}/{folder}"
        if self.fs.get_file_info(path).type != pafs.FileType.Directory:
            return None
        data = pads.dataset(path, filesystem=self.fs, format="parquet")
        return data.to_table(columns=["id"])["id"].to_pylist() if data.files else []

    def _delete(self, info: pafs.FileInfo) -> None:
        self.fs.delete_dir(info.path) if info.type == pafs.FileType.Directory else self.fs.delete_file(info.path)

    def clear_others(self) -> int:
        """Delete phase folders of another config (or of the older, token-keyed layout)."""
        removed = 0
        parent = self.base.rsplit("/", 1)[0]
        for info in self.fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True)):
            if info.path.rstrip("/") != self.base:
                self._delete(info)
                removed += 1
        return removed

    def discard(self, index: int, stage: str) -> None:
        """Delete phase `index`'s marker and every folder of it (finished or not)."""
        name = phase_name(index, stage)
        for info in self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True)):
            if info.base_name == f"{name}.json" or info.base_name.startswith(f"{name}-"):
                self._delete(info)

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
                reused.append(Phase(index, stage, f"{self.output}/{self.root}/{marker['folder']}", set(found),
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
        write_json(self.output, f"{self.root}/{phase_name(index, stage)}.json", {
            "phase": index + 1, "stage": stage, "folder": folder, "rows": len(found), "ids_digest": batch_key(found),
            "failed_ids": sorted(failed), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        return Phase(index, stage, f"{self.output}/{self.root}/{folder}", set(found), failed)
