"""Run bookkeeping without Ray: commits, resume, refusal of a changed run, lease fencing."""

import json
import subprocess
import sys

import pytest

from prefgen.output.files import write_shard
from prefgen.report.summary import batch_counts
from prefgen.output.storage import WRITE_BOUND_S, storage
from prefgen.output.compaction import committed_shards
from prefgen.output.lease import LEASE_CHECK_S, LEASE_FILE, TAKEOVER_WAIT_S, StaleLease, check_lease
from prefgen.output.manifest import ResumeRefused
from prefgen.output.runstate import RunState
from prefgen.schema import REJECT_ROW


def reject(rid):
    return {"id": rid, "instruction": "q", "source": "s", "line": 1, "reason": "empty_instruction",
            "detail": None, "candidates": []}


def open_state(out, digest="cfg1", inp="in1", overwrite=False):
    state = RunState(storage(str(out)))
    state.open({"k": 1}, digest, inp, overwrite, log=lambda msg: None)
    state.claim(None)
    return state


def write_committed(state, out, ids, commit=True):
    rows = [reject(i) for i in ids]
    report = batch_counts(f"key-{'-'.join(ids)}", rows, [], rows)
    write_shard(storage(str(out)), "rejects", report["key"], rows, REJECT_ROW)
    if commit:
        state.commit(report)
    return report


def test_resume_sees_committed_ids_and_leaves_uncommitted_shards_to_the_finish(tmp_path):
    """A resume lists no shard folder (that listing grows with the batches): an uncommitted shard
    does not count, and the finish sweeps it."""
    out = tmp_path / "out"
    first = open_state(out)
    write_committed(first, out, ["a", "b"])
    write_committed(first, out, ["c"], commit=False)  # killed before the commit
    (out / LEASE_FILE).unlink()  # as if the driver died without releasing
    store = storage(str(out))
    requests = store.requests
    requests.reset()
    second = open_state(out)
    assert second.done_ids == {"a", "b"}
    assert requests.in_folder("LIST", f"{out}/rejects") == 0
    assert committed_shards(store, "rejects") == ["rejects/part-key-a-b.parquet"]
    second.finish({"pairs": 0})
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
    store = storage(str(out))
    check_lease(store, old.token)
    (out / LEASE_FILE).unlink()
    new = open_state(out)
    check_lease(store, new.token)
    with pytest.raises(StaleLease):
        check_lease(store, old.token)


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


def test_a_takeover_from_another_host_waits_out_the_old_writers_before_reading_the_log(tmp_path, monkeypatch):
    """An earlier owner's processes on another host may still write for LEASE_CHECK_S after the new
    lease (their last lease read stands that long) plus one write's duration: the new owner writes
    its lease, then waits that long, and only then reads the commits (so a late commit counts and
    its rows are not redone, and no late shard lands after its sweep)."""
    out = tmp_path / "out"
    store = storage(str(out))
    first = open_state(out)
    write_committed(first, out, ["a"])
    lease = json.loads((out / LEASE_FILE).read_text())
    (out / LEASE_FILE).write_text(json.dumps(lease | {"host": "elsewhere"}))
    waited = []

    def late_commit(seconds):  # the old driver's commit, its last lease read still standing, lands now
        waited.append(seconds)
        write_committed(first, out, ["b"])
        with pytest.raises(StaleLease):
            check_lease(store, first.token)  # the new lease is in place while we wait

    second = RunState(store, sleep=late_commit)
    second.open({"k": 1}, "cfg1", "in1", False, log=lambda msg: None)
    assert waited == [TAKEOVER_WAIT_S] and TAKEOVER_WAIT_S == LEASE_CHECK_S + WRITE_BOUND_S
    assert second.done_ids == {"a", "b"}, "a commit that landed during the wait was missed: b would be done twice"
    same_host = RunState(store, sleep=waited.append)
    same_host.open({"k": 1}, "cfg1", "in1", False, log=lambda msg: None)  # our own host: its orphans are stopped
    assert waited == [TAKEOVER_WAIT_S]


def test_a_lease_read_stands_for_lease_check_s_then_is_read_again(tmp_path):
    out = tmp_path / "out"
    old = open_state(out)
    now = [100.0]
    store = storage(str(out))
    requests = store.requests
    requests.reset()
    check_lease(store, old.token, LEASE_CHECK_S, clock=lambda: now[0])
    now[0] += LEASE_CHECK_S - 0.1
    check_lease(store, old.token, LEASE_CHECK_S, clock=lambda: now[0])  # stands: no read
    assert requests.calls["GET"] == 1
    (out / LEASE_FILE).unlink()
    open_state(out)  # a new owner
    check_lease(store, old.token, LEASE_CHECK_S, clock=lambda: now[0])  # still inside the window
    now[0] += 0.2
    with pytest.raises(StaleLease):
        check_lease(store, old.token, LEASE_CHECK_S, clock=lambda: now[0])
    with pytest.raises(StaleLease):
        check_lease(store, old.token)  # a plain check always reads


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
