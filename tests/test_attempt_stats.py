"""Counting engines per attempt, and naming an engine that could not start (no Ray: scripted
engines and the stats files a `ModelStage` writes).

The summary's engine figures are this attempt's: the files of an earlier (killed) attempt do
not count, an actor Ray restarted is one replica, and a start that never became ready adds
nothing but is reported; when every start of a stage failed, the run's error names it."""

import json
from collections import Counter

import pytest
from scripted_engine import ScriptedEngine

from prefgen.engine import Request
from prefgen.engine_starts import start_failure
from prefgen.io import STATS_DIR, read_jsons
from prefgen.report import RunSummary
from prefgen.stage import ModelStage
from test_stage import batch, run


class Echo:
    role = "generate:g"

    def __init__(self):
        self.dropped = Counter()

    def run(self, rows, engine):
        for row, result in zip(rows, engine.chat([Request([{"role": "user", "content": r["id"]}]) for r in rows])):
            row["output_tokens"] += result.tokens


def summary_of(out, attempt):
    summary = RunSummary(output=str(out))
    summary.add_stage_stats(read_jsons(str(out), f"{STATS_DIR}/{attempt}"), [("m", ["generate:g"])])
    return summary


def test_an_earlier_attempts_stats_do_not_count_again(tmp_path):
    killed = ModelStage(lambda: ScriptedEngine(lambda r: ["x"]), [Echo()], "m", str(tmp_path), attempt="first")
    run(killed, batch(3))  # its rows were never committed: the next attempt redoes them
    resumed = ModelStage(lambda: ScriptedEngine(lambda r: ["x"]), [Echo()], "m", str(tmp_path), attempt="second")
    run(resumed, batch(3))
    summary = summary_of(tmp_path, "second")
    assert summary.stages["m"]["replicas"] == 1
    assert summary.roles["generate:g"]["rows"] == 3 and summary.roles["generate:g"]["output_tokens"] == 30


def test_a_restarted_actor_is_one_replica_and_an_unfinished_start_adds_nothing(tmp_path, monkeypatch):
    import prefgen.stage

    monkeypatch.setattr(prefgen.stage, "current_actor_id", lambda: "actor-1")
    first = ModelStage(lambda: ScriptedEngine(lambda r: ["x"]), [Echo()], "m", str(tmp_path), attempt="a")
    run(first, batch(2))
    again = ModelStage(lambda: ScriptedEngine(lambda r: ["x"]), [Echo()], "m", str(tmp_path), attempt="a")  # restart
    run(again, batch(1))
    monkeypatch.setattr(prefgen.stage, "current_actor_id", lambda: "actor-2")
    with pytest.raises(MemoryError):
        ModelStage(lambda: (_ for _ in ()).throw(MemoryError("cannot allocate")), [Echo()], "m", str(tmp_path),
                   attempt="a")
    summary = summary_of(tmp_path, "a")
    stage = summary.stages["m"]
    assert (stage["replicas"], stage["restarts"], stage["unfinished_starts"]) == (1, 1, 1)
    assert summary.roles["generate:g"]["rows"] == 3
    assert "engine m (1 actor(s), 1 restart(s), 1 start(s) never finished)" in "\n".join(summary.lines())


class ActorDiedError(Exception):
    """Stands in for Ray's error of the same name (matched by name, as Ray wraps it)."""


def test_a_stage_that_never_started_is_named_with_why_and_what_to_change(tmp_path):
    stats = [{"stage": "m", "actor": "x", "ready": False}, {"stage": "m", "actor": "x", "ready": False},
             {"stage": "j", "actor": "y", "ready": True}]
    try:
        raise RuntimeError("execution failed") from ActorDiedError("The actor died unexpectedly")
    except RuntimeError as exc:
        error = start_failure(exc, stats, {"m": "m (generate:g)"}, {"m": "embedded://tiny"}, 1, rows_done=2)
    text = str(error)
    assert "engine stage m (generate:g) (model embedded://tiny) could not start" in text
    assert "2 time(s)" in text and "ray.max_actor_restarts=1" in text and "2 finished rows are committed" in text
    assert "max_model_len" in text
    assert start_failure(ValueError("other"), stats, {}, {}, 1, 0) is None  # not an actor's death
    assert start_failure(ActorDiedError("died"), stats[2:], {}, {}, 1, 0) is None  # every stage started


def test_an_engine_that_raises_while_starting_is_recorded_with_its_error(tmp_path):
    def broken():
        raise ValueError("chat template refuses a system role")

    with pytest.raises(ValueError):
        ModelStage(broken, [Echo()], "m", str(tmp_path), attempt="a")
    [record] = read_jsons(str(tmp_path), f"{STATS_DIR}/a")
    assert record["ready"] is False and "system role" in record["error"]
    error = start_failure(ActorDiedError("died"), [record], {}, {}, 3, 0)
    assert "its engine raised while starting: ValueError: chat template refuses a system role" in str(error)
    assert json.loads(json.dumps(record)) == record
