"""Stopping a run on request (`prefgen/run/stopping.py`, `prefgen/engines/stop_flag.py`): SIGTERM and SIGINT, the grace period, a
second signal, the first stage taking no new batch, and the driver's side: what finished is
committed, nothing is rejected for the stop, the manifest says `stopped`, and a rerun does the rest."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pyarrow.parquet as pq
import pytest
from support.scripted_engine import ScriptedEngine
from support.stages import batch, run

import prefgen.engines.stage
from prefgen.cli import main
from prefgen.output.runstate import RunState
from prefgen.schema import STOPPED, WORK_ROW, reject_row, to_table
from prefgen.engines.stage import ModelStage
from prefgen.engines.stop_flag import STOP_REQUESTED
from prefgen.output.writer import commit_rounds, write_batch, write_rows
from prefgen.run.stopping import EXIT_STOPPED, StopRequested, StopSignals, grace_for, job_stop_wait_s, until_stopped
from prefgen.output.storage import storage

JOB = {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}  # what Ray's job supervisor sets for a job's driver


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_grace_is_cut_inside_a_ray_job_to_end_before_ray_job_stops_sigkill():
    assert job_stop_wait_s({}) is None and grace_for(30, {}) == 30  # not a job: the configured grace
    assert job_stop_wait_s(JOB) == 3.0 and grace_for(30, JOB) == 1.5  # Ray 2.60: SIGKILL 3 s after SIGTERM
    assert grace_for(30, JOB | {"RAY_JOB_STOP_WAIT_TIME_S": "60"}) == 30
    assert grace_for(30, JOB | {"RAY_JOB_STOP_WAIT_TIME_S": "10"}) == 8.5
    assert grace_for(30, JOB | {"RAY_JOB_STOP_WAIT_TIME_S": "1"}) == 0.0


def test_the_first_signal_asks_for_a_stop_that_the_grace_period_bounds():
    clock, lines, told = Clock(), [], []
    stop = StopSignals(10, clock=clock, log=lines.append)
    stop.on_request = lambda: told.append(True)
    stop.rows_done = lambda: 7
    stop.check()  # nothing asked: nothing happens
    assert not stop.requested and told == [] and lines == []
    stop.handle(signal.SIGTERM)
    assert stop.requested and told == []  # the handler only records: the driver's check does the rest
    clock.now += 9.9
    stop.check()
    stop.check()
    assert told == [True] and len(lines) == 1 and "SIGTERM received: stopping" in lines[0]  # told once
    clock.now += 0.1
    with pytest.raises(StopRequested, match=r"\(SIGTERM\): the grace period of 10 s passed; 7 input rows"):
        stop.check()


def test_a_failure_to_tell_the_stages_is_a_warning_and_the_grace_still_ends_the_run():
    clock, lines = Clock(), []
    stop = StopSignals(5, clock=clock, log=lines.append)

    def unreachable():
        raise ConnectionError("GCS unreachable")

    stop.on_request = unreachable
    stop.handle(signal.SIGTERM)
    stop.check()
    assert "could not be told to stop (ConnectionError('GCS unreachable'))" in lines[-1]
    clock.now += 5
    with pytest.raises(StopRequested, match="grace period of 5 s passed"):
        stop.check()


def test_a_second_signal_stops_at_once_and_once_stopping_later_ones_change_nothing():
    stop = StopSignals(30, clock=Clock(), log=lambda m: None)
    stop.handle(signal.SIGINT)
    with pytest.raises(StopRequested, match=r"\(SIGINT\): a second signal \(SIGTERM\) stopped it at once"):
        stop.handle(signal.SIGTERM)
    stop.handle(signal.SIGTERM)  # the manifest is being written: no second exception in the middle of it


def test_the_same_signal_delivered_twice_at_once_counts_once():
    """A terminal's Ctrl-C reaches the process group, and a parent like `uv run` may forward it too."""
    clock = Clock()
    stop = StopSignals(30, clock=clock, log=lambda m: None)
    stop.handle(signal.SIGINT)
    clock.now += 0.5
    stop.handle(signal.SIGINT)  # the forwarded copy
    assert stop.requested and not stop.ending
    clock.now += 0.5
    with pytest.raises(StopRequested, match=r"a second signal \(SIGINT\) stopped it at once"):
        stop.handle(signal.SIGINT)  # a second Ctrl-C


def test_a_stop_asked_before_any_batch_raises_at_the_next_step():
    stop = StopSignals(30, clock=Clock(), log=lambda m: None)
    stop.stop_if_requested("before any batch started")  # nothing asked
    stop.handle(signal.SIGTERM)
    with pytest.raises(StopRequested, match="before any batch started"):
        stop.stop_if_requested("before any batch started")


def test_real_sigterm_and_sigint_reach_the_handler_and_restore_puts_back_the_old_ones():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop = StopSignals(30, log=lambda m: None)
    assert stop.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test process without the handler
        deadline = time.monotonic() + 5
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.signal_name == "SIGTERM"
        with pytest.raises(StopRequested, match="a second signal \\(SIGINT\\)"):
            os.kill(os.getpid(), signal.SIGINT)  # would be KeyboardInterrupt without the handler
            time.sleep(5)
    finally:
        stop.restore()
    assert {s: signal.getsignal(s) for s in before} == before


def test_no_handler_is_set_outside_the_main_thread():
    found = []
    thread = threading.Thread(target=lambda: found.append(StopSignals(30).install()))
    thread.start()
    thread.join()
    assert found == [False]


def test_the_first_stage_takes_no_new_batch_once_asked_to_stop_and_the_writer_commits_nothing_of_it(
        tmp_path, monkeypatch):
    (tmp_path / "_stats").mkdir()
    asked = []
    monkeypatch.setattr(prefgen.engines.stage, "workers_asked_to_stop", lambda attempt: asked.append(attempt) or True)
    engine = ScriptedEngine(lambda req: ["ok"])

    class Echo:
        role, dropped = "judge:j", None

        def run(self, rows, eng):
            eng.chat([])

    store = storage(str(tmp_path))
    entrance = ModelStage(lambda: engine, [Echo()], "m", store, attempt="tok", entrance=True)
    out = run(entrance, batch(2))
    assert asked == ["tok"] and engine.calls == []  # no engine call for it
    assert {(r["reject_reason"], r["reject_detail"]) for r in out} == {(STOPPED, STOP_REQUESTED)}
    report = write_batch(to_table(out, WORK_ROW), store, "tok", {}, 0)
    assert json.loads(report.to_pylist()[0]["report"]) == {"stop": STOP_REQUESTED}
    later = ModelStage(lambda: engine, [Echo()], "m2", store, attempt="tok")  # past the entrance
    assert {r["reject_reason"] for r in run(later, batch(2))} == {None} and len(engine.calls) == 1


def work_row(rid: str) -> dict:
    return {"id": rid, "instruction": f"q {rid}", "source": "in.jsonl", "line": 1, "candidates": [],
            "output_tokens": 0, "reject_reason": None, "reject_detail": None}


def opened(out) -> RunState:
    state = RunState(storage(str(out)))
    state.open({}, "cfg", "in", False, log=lambda m: None)
    return state


def test_a_stop_commits_what_finished_rejects_nothing_and_the_same_command_then_does_the_rest(tmp_path):
    """One dataset run: a's batch finishes, then SIGTERM; b's and c's reach the first stage after it and
    pass through. The driver commits a, runs no retry round, rejects nothing, says `stopped`; a rerun
    does b and c, and every row is in the output once."""
    rows = [work_row(i) for i in "abc"]
    state, stop, runs = opened(tmp_path), StopSignals(30, clock=Clock(), log=lambda m: None), []

    def reports(todo):
        runs.append([r["id"] for r in todo])
        for r in todo:
            if r["id"] == "a":
                yield write_rows(state.store, state.token, [r], [], [reject_row(r, "all_tied", None)])
                stop.handle(signal.SIGTERM)
            else:
                passed = dict(r, reject_reason=STOPPED, reject_detail=STOP_REQUESTED)
                table = write_batch(to_table([passed], WORK_ROW), state.store, state.token, {}, 0)
                yield json.loads(table.to_pylist()[0]["report"])

    stop.rows_done = lambda: len(state.done_ids)
    with pytest.raises(StopRequested, match="the batches in flight were committed; 1 input rows") as stopped:
        commit_rounds(state, lambda todo: until_stopped(reports(todo), stop), rows, 2, log=lambda m: None)
    state.fail(str(stopped.value), status="stopped")
    assert runs == [["a", "b", "c"]]  # no second round for the rows left
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and manifest["attempts"][-1]["status"] == "stopped"
    assert state.done_ids == {"a"} and not list((tmp_path / "pairs").glob("*.parquet"))
    assert [r["id"] for f in (tmp_path / "rejects").glob("*.parquet") for r in pq.read_table(f).to_pylist()] == ["a"]

    again = opened(tmp_path)  # the same command: resumes
    assert again.done_ids == {"a"}
    todo = [r for r in rows if r["id"] not in again.done_ids]
    commit_rounds(again, lambda t: ([write_rows(again.store, again.token, [r], [], [reject_row(r, "all_tied", None)])
                                     for r in t]), todo, 2, log=lambda m: None)
    again.finish({})
    ids = [r["id"] for f in (tmp_path / "rejects").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert sorted(ids) == ["a", "b", "c"]


def test_prefgen_run_stopped_on_request_exits_with_its_own_code(tmp_path, monkeypatch, capsys):
    def stopped(*args, **kwargs):
        raise StopRequested("stopped on request (SIGTERM): the batches in flight were committed")

    monkeypatch.setattr("prefgen.cli.run", stopped)
    assert main(["run", "--output", str(tmp_path / "out"), "--verbose"]) == EXIT_STOPPED == 4
    assert "run stopped on request (SIGTERM)" in capsys.readouterr().err
