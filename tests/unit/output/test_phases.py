"""Phased mode's bookkeeping without Ray: a phase counts as finished only with its marker and
the rows it names, a resumed attempt reuses finished phases in order and redoes the rest."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefgen.output.phases import PhaseStore, keep_ids, reuse_refusal
from prefgen.output.runstate import batch_key
from prefgen.output.runstate import RunState
from prefgen.output.storage import storage

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
    store = storage(str(out))
    first = PhaseStore(store, "cfg1", "a" * 32)
    assert first.finished(STAGES, {"r1", "r2", "r3"}, quiet) == []
    run_phase(first, 0, {"r1", "r2", "r3"})
    run_phase(first, 1, {"r1", "r2", "r3"})
    marker = json.loads((out / "_phases/cfg1/01-g.json").read_text())
    assert marker["rows"] == 3 and marker["ids_digest"] == batch_key(["r3", "r1", "r2"])
    assert marker["folder"] == "01-g-aaaaaaaa"

    # the last stage committed r1 before the crash: the resume asks for r2, r3 only
    second = PhaseStore(store, "cfg1", "b" * 32)
    reused = second.finished(STAGES, {"r2", "r3"}, quiet)
    assert [(p.index, p.stage, p.ids) for p in reused] == [(0, "g", {"r1", "r2", "r3"}), (1, "h", {"r1", "r2", "r3"})]
    assert reused[1].path == f"{out}/_phases/cfg1/02-h-aaaaaaaa"
    assert phase_dirs(out) == ["01-g-aaaaaaaa", "01-g.json", "02-h-aaaaaaaa", "02-h.json"]


def test_a_phase_killed_mid_write_is_deleted_and_redone_with_every_later_one(tmp_path):
    out = tmp_path / "out"
    store = storage(str(out))
    first = PhaseStore(store, "cfg1", "a" * 32)
    run_phase(first, 0, {"r1", "r2"})
    write_part(first, 1, ["r1"])  # phase 2 was writing when the driver died: no marker
    logs = []
    second = PhaseStore(store, "cfg1", "b" * 32)
    assert [p.stage for p in second.finished(STAGES, {"r1", "r2"}, logs.append)] == ["g"]
    assert phase_dirs(out) == ["01-g-aaaaaaaa", "01-g.json"]
    assert logs == []  # an unfinished phase is simply redone

    # a phase that is not reusable takes every later phase with it, finished or not
    run_phase(second, 1, {"r1", "r2"})
    (out / "_phases/cfg1/01-g.json").unlink()
    third = PhaseStore(store, "cfg1", "c" * 32)
    assert third.finished(STAGES, {"r1", "r2"}, quiet) == []
    assert phase_dirs(out) == []


def test_a_phase_whose_folder_differs_from_its_marker_is_not_reused(tmp_path):
    out = tmp_path / "out"
    store = storage(str(out))
    first = PhaseStore(store, "cfg1", "a" * 32)
    run_phase(first, 0, {"r1", "r2"})
    write_part(first, 0, ["r1"], name="part-stray.parquet")  # a stray writer added a row after the marker
    logs = []
    assert PhaseStore(store, "cfg1", "b" * 32).finished(STAGES, {"r1", "r2"}, logs.append) == []
    assert logs == ["[prefgen] phase 1 (g) of an earlier attempt is not reused: "
                    "its output holds 3 rows, not the 2 its marker names"]
    assert phase_dirs(out) == []


def test_a_phase_that_does_not_cover_the_rows_to_do_is_redone(tmp_path):
    out = tmp_path / "out"
    store = storage(str(out))
    run_phase(PhaseStore(store, "cfg1", "a" * 32), 0, {"r1"})
    logs = []
    assert PhaseStore(store, "cfg1", "b" * 32).finished(STAGES, {"r1", "r2"}, logs.append) == []
    assert "1 rows still to do are not in it" in logs[0]


def test_rows_lost_in_a_phase_are_run_again_rather_than_given_up_on(tmp_path):
    """A row lost with its batch (its engine's node gone) is redone: a phase that lost a row still
    to do is not reused for it; one that lost only rows done since is."""
    out = tmp_path / "out"
    store = storage(str(out))
    first = PhaseStore(store, "cfg1", "a" * 32)
    phase = run_phase(first, 0, {"r1", "r2", "r3"}, out_ids=["r1", "r2"])  # r3's batch failed
    assert phase.failed == {"r3"} and phase.ids == {"r1", "r2"}
    run_phase(first, 1, {"r1", "r2"})  # phase 2 was fed what phase 1 wrote
    assert PhaseStore(store, "cfg1", "b" * 32).finished(STAGES, {"r2", "r3"}, quiet) == []
    first = PhaseStore(store, "cfg1", "a" * 32)
    run_phase(first, 0, {"r1", "r2", "r3"}, out_ids=["r1", "r2"])
    run_phase(first, 1, {"r1", "r2"})
    reused = PhaseStore(store, "cfg1", "b" * 32).finished(STAGES, {"r2"}, quiet)
    assert [p.stage for p in reused] == ["g", "h"] and reused[0].covered == {"r1", "r2", "r3"}


def test_a_driver_that_lost_the_lease_marks_nothing(tmp_path):
    out = tmp_path / "out"
    store = PhaseStore(storage(str(out)), "cfg1", "a" * 32)
    write_part(store, 0, ["r1"])

    def stale():
        raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        store.mark_done(0, "g", {"r1"}, before=stale)
    assert not (out / "_phases/cfg1/01-g.json").exists()


def test_phases_of_another_config_or_the_old_layout_are_cleared(tmp_path):
    out = tmp_path / "out"
    store = storage(str(out))
    run_phase(PhaseStore(store, "cfg0", "a" * 32), 0, {"r1"})
    (out / "_phases/3f2a9c1d/00-g").mkdir(parents=True)  # token-keyed folder of an older prefgen
    PhaseStore(store, "cfg1", "b" * 32).finished(STAGES, {"r1"}, quiet)
    assert sorted(p.name for p in (out / "_phases").iterdir()) == []


def test_a_finished_run_deletes_its_phases(tmp_path):
    out = tmp_path / "out"
    store = storage(str(out))
    state = RunState(store)
    state.open({}, "cfg1", "in1", False, log=quiet)
    state.claim(None)
    run_phase(PhaseStore(store, "cfg1", state.token), 0, {"r1"})
    state.finish({})
    assert list((out / "_phases").iterdir()) == []


def test_reuse_refusal_names_why():
    marker = {"rows": 2, "ids_digest": batch_key(["a", "b"]), "failed_ids": ["c"]}
    assert reuse_refusal(None, None, {"a"}) == "not finished"
    assert reuse_refusal(marker, None, {"a"}) == "its output folder is missing"
    assert reuse_refusal(marker, ["a", "b"], {"a", "b"}) is None
    assert reuse_refusal(marker, ["a", "b"], {"a", "c"}) == "1 rows still to do are not in it"  # c was lost
    assert reuse_refusal(marker, ["a", "x"], {"a"}).startswith("its output holds 2 rows")
    assert reuse_refusal(marker, ["a", "b"], {"a", "d"}) == "1 rows still to do are not in it"


def test_keep_ids_filters_a_batch():
    batch = pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3]})
    assert keep_ids(batch, ["c", "a"]).to_pydict() == {"id": ["a", "c"], "n": [1, 3]}


# --- the phased pipeline's use of it, on a stand-in for Ray Data ---------------------------------


class FakeDataset:
    """The few Ray Data calls `phased_dataset` makes, eagerly, on a list of Arrow tables."""

    def __init__(self, tables):
        self.tables = list(tables)

    def map_batches(self, fn, fn_kwargs=None, **_):
        return FakeDataset(fn(t, **(fn_kwargs or {})) for t in self.tables)

    def write_parquet(self, path):
        os.makedirs(path)
        for n, table in enumerate(self.tables):
            pq.write_table(table, f"{path}/{n}.parquet")

    def rows(self):
        return [r for t in self.tables for r in t.to_pylist()]


class FakeRay:
    class data:
        from_arrow = FakeDataset

        @staticmethod
        def read_parquet(path):
            return FakeDataset(pq.read_table(f"{path}/{f}") for f in sorted(os.listdir(path)))


def phased_run(monkeypatch, out, token, rows, kill_in=None, stop=None):
    """One attempt of `phased_dataset` over stages g, h, j that add 1, 10, 100 tokens to each row;
    returns the stages it ran and the rows that reached the writer."""
    from types import SimpleNamespace

    from prefgen.run import datasets
    from prefgen.output.files import write_json

    ran = []
    tokens = {"g": 1, "h": 10, "j": 100}

    def stage(batch, name):
        if name == kill_in:
            raise KeyboardInterrupt("SIGKILL")
        return batch.set_column(batch.schema.get_field_index("output_tokens"), "output_tokens",
                                pa.array([t + tokens[name] for t in batch["output_tokens"].to_pylist()], pa.int64()))

    def with_stage(ray, ds, cfg, s, device, output, token, entrance=False):
        ran.append(s.name)
        return ds.map_batches(stage, fn_kwargs={"name": s.name})

    monkeypatch.setattr(datasets, "_with_stage", with_stage)
    monkeypatch.setattr(datasets, "_with_writer", lambda ds, cfg, output, token: ds)
    out.mkdir(exist_ok=True)
    output = storage(str(out))
    write_json(output, "_lease.json", {"token": token})
    cfg = SimpleNamespace(output=SimpleNamespace(path=str(out)), digest=lambda: "cfg1")
    stages = [SimpleNamespace(name=n, label=f"{n} (generate:{n})", model=SimpleNamespace(engine=SimpleNamespace(batch_size=2)))
              for n in ("g", "h", "j")]
    work = [{"id": i, "instruction": "q", "source": "s", "line": n, "candidates": [], "output_tokens": 0,
             "reject_reason": None, "reject_detail": None} for n, i in enumerate(rows)]
    logs = []
    ds = datasets.phased_dataset(FakeRay, cfg, work, stages, {n: "cpu" for n in tokens}, output, token, logs.append,
                                 stop=stop)
    return ran, ds.rows(), logs


def test_a_phased_run_killed_in_phase_2_resumes_without_running_phase_1_again(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        phased_run(monkeypatch, out, "a" * 32, ["r1", "r2", "r3"], kill_in="h")
    ran, rows, logs = phased_run(monkeypatch, out, "b" * 32, ["r1", "r2", "r3"])
    assert ran == ["h", "j"]
    assert "[prefgen] phase 1/3 g (generate:g): reused from an earlier attempt, 3 rows (3 still to do)" in logs
    assert sorted((r["id"], r["output_tokens"]) for r in rows) == [("r1", 111), ("r2", 111), ("r3", 111)]


def test_a_phase_that_ran_while_the_run_was_asked_to_stop_is_not_marked_done(tmp_path, monkeypatch):
    """Its first stage passed the batches through untouched (run/stopping.py): reused, the phase would
    hand rows that were never generated to the next phase."""
    import signal

    from prefgen.run.stopping import StopRequested, StopSignals

    out, stop = tmp_path / "out", StopSignals(30, log=lambda m: None)
    stop.handle(signal.SIGTERM)
    with pytest.raises(StopRequested):
        phased_run(monkeypatch, out, "a" * 32, ["r1", "r2", "r3"], stop=stop)
    ran, rows, _ = phased_run(monkeypatch, out, "b" * 32, ["r1", "r2", "r3"])
    assert ran == ["g", "h", "j"]  # phase 1 again
    assert sorted((r["id"], r["output_tokens"]) for r in rows) == [("r1", 111), ("r2", 111), ("r3", 111)]


def test_a_resume_after_the_last_phase_committed_some_rows_reads_only_the_rest(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        phased_run(monkeypatch, out, "a" * 32, ["r1", "r2", "r3"], kill_in="j")
    ran, rows, logs = phased_run(monkeypatch, out, "b" * 32, ["r2", "r3"])  # r1 was committed before the kill
    assert ran == ["j"]
    assert "[prefgen] phase 2/3 h (generate:h): reused from an earlier attempt, 3 rows (2 still to do)" in logs
    assert sorted((r["id"], r["output_tokens"]) for r in rows) == [("r2", 111), ("r3", 111)]
