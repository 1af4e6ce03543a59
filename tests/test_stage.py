"""The Ray stage's bookkeeping and error paths, on a scripted engine (no Ray, no vLLM).

That a stage works on a model is the integration tests' job; these check what the stage does
around the engine: the roles run in order on one engine, a failing task rejects only its live
rows, a dead engine restarts the actor, and per-role figures add up.
"""

import json
from collections import Counter

import pyarrow as pa
import pytest
from scripted_engine import ScriptedEngine

from prefgen.engine import Request
from prefgen.schema import WORK_ROW, to_table
from prefgen.stage import ModelStage


class Echo:
    """A task that asks one request per row and appends the answer as the row's detail."""

    def __init__(self, role, fail=None):
        self.role, self.fail, self.dropped = role, fail, Counter()

    def run(self, rows, engine):
        if self.fail:
            raise self.fail
        for row, result in zip(rows, engine.chat([Request([{"role": "user", "content": r["id"]}]) for r in rows])):
            row["output_tokens"] += result.tokens
        self.dropped["empty"] += 1


def batch(n=3):
    rows = [{"id": f"r{i}", "instruction": "q", "source": "s", "line": i, "candidates": [], "output_tokens": 0,
             "reject_reason": None, "reject_detail": None} for i in range(n)]
    return to_table(rows, WORK_ROW)


def stage(tmp_path, tasks, engine=None):
    engine = engine or ScriptedEngine(lambda req: ["ok"])
    (tmp_path / "_stats").mkdir(exist_ok=True)
    return ModelStage(lambda: engine, tasks, "m", str(tmp_path)), engine


def test_roles_share_one_engine_and_are_counted_per_role(tmp_path):
    st, engine = stage(tmp_path, [Echo("generate:a"), Echo("judge:j")])
    out = st(batch(3)).to_pylist()
    assert [len(call) for call in engine.calls] == [3, 3]  # one engine, both roles
    assert all(r["output_tokens"] == 20 for r in out)
    (stats_file,) = (tmp_path / "_stats").iterdir()
    stats = json.loads(stats_file.read_text())
    assert stats["batches"] == 1 and set(stats["roles"]) == {"generate:a", "judge:j"}
    assert stats["roles"]["judge:j"] == {**stats["roles"]["judge:j"], "rows": 3, "requests": 3, "output_tokens": 30,
                                         "dropped": {"empty": 1}}


def test_a_failing_task_rejects_its_rows_and_later_roles_pass_them_over(tmp_path):
    st, engine = stage(tmp_path, [Echo("generate:a", fail=ValueError("boom")), Echo("judge:j")])
    out = st(batch(2)).to_pylist()
    assert {r["reject_reason"] for r in out} == {"stage_error"}
    assert all("generate:a: ValueError('boom')" in r["reject_detail"] for r in out)
    assert engine.calls == []  # the judge saw no live row


def test_a_dead_engine_restarts_the_actor(tmp_path, monkeypatch):
    class EngineDeadError(RuntimeError):
        pass

    monkeypatch.setattr("prefgen.stage.engine_dead", lambda exc: isinstance(exc, EngineDeadError))
    st, _ = stage(tmp_path, [Echo("generate:a", fail=EngineDeadError("gone"))])
    exits = []
    monkeypatch.setattr(st, "restart_actor", lambda exc: exits.append(exc))
    with pytest.raises(EngineDeadError):
        st(batch(1))
    assert len(exits) == 1


def test_rows_rejected_before_the_stage_pass_untouched(tmp_path):
    rows = batch(2).to_pylist()
    rows[0]["reject_reason"], rows[0]["reject_detail"] = "prompt_too_long", "earlier"
    st, engine = stage(tmp_path, [Echo("generate:a")])
    out = st(pa.Table.from_pylist(rows, schema=WORK_ROW)).to_pylist()
    assert out[0]["reject_detail"] == "earlier" and out[0]["output_tokens"] == 0
    assert len(engine.calls[0]) == 1
