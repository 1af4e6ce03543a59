"""Shard writes under storage faults, on a filesystem that fails on purpose (no Ray).

A transient fault is retried; one that outlasts the retries is reported by the writer and
rejected as `write_failed` (never as an engine's `worker_failed`); a shard a failed writer
already moved into place is swept before the run ends, so no row is doubled."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flaky_storage import FlakyStorage, use_flaky_storage

from prefgen.runstate import RunState, StaleLease
from prefgen.schema import REJECT_ROW, WORK_ROW, candidate, to_table
from prefgen.report import RunSummary
from prefgen.writer import WRITE_ATTEMPTS, commit_reports, with_retries, failed_warning, write_batch, write_rows

PAIRING = {"strategy": "best_worst", "min_margin": 1, "length_matched": False, "allow_truncated_chosen": False}


def work_row(rid: str, ratings=()) -> dict:
    cands = [candidate(candidate_id=f"{rid}/g/{k}", text=f"answer {k}", model="m", generator="g", origin="generated",
                       rating=r, judgments=[]) for k, r in enumerate(ratings)]
    return {"id": rid, "instruction": f"question {rid}", "source": "in.jsonl", "line": 1, "candidates": cands,
            "output_tokens": 7, "reject_reason": None, "reject_detail": None}


def opened(out) -> RunState:
    state = RunState(str(out))
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
    report = write_rows(str(out), state.token, rows, [], rejects, sleep=pauses.append)
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
    report = json.loads(write_batch(batch, str(out), state.token, PAIRING, 0, sleep=lambda s: None)
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
    report = json.loads(write_batch(batch, str(out), state.token, dict(PAIRING, min_margin="one"), 0)
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
    report = write_rows(str(out), state.token, rows, [], rejects)
    commits, errors = commit_reports(state, [report], rows, 2, log=lambda m: None)
    assert commits == [report] and errors == {} and state.done_ids == {"a"}
    assert pa.Table.from_pylist(read_dir(out, "rejects"), schema=REJECT_ROW).num_rows == 1
