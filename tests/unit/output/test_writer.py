"""Shard writes under storage faults, on a filesystem that fails on purpose (no Ray).

A transient fault is retried; one that outlasts the retries is reported by the writer and
rejected as `write_failed` (never as an engine's `worker_failed`); a shard a failed writer
already moved into place is swept before the run ends, so no row is doubled.

Rows rejected for a fault (`worker_failed`, `write_failed`, `request_failed`) are redone by a
rerun of the same command; every other reject stays done; lost rows go through the dataset again
before they are `worker_failed`."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.flaky_storage import FlakyStorage, use_flaky_storage

from prefgen.output.commits import COMMITS_DIR, FANOUT, CommitLog
from prefgen.output.compaction import committed_shards
from prefgen.output.lease import StaleLease
from prefgen.output.runstate import RunState
from prefgen.schema import REJECT_ROW, WORK_ROW, candidate, reject_row, to_table
from prefgen.report.summary import RunSummary
from prefgen.output.writer import (WRITE_ATTEMPTS, commit_reports, commit_rounds, failed_warning, with_retries, write_batch,
                            write_rows)
from prefgen.output.storage import storage

PAIRING = {"strategy": "best_vs_worst", "min_margin": 1, "length_matched": False, "allow_truncated_chosen": False}


def work_row(rid: str, ratings=()) -> dict:
    cands = [candidate(candidate_id=f"{rid}/g/{k}", text=f"answer {k}", model="m", generator="g", origin="generated",
                       rating=r, judgments=[]) for k, r in enumerate(ratings)]
    return {"id": rid, "instruction": f"question {rid}", "source": "in.jsonl", "line": 1, "candidates": cands,
            "output_tokens": 7, "reject_reason": None, "reject_detail": None}


def opened(out) -> RunState:
    state = RunState(storage(str(out)))
    state.open({}, "cfg", "in", False, log=lambda m: None)
    return state


def read_dir(out, kind):
    return [r for f in sorted((out / kind).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_a_shard_write_that_fails_a_few_times_is_retried_with_growing_pauses(tmp_path, monkeypatch):
    out = tmp_path / "out"
    state = opened(out)
    flaky = use_flaky_storage(monkeypatch, FlakyStorage(failures=3))
    pauses = []
    rows = [work_row("a")]
    rejects = [{**{k: rows[0][k] for k in ("id", "instruction", "source", "line")}, "reason": "x", "detail": None,
                "candidates": []}]
    report = write_rows(storage(str(out)), state.token, rows, [], rejects, sleep=pauses.append)
    assert flaky.failed == 3 and pauses == [0.5, 1.0, 2.0]
    assert report["ids"] == ["a"] and [r["id"] for r in read_dir(out, "rejects")] == ["a"]
    assert not [p for p in (out / "rejects").iterdir() if p.name.startswith(".tmp")]


def test_a_lost_lease_is_not_retried():
    calls = []

    def fenced():
        calls.append(1)
        raise StaleLease("another run owns the folder")

    with pytest.raises(StaleLease):
        with_retries(fenced, sleep=lambda s: None)
    assert len(calls) == 1


def test_a_write_that_outlasts_the_retries_becomes_write_failed_and_nothing_is_doubled(tmp_path, monkeypatch):
    """The pairs shard lands, the rejects shard never does: the writer reports the batch as not
    written, the driver rejects its rows as write_failed (not worker_failed) and the run's end
    sweeps the pairs shard nobody committed."""
    out = tmp_path / "out"
    state = opened(out)
    flaky = use_flaky_storage(monkeypatch, FlakyStorage(failures=None, match="/rejects/"))
    batch = to_table([work_row("a", ratings=(8.0, 3.0)), work_row("b")], WORK_ROW)
    report = json.loads(write_batch(batch, storage(str(out)), state.token, PAIRING, 0, sleep=lambda s: None)
                        .column("report")[0].as_py())
    assert flaky.failed == WRITE_ATTEMPTS
    assert report["failed"] == ["a", "b"] and report["reason"] == "write_failed"
    assert "injected storage fault" in report["error"]
    assert len(read_dir(out, "pairs")) == 1  # moved into place before the rejects failed

    flaky.failures = flaky.failed  # the storage recovers
    todo = [work_row(i) for i in ("a", "b", "c")]  # c's batch never reached a writer
    commits, failed = commit_reports(state, [report], todo, 2, log=lambda m: None)
    assert set(failed) == {"a", "b"}
    state.finish({})
    assert read_dir(out, "pairs") == []
    reasons = {r["id"]: (r["reason"], r["detail"]) for r in read_dir(out, "rejects")}
    assert {i: r for i, (r, _) in reasons.items()} == {"a": "write_failed", "b": "write_failed", "c": "worker_failed"}
    assert "injected storage fault" in reasons["a"][1] and "its engine actor or its node died" in reasons["c"][1]
    assert sorted(i for c in commits for i in c["ids"]) == ["a", "b", "c"]
    summary = RunSummary(output=str(out), warnings=[failed_warning(failed)])
    assert any("2 rows could not be written and were rejected (2 write_failed;" in line
               and "injected storage fault" in line and "check the output storage" in line for line in summary.lines())


def test_a_pairing_that_raises_rejects_its_rows_as_stage_error_not_worker_failed(tmp_path):
    out = tmp_path / "out"
    state = opened(out)
    batch = to_table([work_row("a", ratings=(8.0, 3.0))], WORK_ROW)
    report = json.loads(write_batch(batch, storage(str(out)), state.token, dict(PAIRING, min_margin="one"), 0)
                        .column("report")[0].as_py())
    assert report["failed"] == ["a"] and report["reason"] == "stage_error" and report["error"].startswith("pairing:")
    commit_reports(state, [report], [work_row("a")], 2, log=lambda m: None)
    [reject] = read_dir(out, "rejects")
    assert reject["reason"] == "stage_error" and reject["detail"].startswith("pairing:")


def test_reports_are_committed_as_they_come(tmp_path):
    out = tmp_path / "out"
    state = opened(out)
    rows = [work_row("a")]
    rejects = [{"id": "a", "instruction": "q", "source": "s", "line": 1, "reason": "x", "detail": None,
                "candidates": []}]
    report = write_rows(storage(str(out)), state.token, rows, [], rejects)
    commits, errors = commit_reports(state, [report], rows, 2, log=lambda m: None)
    assert commits == [report] and errors == {} and state.done_ids == {"a"}
    assert pa.Table.from_pylist(read_dir(out, "rejects"), schema=REJECT_ROW).num_rows == 1


def output_ids(out, kind: str) -> list[tuple[str, str | None]]:
    return sorted((r["id"], r.get("reason")) for f in (out / kind).glob("*.parquet")
                  for r in pq.read_table(f).to_pylist())


def committed_ids(out, kind: str) -> list[tuple[str, str | None]]:
    """What counts while a run owns the folder (the finish sweeps the rest)."""
    return sorted((r["id"], r.get("reason")) for key in committed_shards(storage(str(out)), kind)
                  for r in pq.read_table(out / key).to_pylist())


def test_a_rerun_redoes_the_rows_rejected_for_a_fault_and_keeps_every_other_row(tmp_path):
    out = tmp_path / "out"
    state = opened(out)
    rows = [work_row(i) for i in "abcd"]
    store = storage(str(out))
    done = write_rows(store, state.token, rows[:1], [], [reject_row(rows[0], "all_tied", None)])
    write_failed = {"failed": ["b"], "reason": "write_failed", "error": "OSError: disk gone"}
    commits, _ = commit_reports(state, [done, write_failed], rows, 2, log=lambda m: None)  # c, d: lost
    assert [c.get("fault") for c in commits] == [None, True, True]
    state.finish({}, target_bytes=1 << 30)  # would merge every small shard, but a fault's stays apart
    assert output_ids(out, "rejects") == [("a", "all_tied"), ("b", "write_failed"), ("c", "worker_failed"),
                                          ("d", "worker_failed")]
    assert len(list((out / "rejects").glob("part-merged-*"))) == 0

    messages = []
    again = RunState(store)
    again.open({}, "cfg", "in", False, log=messages.append)
    assert again.done_ids == {"a"}, "a fault reject was taken as done"
    assert "3 rows rejected for a fault (worker_failed, write_failed) to redo" in messages[-1]
    assert committed_ids(out, "rejects") == [("a", "all_tied")], "the retired rejects' shards still count"
    redo = write_rows(store, again.token, rows[1:], [], [reject_row(r, "margin_below_min", None) for r in rows[1:]])
    commit_reports(again, [redo], rows[1:], 2, log=lambda m: None)
    again.finish({})
    assert output_ids(out, "rejects") == [("a", "all_tied")] + [(i, "margin_below_min") for i in "bcd"]
    assert sorted(i for c in CommitLog.read(store).commits() for i in c["ids"]) == list("abcd")
    third = opened(out)  # nothing left to redo, and the retire record, outliving its commits, is gone
    assert third.done_ids == set("abcd")
    assert not list((out / COMMITS_DIR).glob("retire-*"))


def test_a_request_failed_row_is_reported_by_the_writer_not_written_with_its_batch(tmp_path):
    out = tmp_path / "out"
    state = opened(out)
    failed_request = dict(work_row("b"), reject_reason="request_failed", reject_detail="HTTP 503")
    batch = to_table([work_row("a", ratings=(5.0, 1.0)), failed_request], WORK_ROW)
    report = json.loads(write_batch(batch, storage(str(out)), state.token, PAIRING, 0).column("report")[0].as_py())
    assert report["ids"] == ["a"] and report["faults"] == {"b": ["request_failed", "HTTP 503"]}
    commits, failed = commit_reports(state, [report], [work_row("a"), work_row("b")], 2, log=lambda m: None)
    assert failed == {"b": ("request_failed", "HTTP 503")} and commits[-1]["fault"] is True
    state.finish({})
    assert output_ids(out, "rejects") == [("b", "request_failed")]
    assert opened(out).done_ids == {"a"}


def test_a_fault_commit_rolled_into_a_segment_is_retired_too(tmp_path):
    out = tmp_path / "out"
    state = opened(out)
    rows = [work_row(f"r{i:02}") for i in range(FANOUT)]
    store = storage(str(out))
    reports = [write_rows(store, state.token, [r], [], [reject_row(r, "all_tied", None)]) for r in rows[:-1]]
    commit_reports(state, reports, rows, 0, log=lambda m: None)  # the last row: lost, its commit the 16th
    assert state.log.objects() == 1 and [n.name[:4] for n in (out / COMMITS_DIR).glob("seg-*")] == ["seg-"]
    again = opened(out)
    assert again.done_ids == {r["id"] for r in rows[:-1]}
    log = CommitLog.read(store)
    assert len(log.commits()) == FANOUT - 1 and log.retired and not log.redundant  # the record stays: its segment does


def test_lost_rows_go_through_the_dataset_again_before_they_are_worker_failed(tmp_path):
    """`reports(rows)` stands for one run of the dataset: the first loses b's batch (its node went),
    the second finishes it, so nothing is rejected; with no retries b would be `worker_failed`."""
    rows = [work_row("a"), work_row("b")]

    def dataset(state, lose_every_time=False):
        runs = []

        def reports(todo):
            runs.append([r["id"] for r in todo])
            for r in todo:
                if r["id"] == "b" and (lose_every_time or len(runs) == 1):
                    continue
                yield write_rows(state.store, state.token, [r], [], [reject_row(r, "all_tied", None)])
        return reports, runs

    state = opened(tmp_path / "one")
    reports, runs = dataset(state)
    commit_rounds(state, reports, rows, 2, log=lambda m: None)
    assert runs == [["a", "b"], ["b"]]
    assert output_ids(tmp_path / "one", "rejects") == [("a", "all_tied"), ("b", "all_tied")]

    state = opened(tmp_path / "two")
    reports, runs = dataset(state, lose_every_time=True)
    commits, _ = commit_rounds(state, reports, rows, 2, log=lambda m: None)
    assert runs == [["a", "b"], ["b"], ["b"]] and commits[-1]["fault"] is True
    assert output_ids(tmp_path / "two", "rejects") == [("a", "all_tied"), ("b", "worker_failed")]


def test_a_written_batchs_commit_names_the_node_its_writer_ran_on(tmp_path, monkeypatch):
    """The writer's report names the node it ran on (None outside Ray; the node-loss test checks
    the real ids on a cluster), and the driver's commit keeps it. (The node is stood in for: a
    whole suite run has a Ray in this process by now.)"""
    out = tmp_path / "out"
    state = opened(out)
    monkeypatch.setattr("prefgen.output.writer.current_node_id", lambda: None)
    batch = to_table([work_row("a", ratings=(5.0, 1.0))], WORK_ROW)
    store = storage(str(out))
    outside = json.loads(write_batch(batch, store, state.token, PAIRING, 0).column("report")[0].as_py())
    assert "node" in outside and outside["node"] is None
    monkeypatch.setattr("prefgen.output.writer.current_node_id", lambda: "node-7")
    batch = to_table([work_row("b", ratings=(5.0, 1.0))], WORK_ROW)
    report = json.loads(write_batch(batch, store, state.token, PAIRING, 0).column("report")[0].as_py())
    assert report["node"] == "node-7"
    commit_reports(state, [outside, report], [work_row("a"), work_row("b")], 0, log=lambda m: None)
    assert {c["ids"][0]: c["node"] for c in CommitLog.read(store).commits()} == {"a": None, "b": "node-7"}
