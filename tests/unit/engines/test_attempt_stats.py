"""Counting engines per attempt, and naming an engine that could not start (no Ray: scripted
engines and the stats files a `ModelStage` writes).

The summary's engine figures are this attempt's: the files of an earlier (killed) attempt do
not count, an actor Ray restarted is one replica, and a start that never became ready adds
nothing but is reported; when every start of a stage failed, the run's error names it."""

from collections import Counter

import pytest
from support.scripted_engine import ScriptedEngine

from prefgen.engines.engine import Request
from prefgen.engines.starts import EngineStartFailed, failed_starts_in_a_row, start_failure
from prefgen.output.files import STATS_DIR, read_jsons
from prefgen.report.summary import RunSummary
from prefgen.engines.stage import ModelStage
from prefgen.output.storage import storage
from support.stages import batch, run


class Echo:
    role = "generate:g"

    def __init__(self):
        self.dropped = Counter()

    def run(self, rows, engine):
        for row, result in zip(rows, engine.chat([Request([{"role": "user", "content": r["id"]}]) for r in rows])):
            row["output_tokens"] += result.tokens


def summary_of(out, attempt):
    summary = RunSummary(output=str(out))
    summary.add_stage_stats(read_jsons(storage(str(out)), f"{STATS_DIR}/{attempt}"), [("m", ["generate:g"])])
    return summary


def test_an_earlier_attempts_stats_do_not_count_again(tmp_path):
    store = storage(str(tmp_path))
    killed = ModelStage(lambda: ScriptedEngine(lambda r: ["x"]), [Echo()], "m", store, attempt="first")
    run(killed, batch(3))  # its rows were never committed: the next attempt redoes them
    resumed = ModelStage(lambda: ScriptedEngine(lambda r: ["x"]), [Echo()], "m", store, attempt="second")
    run(resumed, batch(3))
    summary = summary_of(tmp_path, "second")
    assert summary.stages["m"]["replicas"] == 1
    assert summary.roles["generate:g"]["rows"] == 3 and summary.roles["generate:g"]["output_tokens"] == 30


def test_a_restarted_actor_is_one_replica_and_an_unfinished_start_adds_nothing(tmp_path, monkeypatch):
    import prefgen.engines.stage

    monkeypatch.setattr(prefgen.engines.stage, "current_actor_id", lambda: "actor-1")
    store = storage(str(tmp_path))
    first = ModelStage(lambda: ScriptedEngine(lambda r: ["x"]), [Echo()], "m", store, attempt="a")
    run(first, batch(2))
    again = ModelStage(lambda: ScriptedEngine(lambda r: ["x"]), [Echo()], "m", store, attempt="a")  # restart
    run(again, batch(1))
    monkeypatch.setattr(prefgen.engines.stage, "current_actor_id", lambda: "actor-2")
    with pytest.raises(MemoryError):
        ModelStage(lambda: (_ for _ in ()).throw(MemoryError("cannot allocate")), [Echo()], "m", store,
                   attempt="a")
    summary = summary_of(tmp_path, "a")
    stage = summary.stages["m"]
    assert (stage["replicas"], stage["restarts"], stage["unfinished_starts"]) == (1, 1, 1)
    assert summary.roles["generate:g"]["rows"] == 3
    assert "engine m (1 actor(s), 1 restart(s), 1 start(s) never finished)" in "\n".join(summary.lines())


class ActorDiedError(Exception):
    """Stands in for Ray's error of the same name (matched by name, as Ray wraps it)."""


def test_a_stage_that_never_started_is_named_with_why_and_what_to_change(tmp_path):
    stats = [{"stage": "m", "actor": "x", "ready": False, "started_at": 1},
             {"stage": "m", "actor": "x", "ready": False, "started_at": 2, "gave_up": 1,
              "error": "ray.max_failed_starts=1 reached"},
             {"stage": "j", "actor": "y", "ready": True}]
    try:
        raise RuntimeError("execution failed") from ActorDiedError("The actor died unexpectedly")
    except RuntimeError as exc:
        error = start_failure(exc, stats, {"m": "m (generate:g)"}, {"m": "embedded://tiny"}, rows_done=2)
    text = str(error)
    assert "engine stage m (generate:g) (model embedded://tiny) could not start" in text
    assert "died 1 time(s) in a row" in text and "ray.max_failed_starts=1 reached" in text
    assert "2 finished rows are committed" in text and "max_model_len" in text
    assert start_failure(ValueError("other"), stats, {}, {}, 0) is None  # not an actor's death
    assert start_failure(ActorDiedError("died"), stats[2:], {}, {}, 0) is None  # every stage started


def test_failed_starts_are_counted_in_a_row_per_actor():
    def rec(actor, at, ready):
        return {"stage": "m", "actor": actor, "started_at": at, "ready": ready}

    records = [rec("x", 1, False), rec("x", 2, True), rec("x", 3, False), rec("x", 4, False), rec("y", 5, False)]
    assert failed_starts_in_a_row(records, "x") == 2  # the start before the last ready one does not count
    assert failed_starts_in_a_row(records, "y") == 1 and failed_starts_in_a_row(records, "z") == 0


def test_an_actor_whose_starts_keep_dying_gives_up_instead_of_restarting_forever(tmp_path, monkeypatch):
    """As Ray restarts an actor killed while loading its engine: each start finds the earlier ones
    on record; past the bound it raises (which Ray does not retry) without loading the engine."""
    import prefgen.engines.stage

    monkeypatch.setattr(prefgen.engines.stage, "current_actor_id", lambda: "actor-1")
    for _ in range(2):  # two starts killed mid-load: their records stay `ready: false`
        with pytest.raises(MemoryError):
            ModelStage(lambda: (_ for _ in ()).throw(MemoryError()), [Echo()], "m", storage(str(tmp_path)), attempt="a",
                       max_failed_starts=2)
    loads = []
    with pytest.raises(EngineStartFailed, match="died 2 time\\(s\\) in a row while starting"):
        ModelStage(lambda: loads.append(1), [Echo()], "m", storage(str(tmp_path)), attempt="a", max_failed_starts=2)
    assert loads == []
    records = read_jsons(storage(str(tmp_path)), f"{STATS_DIR}/a")
    assert [r.get("gave_up") for r in sorted(records, key=lambda r: r["started_at"])] == [None, None, 2]


def test_an_engine_that_raises_while_starting_is_recorded_with_its_error(tmp_path):
    def broken():
        raise ValueError("chat template refuses a system role")

    with pytest.raises(ValueError):
        store = storage(str(tmp_path))
        ModelStage(broken, [Echo()], "m", store, attempt="a")
    [record] = read_jsons(store, f"{STATS_DIR}/a")
    assert record["ready"] is False and "system role" in record["error"]
    error = start_failure(ActorDiedError("died"), [record], {}, {}, 0)
    assert "its engine raised while starting: ValueError: chat template refuses a system role" in str(error)
    assert "what the engine's error names" in str(error) and "max_model_len" not in str(error)  # not memory advice


class SteppingEngine(ScriptedEngine):
    """Reports its steps and limits, as `AsyncVllmEngine` on `SteppedLLM` does."""

    def step_summary(self):
        return {"steps": 4, "step_s": 2.0, "mean_running": 3.0, "max_running": 5, "mean_waiting": 0.5,
                "waiting_share": 0.25, "bucket_s": 10.0, "timeline": [[0, 3.0, 0.5, 0.2]]}

    def scheduler_limits(self):
        return {"max_num_seqs": 256, "max_num_batched_tokens": 4096}


def test_the_engines_steps_and_limits_reach_the_stats_and_the_summary(tmp_path):
    store = storage(str(tmp_path))
    stage = ModelStage(lambda: SteppingEngine(lambda r: ["x"]), [Echo()], "m", store, attempt="a")
    run(stage, batch(2))
    (stats,) = read_jsons(store, f"{STATS_DIR}/a")
    assert stats["engine_limits"] == {"max_num_seqs": 256, "max_num_batched_tokens": 4096}
    assert stats["engine_steps"]["timeline"] == [[0, 3.0, 0.5, 0.2]]
    summary = summary_of(tmp_path, "a")
    assert summary.stages["m"]["engine_steps"]["steps"] == 4 and "timeline" not in summary.stages["m"]["engine_steps"]
    assert any("steps: 4 in 2 s, 3 sequences each on average (at most 5), requests waiting 25% of the time" in line
               for line in summary._stage_lines())
