"""Run bookkeeping without Ray: commits, resume, refusal of a changed run, lease fencing."""

import json
import subprocess
import sys

import pytest

from prefgen.output.files import write_shard
from prefgen.report.summary import batch_counts
from prefgen.output.runstate import LEASE_FILE, ResumeRefused, RunState, StaleLease, check_lease
from prefgen.schema import REJECT_ROW


def reject(rid):
    return {"id": rid, "instruction": "q", "source": "s", "line": 1, "reason": "empty_instruction",
            "detail": None, "candidates": []}


def open_state(out, digest="cfg1", inp="in1", overwrite=False):
    state = RunState(str(out))
    state.open({"k": 1}, digest, inp, overwrite, log=lambda msg: None)
    state.claim(None)
    return state


def write_committed(state, out, ids, commit=True):
    rows = [reject(i) for i in ids]
    report = batch_counts(f"key-{'-'.join(ids)}", rows, [], rows)
    write_shard(str(out), "rejects", report["key"], rows, REJECT_ROW)
    if commit:
        state.commit(report)
    return report


def test_resume_sees_committed_ids_and_drops_uncommitted_shards(tmp_path):
    out = tmp_path / "out"
    first = open_state(out)
    write_committed(first, out, ["a", "b"])
    write_committed(first, out, ["c"], commit=False)  # killed before the commit
    (out / LEASE_FILE).unlink()  # as if the driver died without releasing
    second = open_state(out)
    assert second.done_ids == {"a", "b"}
    assert sorted(p.name for p in (out / "rejects").iterdir()) == ["part-key-a-b.parquet"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["rows_skipped"] for a in manifest["attempts"]] == [0, 2]


def test_changed_config_or_input_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    state = open_state(out)
    write_committed(state, out, ["a"])
    state.finish({"pairs": 0})
    with pytest.raises(ResumeRefused, match="another config"):
        open_state(out, digest="cfg2")
    with pytest.raises(ResumeRefused, match="another input"):
        open_state(out, inp="in2")
    fresh = open_state(out, digest="cfg2", overwrite=True)
    assert fresh.done_ids == set() and list((out / "rejects").iterdir()) == []


def test_data_without_manifest_is_refused(tmp_path):
    (tmp_path / "out" / "pairs").mkdir(parents=True)
    with pytest.raises(ResumeRefused, match="no manifest"):
        open_state(tmp_path / "out")


def test_a_new_owner_fences_off_the_old_writers(tmp_path):
    out = tmp_path / "out"
    old = open_state(out)
    check_lease(str(out), old.token)
    (out / LEASE_FILE).unlink()
    new = open_state(out)
    check_lease(str(out), new.token)
    with pytest.raises(StaleLease):
        check_lease(str(out), old.token)


def test_a_folder_owned_by_a_live_driver_is_refused(tmp_path):
    out = tmp_path / "out"
    open_state(out)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lease = json.loads((out / LEASE_FILE).read_text())
        (out / LEASE_FILE).write_text(json.dumps(lease | {"pid": sleeper.pid}))
        with pytest.raises(ResumeRefused, match=f"in use by a running prefgen \\(pid {sleeper.pid}\\)"):
            open_state(out)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert open_state(out).done_ids == set()  # its driver is gone: the folder may be resumed


def test_the_new_lease_is_written_before_uncommitted_shards_are_swept(tmp_path, monkeypatch):
    """An earlier owner's writer (e.g. on another host) checks the lease just before it moves a
    shard into place: once the sweep has run, that check must already fail."""
    out = tmp_path / "out"
    first = open_state(out)
    write_committed(first, out, ["a"], commit=False)  # left by the killed run
    seen = []
    sweep = RunState.sweep

    def spy(self):
        lease = json.loads((out / LEASE_FILE).read_text()) if (out / LEASE_FILE).exists() else {}
        seen.append(lease.get("token") == self.token)
        with pytest.raises(StaleLease):  # the old run's writers are fenced off while we sweep
            check_lease(str(out), first.token)
        return sweep(self)

    monkeypatch.setattr(RunState, "sweep", spy)
    (out / LEASE_FILE).write_text(json.dumps(json.loads((out / LEASE_FILE).read_text()) | {"host": "elsewhere"}))
    second = RunState(str(out))
    second.open({"k": 1}, "cfg1", "in1", False, log=lambda msg: None)
    assert seen and all(seen)
    assert list((out / "rejects").iterdir()) == []


def test_finishing_sweeps_a_shard_whose_commit_never_came(tmp_path):
    """A writer that moved one shard into place and then failed leaves a shard no commit names:
    the run removes it before it ends, so its rows (rejected or redone elsewhere) are not doubled."""
    out = tmp_path / "out"
    state = open_state(out)
    write_committed(state, out, ["a"])
    write_committed(state, out, ["b"], commit=False)
    state.finish({"pairs": 0})
    assert sorted(p.name for p in (out / "rejects").iterdir()) == ["part-key-a.parquet"]
    assert not (out / LEASE_FILE).exists()
