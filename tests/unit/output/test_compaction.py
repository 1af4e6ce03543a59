"""Bookkeeping at scale, without Ray: commits rolled into segments (a resume reads few objects),
small shards merged at the end, and every row exactly once whatever step a crash hits."""

import functools
import glob
import json

import pyarrow.parquet as pq
import pytest
from support.flaky_storage import crash_after_first_shard_delete
from support.output_rows import pair, reject

import prefgen.output.commits
import prefgen.output.lease
import prefgen.output.runstate
import prefgen.output.storage
from prefgen.output.commits import COMMITS_DIR, FANOUT, CommitLog
from prefgen.output.compaction import compact
from prefgen.output.storage import storage
from prefgen.report.summary import batch_counts
from prefgen.output.compaction import committed_shards
from prefgen.output.lease import LEASE_FILE, StaleLease
from prefgen.output.runstate import RunState
from prefgen.output.writer import write_rows


class Crash(Exception):
    """Stands for the driver dying at a given step."""


def opened(out) -> RunState:
    state = RunState(storage(str(out)))
    state.open({}, "cfg", "in", False, log=lambda m: None)
    return state


def died(out) -> None:
    (out / LEASE_FILE).unlink(missing_ok=True)  # its driver is gone: the folder may be resumed


def commit_only(state, ids):
    rows = [reject(i) for i in ids]
    state.commit(batch_counts("-".join(ids), rows, [], rows))


def write_batches(state, out, batches: int, rows: int = 10) -> list[str]:
    """Batches with both shards (every 5th row a reject), committed; returns every id."""
    ids = []
    for b in range(batches):
        batch = [f"r{b:03d}-{i}" for i in range(rows)]
        pairs = [pair(i) for i in batch if not i.endswith("-0")]
        rejects = [reject(i) for i in batch if i.endswith("-0")]
        state.commit(write_rows(storage(str(out)), state.token, [{"id": i} for i in batch], pairs, rejects))
        ids += batch
    return ids


def ids_in(files) -> list[str]:
    return [r["id"] for f in files for r in pq.read_table(f, columns=["id"]).to_pylist()]


def plain_ids(out) -> list[str]:
    """What a plain reader of pairs/*.parquet and rejects/*.parquet sees."""
    return ids_in(sorted(glob.glob(f"{out}/pairs/*.parquet")) + sorted(glob.glob(f"{out}/rejects/*.parquet")))


def followed_ids(out) -> list[str]:
    """What a reader following the commit records sees."""
    store = storage(str(out))
    return ids_in([out / key for kind in ("pairs", "rejects") for key in committed_shards(store, kind)])


def test_a_resume_over_10000_rows_in_batches_of_10_reads_at_most_100_commit_objects(tmp_path):
    out = tmp_path / "out"
    state = opened(out)
    every = [f"id{n:05d}" for n in range(10_000)]
    for b in range(0, len(every), 10):
        commit_only(state, every[b:b + 10])
    died(out)
    requests = storage(str(out)).requests
    requests.reset()
    resumed = opened(out)
    reads = requests.in_folder("GET", f"{out}/{COMMITS_DIR}")
    assert reads <= 100, f"the resume read {reads} commit objects"
    assert resumed.done_ids == set(every) and len(resumed.commits) == 1000
    assert len(list((out / COMMITS_DIR).iterdir())) == reads


def test_a_commit_is_one_put_and_covered_objects_go_in_one_bulk_delete(tmp_path):
    out = tmp_path / "out"
    state = opened(out)
    requests = storage(str(out)).requests
    requests.reset()
    batches = FANOUT * (FANOUT + 1)  # a carry into level 2, then one into level 1
    for b in range(batches):
        commit_only(state, [f"b{b}-x", f"b{b}-y"])
    assert requests.calls["PUT"] == batches  # rolling up costs no PUT of its own
    assert requests.calls["GET"] == 1  # one lease read: it stands for LEASE_CHECK_S
    assert requests.calls["LIST"] == requests.calls["HEAD"] == 0
    assert sorted(p.name[:6] for p in (out / COMMITS_DIR).iterdir()) == ["seg-1-", "seg-2-"]
    assert state.log.objects() == 2 and not state.log.redundant
    assert requests.calls["DELETE"] == batches - 2  # local disk: one unlink each, once DELETE_BATCH waited


def test_a_crash_before_the_bulk_delete_doubles_nothing_and_the_resume_skips_what_is_covered(tmp_path, monkeypatch):
    out = tmp_path / "out"
    state = opened(out)

    def fails(self, keys):
        raise OSError(f"injected: cannot delete {len(keys)} objects")

    monkeypatch.setattr(prefgen.output.storage.Storage, "delete_many", fails)
    for b in range(FANOUT * FANOUT):  # two levels of segments, none of the covered objects deleted
        commit_only(state, [f"b{b}-x", f"b{b}-y"])
    names = [p.name for p in (out / COMMITS_DIR).iterdir()]
    assert sum(n.startswith("seg-2-") for n in names) == 1 and len(names) == FANOUT * FANOUT
    monkeypatch.undo()
    died(out)
    requests = storage(str(out)).requests
    requests.reset()
    resumed = opened(out)
    assert requests.in_folder("GET", f"{out}/{COMMITS_DIR}") == FANOUT  # the segments only, no covered commit
    assert len(resumed.commits) == FANOUT * FANOUT and len({c["key"] for c in resumed.commits}) == FANOUT * FANOUT
    assert len(resumed.done_ids) == 2 * FANOUT * FANOUT
    assert [p.name[:6] for p in (out / COMMITS_DIR).iterdir()] == ["seg-2-"]  # the new owner deleted the rest


def test_a_segment_write_that_fails_is_retried_without_doubling_a_commit(tmp_path, monkeypatch):
    out = tmp_path / "out"
    state = opened(out)
    real, failures = prefgen.output.commits.write_compact_json, []

    def flaky(uri, name, data):
        if "seg-" in name and not failures:
            failures.append(name)
            raise OSError("injected")
        real(uri, name, data)

    monkeypatch.setattr(prefgen.output.commits, "write_compact_json", flaky)
    for b in range(FANOUT):
        rows = [reject(f"x{b}")]
        report = batch_counts(f"k{b}", rows, [], rows)
        try:
            state.commit(report)
        except OSError:
            state.commit(report)  # what writer.with_retries does
    assert failures and len(state.commits) == FANOUT and state.log.objects() == 1
    died(out)
    assert len(opened(out).commits) == FANOUT


def test_finishing_merges_small_shards_and_keeps_every_row_once(tmp_path):
    out = tmp_path / "out"
    state = opened(out)
    every = write_batches(state, out, 30)
    shard_bytes = max(p.stat().st_size for p in (out / "pairs").iterdir())
    state.finish({}, target_bytes=10 * shard_bytes)
    pairs = sorted((out / "pairs").iterdir())
    assert 3 <= len(pairs) <= 4 and all(p.name.startswith("part-merged-") for p in pairs)
    assert len(list((out / "rejects").iterdir())) <= 4
    assert sorted(plain_ids(out)) == sorted(followed_ids(out)) == sorted(every)
    died(out)
    again = opened(out)  # a complete folder opened again: nothing is swept or lost
    assert len(again.done_ids) == len(every) and sorted(plain_ids(out)) == sorted(every)
    more = write_batches(again, out, 3, rows=4)
    again.finish({}, target_bytes=10 * shard_bytes)  # only the new batch shards are merged
    assert sorted(followed_ids(out)) == sorted(plain_ids(out)) == sorted(every + more)


@pytest.mark.parametrize("step", ["written", "recorded", "deleted one", "deleted", "moved"])
def test_a_crash_at_any_step_of_a_merge_leaves_every_row_once(tmp_path, monkeypatch, step):
    out = tmp_path / "out"
    state = opened(out)
    every = write_batches(state, out, 12)
    shard_bytes = max(p.stat().st_size for p in (out / "pairs").iterdir())

    def crash(at):
        if at == step:
            raise Crash(at)

    monkeypatch.setattr(prefgen.output.runstate, "compact", functools.partial(compact, after_step=crash))
    if step == "deleted one":
        crash_after_first_shard_delete(monkeypatch, Crash(step))
    with pytest.raises(Crash):
        state.finish({}, target_bytes=5 * shard_bytes)
    assert sorted(followed_ids(out)) == sorted(every)  # whoever follows the records: exactly once
    seen = plain_ids(out)
    assert len(seen) == len(set(seen))  # a plain reader: never a row twice
    if step in ("written", "recorded", "moved"):
        assert sorted(seen) == sorted(every)
    monkeypatch.undo()
    died(out)
    resumed = opened(out)
    assert len(resumed.done_ids) == len(every)
    assert sorted(plain_ids(out)) == sorted(followed_ids(out)) == sorted(every)  # the resume finished or undid it
    resumed.finish({}, target_bytes=5 * shard_bytes)
    assert sorted(plain_ids(out)) == sorted(followed_ids(out)) == sorted(every)
    assert not [p for d in ("pairs", "rejects") for p in (out / d).iterdir() if p.name.startswith(".")]
    records = [json.loads(p.read_text()) for p in (out / COMMITS_DIR).glob("merge-*.json")]
    merged_rows = sum(pq.read_metadata(f).num_rows for f in glob.glob(f"{out}/pairs/part-merged-*"))
    assert sum(r["rows"] for r in records if r["kind"] == "pairs") == merged_rows > 0


def test_committed_shards_names_no_uncommitted_shard(tmp_path):
    out = tmp_path / "out"
    state = opened(out)
    every = write_batches(state, out, 2)
    store = storage(str(out))
    write_rows(store, state.token, [{"id": "late"}], [pair("late")], [])  # its commit never came
    assert sorted(followed_ids(out)) == sorted(every) and "late" in plain_ids(out)
    assert len(CommitLog.read(store).commits()) == 2


def test_a_driver_that_lost_the_folder_commits_nothing_once_its_lease_read_is_stale(tmp_path):
    out = tmp_path / "out"
    old = opened(out)
    died(out)
    opened(out)  # a new owner, a new lease token
    prefgen.output.lease._LEASE_READ.pop((str(out), old.token), None)  # its last read is older than LEASE_CHECK_S
    before = sorted(p.name for p in (out / COMMITS_DIR).iterdir())
    with pytest.raises(StaleLease):
        commit_only(old, ["o1"])  # the commit reads the lease first
    assert sorted(p.name for p in (out / COMMITS_DIR).iterdir()) == before


def test_a_reader_beside_the_owner_rereads_when_a_listed_commit_is_deleted_before_its_read(tmp_path, monkeypatch):
    """`prefgen report` or a poll beside a running owner: between the reader's listing and its
    reads, the owner rolls the level-0 commits into a segment and deletes them."""
    out = tmp_path / "out"
    state = opened(out)
    for b in range(FANOUT - 1):  # level 0 full: the next commit is written as a segment
        commit_only(state, [f"b{b}-x"])
    listed = prefgen.output.storage.Storage.list
    listings = []

    def list_then_owner_rolls_up(self, *args, **kwargs):
        found = listed(self, *args, **kwargs)
        listings.append([e.name for e in found[0]])
        if len(listings) == 1:  # the owner acts after the first listing only
            commit_only(state, [f"b{FANOUT - 1}-x"])
            state.log.delete_redundant()  # the covered commits go
        return found

    monkeypatch.setattr(prefgen.output.storage.Storage, "list", list_then_owner_rolls_up)
    log = CommitLog.read(storage(str(out)))
    assert len(listings) == 2 and len(listings[0]) == FANOUT - 1  # the first listing's objects were gone
    assert [n[:6] for n in listings[1]] == ["seg-1-"]
    assert len(log.commits()) == FANOUT and log.keys == {c["key"] for c in state.log.commits()}
