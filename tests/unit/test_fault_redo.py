"""Rows rejected for a fault (`worker_failed`, `write_failed`, `request_failed`) are redone by a
rerun of the same command; every other reject stays done. No Ray: the writer and the run state
on a local folder, as the driver drives them."""

import json

import pyarrow.parquet as pq

from prefgen.commits import COMMITS_DIR, FANOUT, CommitLog
from prefgen.runstate import RunState
from prefgen.schema import WORK_ROW, candidate, reject_row, to_table
from prefgen.writer import commit_reports, commit_rounds, write_batch, write_rows

PAIRING = {"strategy": "best_vs_worst", "min_margin": 1, "length_matched": False, "allow_truncated_chosen": False}


def work_row(rid: str, ratings=(), reason=None, detail=None) -> dict:
    cands = [candidate(candidate_id=f"{rid}/g/{k}", text=f"answer {k}", model="m", generator="g", origin="generated",
                       rating=r, judgments=[]) for k, r in enumerate(ratings)]
    return {"id": rid, "instruction": f"question {rid}", "source": "in.jsonl", "line": 1, "candidates": cands,
            "output_tokens": 7, "reject_reason": reason, "reject_detail": detail}


def opened(out) -> RunState:
    state = RunState(str(out))
    state.open({}, "cfg", "in", False, log=lambda m: None)
    return state


def output_ids(out, kind: str) -> list[tuple[str, str | None]]:
    return sorted((r["id"], r.get("reason")) for f in (out / kind).glob("*.parquet")
                  for r in pq.read_table(f).to_pylist())


def test_a_rerun_redoes_the_rows_rejected_for_a_fault_and_keeps_every_other_row(tmp_path):
    out = tmp_path / "out"
    state = opened(out)
    rows = [work_row(i) for i in "abcd"]
    done = write_rows(str(out), state.token, rows[:1], [], [reject_row(rows[0], "all_tied", None)])
    write_failed = {"failed": ["b"], "reason": "write_failed", "error": "OSError: disk gone"}
    commits, _ = commit_reports(state, [done, write_failed], rows, 2, log=lambda m: None)  # c, d: lost
    assert [c.get("fault") for c in commits] == [None, True, True]
    state.finish({}, target_bytes=1 << 30)  # would merge every small shard, but a fault's stays apart
    assert output_ids(out, "rejects") == [("a", "all_tied"), ("b", "write_failed"), ("c", "worker_failed"),
                                          ("d", "worker_failed")]
    assert len(list((out / "rejects").glob("part-merged-*"))) == 0

    messages = []
    again = RunState(str(out))
    again.open({}, "cfg", "in", False, log=messages.append)
    assert again.done_ids == {"a"}, "a fault reject was taken as done"
    assert "3 rows rejected for a fault (worker_failed, write_failed) to redo" in messages[-1]
    assert output_ids(out, "rejects") == [("a", "all_tied")], "the retired rejects' shards were not swept"
    redo = write_rows(str(out), again.token, rows[1:], [], [reject_row(r, "margin_below_min", None) for r in rows[1:]])
    commit_reports(again, [redo], rows[1:], 2, log=lambda m: None)
    again.finish({})
    assert output_ids(out, "rejects") == [("a", "all_tied")] + [(i, "margin_below_min") for i in "bcd"]
    assert sorted(i for c in CommitLog.read(str(out)).commits() for i in c["ids"]) == list("abcd")
    third = opened(out)  # nothing left to redo, and the retire record, outliving its commits, is gone
    assert third.done_ids == set("abcd")
    assert not list((out / COMMITS_DIR).glob("retire-*"))


def test_a_request_failed_row_is_reported_by_the_writer_not_written_with_its_batch(tmp_path):
    out = tmp_path / "out"
    state = opened(out)
    batch = to_table([work_row("a", ratings=(5.0, 1.0)), work_row("b", reason="request_failed", detail="HTTP 503")],
                     WORK_ROW)
    report = json.loads(write_batch(batch, str(out), state.token, PAIRING, 0).column("report")[0].as_py())
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
    reports = [write_rows(str(out), state.token, [r], [], [reject_row(r, "all_tied", None)]) for r in rows[:-1]]
    commit_reports(state, reports, rows, 0, log=lambda m: None)  # the last row: lost, its commit the 16th
    assert [n.name.split("-")[0] for n in (out / COMMITS_DIR).iterdir()] == ["seg"]
    again = opened(out)
    assert again.done_ids == {r["id"] for r in rows[:-1]}
    log = CommitLog.read(str(out))
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
                yield write_rows(str(state.uri), state.token, [r], [], [reject_row(r, "all_tied", None)])
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
