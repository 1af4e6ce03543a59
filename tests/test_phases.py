"""Phased mode's bookkeeping without Ray: a phase counts as finished only with its marker and
the rows it names, a resumed attempt reuses finished phases in order and redoes the rest."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefgen.phases import PhaseStore, ids_digest, keep_ids, reuse_refusal
from prefgen.runstate import RunState

STAGES = ["g", "h"]  # the phases written to disk (a third stage, the judge, streams into the writer)


def write_part(store: PhaseStore, index: int, ids: list[str], name: str = "part-0.parquet") -> None:
    """What Ray Data's write_parquet leaves: Parquet files in the attempt's phase folder."""
    folder = store.folder(index, STAGES[index])
    os.makedirs(folder, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "instruction": [f"q {i}" for i in ids]}), f"{folder}/{name}")


def run_phase(store: PhaseStore, index: int, fed: set[str], out_ids=None):
    write_part(store, index, sorted(fed if out_ids is None else out_ids))
    return store.mark_done(index, STAGES[index], set(fed))


def phase_dirs(out):
    root = out / "_phases" / "cfg1"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def quiet(msg):
    pass


def test_a_resumed_attempt_reuses_finished_phases_for_the_rows_still_to_do(tmp_path):
    out = tmp_path / "out"
    first = PhaseStore(str(out), "cfg1", "a" * 32)
    assert first.finished(STAGES, {"r1", "r2", "r3"}, quiet) == []
    run_phase(first, 0, {"r1", "r2", "r3"})
    run_phase(first, 1, {"r1", "r2", "r3"})
    marker = json.loads((out / "_phases/cfg1/01-g.json").read_text())
    assert marker["rows"] == 3 and marker["ids_digest"] == ids_digest(["r3", "r1", "r2"])
    assert marker["folder"] == "01-g-aaaaaaaa"

    # the last stage committed r1 before the crash: the resume asks for r2, r3 only
    second = PhaseStore(str(out), "cfg1", "b" * 32)
    reused = second.finished(STAGES, {"r2", "r3"}, quiet)
    assert [(p.index, p.stage, p.ids) for p in reused] == [(0, "g", {"r1", "r2", "r3"}), (1, "h", {"r1", "r2", "r3"})]
    assert reused[1].path == f"{out}/_phases/cfg1/02-h-aaaaaaaa"
    assert phase_dirs(out) == ["01-g-aaaaaaaa", "01-g.json", "02-h-aaaaaaaa", "02-h.json"]


def test_a_phase_killed_mid_write_is_deleted_and_redone_with_every_later_one(tmp_path):
    out = tmp_path / "out"
    first = PhaseStore(str(out), "cfg1", "a" * 32)
    run_phase(first, 0, {"r1", "r2"})
    write_part(first, 1, ["r1"])  # phase 2 was writing when the driver died: no marker
    logs = []
    second = PhaseStore(str(out), "cfg1", "b" * 32)
    assert [p.stage for p in second.finished(STAGES, {"r1", "r2"}, logs.append)] == ["g"]
    assert phase_dirs(out) == ["01-g-aaaaaaaa", "01-g.json"]
    assert logs == []  # an unfinished phase is simply redone

    # a phase that is not reusable takes every later phase with it, finished or not
    run_phase(second, 1, {"r1", "r2"})
    (out / "_phases/cfg1/01-g.json").unlink()
    third = PhaseStore(str(out), "cfg1", "c" * 32)
    assert third.finished(STAGES, {"r1", "r2"}, quiet) == []
    assert phase_dirs(out) == []


def test_a_phase_whose_folder_differs_from_its_marker_is_not_reused(tmp_path):
    out = tmp_path / "out"
    first = PhaseStore(str(out), "cfg1", "a" * 32)
    run_phase(first, 0, {"r1", "r2"})
    write_part(first, 0, ["r1"], name="part-stray.parquet")  # a stray writer added a row after the marker
    logs = []
    assert PhaseStore(str(out), "cfg1", "b" * 32).finished(STAGES, {"r1", "r2"}, logs.append) == []
    assert logs == ["[prefgen] phase 1 (g) of an earlier attempt is not reused: "
                    "its output holds 3 rows, not the 2 its marker names"]
    assert phase_dirs(out) == []


def test_a_phase_that_does_not_cover_the_rows_to_do_is_redone(tmp_path):
    out = tmp_path / "out"
    run_phase(PhaseStore(str(out), "cfg1", "a" * 32), 0, {"r1"})
    logs = []
    assert PhaseStore(str(out), "cfg1", "b" * 32).finished(STAGES, {"r1", "r2"}, logs.append) == []
    assert "1 rows still to do are not in it" in logs[0]


def test_rows_lost_in_a_phase_count_as_covered_and_are_not_fed_on(tmp_path):
    out = tmp_path / "out"
    first = PhaseStore(str(out), "cfg1", "a" * 32)
    phase = run_phase(first, 0, {"r1", "r2", "r3"}, out_ids=["r1", "r2"])  # r3's batch failed
    assert phase.failed == {"r3"} and phase.ids == {"r1", "r2"}
    run_phase(first, 1, {"r1", "r2"})  # phase 2 was fed what phase 1 wrote
    reused = PhaseStore(str(out), "cfg1", "b" * 32).finished(STAGES, {"r2", "r3"}, quiet)
    assert [p.stage for p in reused] == ["g", "h"] and reused[0].covered == {"r1", "r2", "r3"}


def test_a_driver_that_lost_the_lease_marks_nothing(tmp_path):
    out = tmp_path / "out"
    store = PhaseStore(str(out), "cfg1", "a" * 32)
    write_part(store, 0, ["r1"])

    def stale():
        raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        store.mark_done(0, "g", {"r1"}, before=stale)
    assert not (out / "_phases/cfg1/01-g.json").exists()


def test_phases_of_another_config_or_the_old_layout_are_cleared(tmp_path):
    out = tmp_path / "out"
    run_phase(PhaseStore(str(out), "cfg0", "a" * 32), 0, {"r1"})
    (out / "_phases/3f2a9c1d/00-g").mkdir(parents=True)  # token-keyed folder of an older prefgen
    PhaseStore(str(out), "cfg1", "b" * 32).finished(STAGES, {"r1"}, quiet)
    assert sorted(p.name for p in (out / "_phases").iterdir()) == []


def test_a_finished_run_deletes_its_phases(tmp_path):
    out = tmp_path / "out"
    state = RunState(str(out))
    state.open({}, "cfg1", "in1", False, log=quiet)
    state.claim(None)
    run_phase(PhaseStore(str(out), "cfg1", state.token), 0, {"r1"})
    state.finish({})
    assert list((out / "_phases").iterdir()) == []


def test_reuse_refusal_names_why():
    marker = {"rows": 2, "ids_digest": ids_digest(["a", "b"]), "failed_ids": ["c"]}
    assert reuse_refusal(None, None, {"a"}) == "not finished"
    assert reuse_refusal(marker, None, {"a"}) == "its output folder is missing"
    assert reuse_refusal(marker, ["a", "b"], {"a", "c"}) is None
    assert reuse_refusal(marker, ["a", "x"], {"a"}).startswith("its output holds 2 rows")
    assert reuse_refusal(marker, ["a", "b"], {"a", "d"}) == "1 rows still to do are not in it"


def test_keep_ids_filters_a_batch():
    batch = pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3]})
    assert keep_ids(batch, ["c", "a"]).to_pydict() == {"id": ["a", "c"], "n": [1, 3]}
