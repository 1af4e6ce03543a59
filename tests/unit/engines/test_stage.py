"""The Ray stage's bookkeeping and error paths, on scripted engines (no Ray, no vLLM).

That a stage works on a model is the integration tests' job; these check what the stage does
around the engine: the roles run in order on one engine, a failing task rejects only its live
rows, a dead engine restarts the actor, per-role figures add up, and several batches are in
flight at once on an async engine (their requests reach it together) while a blocking engine
is called one batch at a time.
"""

import asyncio
import json
import threading
from collections import Counter

import pyarrow as pa
import pytest
from support.scripted_engine import ScriptedEngine
from support.stages import batch, run

from prefgen.engines.engine import Request, Result
from prefgen.schema import WORK_ROW, to_table
from prefgen.engines.stage import ModelStage
from prefgen.output.storage import storage


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


def stage(tmp_path, tasks, engine=None, batches_in_flight=1):
    engine = engine or ScriptedEngine(lambda req: ["ok"])
    (tmp_path / "_stats").mkdir(exist_ok=True)
    return ModelStage(lambda: engine, tasks, "m", storage(str(tmp_path)), batches_in_flight), engine


def stats_of(tmp_path):
    (stats_file,) = (tmp_path / "_stats").rglob("*.json")
    return json.loads(stats_file.read_text())


def test_roles_share_one_engine_and_are_counted_per_role(tmp_path):
    st, engine = stage(tmp_path, [Echo("generate:a"), Echo("judge:j")])
    out = run(st, batch(3))
    assert [len(call) for call in engine.calls] == [3, 3]  # one engine, both roles
    assert all(r["output_tokens"] == 20 for r in out)
    stats = stats_of(tmp_path)
    assert stats["batches"] == 1 and set(stats["roles"]) == {"generate:a", "judge:j"}
    assert stats["roles"]["judge:j"] == {**stats["roles"]["judge:j"], "rows": 3, "requests": 3, "output_tokens": 30,
                                         "dropped": {"empty": 1}}


def test_a_failing_task_rejects_its_rows_and_later_roles_pass_them_over(tmp_path):
    st, engine = stage(tmp_path, [Echo("generate:a", fail=ValueError("boom")), Echo("judge:j")])
    out = run(st, batch(2))
    assert {r["reject_reason"] for r in out} == {"stage_error"}
    assert all("generate:a: ValueError('boom')" in r["reject_detail"] for r in out)
    assert engine.calls == []  # the judge saw no live row


def test_a_dead_engine_restarts_the_actor(tmp_path, monkeypatch):
    class EngineDeadError(RuntimeError):
        pass

    monkeypatch.setattr("prefgen.engines.stage.engine_dead", lambda exc: isinstance(exc, EngineDeadError))
    st, _ = stage(tmp_path, [Echo("generate:a", fail=EngineDeadError("gone"))])
    exits = []
    monkeypatch.setattr(st, "restart_actor", lambda exc: exits.append(exc))
    with pytest.raises(EngineDeadError):
        run(st, batch(1))
    assert len(exits) == 1


def test_rows_rejected_before_the_stage_pass_untouched(tmp_path):
    rows = batch(2).to_pylist()
    rows[0]["reject_reason"], rows[0]["reject_detail"] = "prompt_too_long", "earlier"
    st, engine = stage(tmp_path, [Echo("generate:a")])
    out = run(st, pa.Table.from_pylist(rows, schema=WORK_ROW))
    assert out[0]["reject_detail"] == "earlier" and out[0]["output_tokens"] == 0
    assert len(engine.calls[0]) == 1


class GatedEngine:
    """An async engine that answers only once `width` calls wait on it together (or after a timeout),
    recording the most calls it saw waiting at once."""

    def __init__(self, width, dead_on=None):
        self.width, self.dead_on = width, dead_on
        self.waiting = self.most_waiting = 0
        self.calls = []
        self.opened = None

    async def chat(self, requests):
        self.opened = self.opened or asyncio.Event()
        self.calls.append([r.messages[0]["content"] for r in requests])
        if self.dead_on and any(r.messages[0]["content"] == self.dead_on for r in requests):
            raise self.dead_error("engine core died")
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        if self.waiting >= self.width:
            self.opened.set()
        try:
            await asyncio.wait_for(self.opened.wait(), timeout=2)
        except TimeoutError:
            pass
        self.waiting -= 1
        return [Result(texts=["ok"], finish_reasons=["stop"], tokens=5) for _ in requests]

    class dead_error(RuntimeError):
        pass


def batch_of(prefix, n=2):
    rows = batch(n).to_pylist()
    for row in rows:
        row["id"] = f"{prefix}{row['id']}"
    return to_table(rows, WORK_ROW)


def test_batches_in_flight_reach_the_async_engine_together(tmp_path):
    engine = GatedEngine(width=3)
    st, _ = stage(tmp_path, [Echo("generate:a"), Echo("judge:j")], engine, batches_in_flight=3)
    outs = run(st, batch_of("a"), batch_of("b"), batch_of("c"))
    assert engine.most_waiting == 3  # the three batches' first calls waited together
    assert [[r["id"] for r in out] for out in outs] == [["ar0", "ar1"], ["br0", "br1"], ["cr0", "cr1"]]
    assert all(r["output_tokens"] == 10 for out in outs for r in out)  # 5 per role, each batch its own rows
    stats = stats_of(tmp_path)
    assert stats["batches"] == 3 and stats["max_in_flight"] == 3
    assert stats["busy_s"] <= stats["batch_s"]  # overlapping batches: busy time is their union
    assert stats["roles"]["generate:a"]["requests"] == 6
    assert stats["roles"]["judge:j"]["dropped"] == {"empty": 3}  # each batch's drops, summed


def test_a_blocking_engine_is_called_one_batch_at_a_time(tmp_path):
    active, most = [0], [0]
    lock = threading.Lock()

    class Blocking(ScriptedEngine):
        def chat(self, requests):
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            threading.Event().wait(0.05)
            with lock:
                active[0] -= 1
            return super().chat(requests)

    engine = Blocking(lambda req: ["ok"])
    st, _ = stage(tmp_path, [Echo("generate:a")], engine, batches_in_flight=3)
    outs = run(st, batch_of("a"), batch_of("b"), batch_of("c"))
    assert most[0] == 1 and len(engine.calls) == 3
    assert all(r["output_tokens"] == 10 for out in outs for r in out)


def test_a_task_failing_in_one_batch_leaves_the_other_batches_in_flight_alone(tmp_path):
    class FailsOn(Echo):
        def run(self, rows, engine):
            if any(r["id"].startswith("b") for r in rows):
                raise ValueError("bad batch")
            super().run(rows, engine)

    engine = GatedEngine(width=2)
    st, _ = stage(tmp_path, [FailsOn("generate:a"), Echo("judge:j")], engine, batches_in_flight=3)
    good_a, bad, good_c = run(st, batch_of("a"), batch_of("b"), batch_of("c"))
    assert {r["reject_reason"] for r in bad} == {"stage_error"}
    assert all("bad batch" in r["reject_detail"] for r in bad)
    assert all(r["reject_reason"] is None and r["output_tokens"] == 10 for r in good_a + good_c)
    assert not any(c[0].startswith("b") for c in engine.calls)  # the failed batch asked nothing more
    assert stats_of(tmp_path)["roles"]["judge:j"]["rows"] == 4


def test_a_dead_async_engine_restarts_the_actor_with_batches_in_flight(tmp_path, monkeypatch):
    engine = GatedEngine(width=2, dead_on="br0")
    monkeypatch.setattr("prefgen.engines.stage.engine_dead", lambda exc: isinstance(exc, GatedEngine.dead_error))
    st, _ = stage(tmp_path, [Echo("generate:a")], engine, batches_in_flight=2)
    exits = []
    monkeypatch.setattr(st, "restart_actor", lambda exc: exits.append(exc))
    with pytest.raises(GatedEngine.dead_error):
        run(st, batch_of("a"), batch_of("b"))
    assert len(exits) == 1 and "engine core died" in str(exits[0])


def test_each_roles_work_is_on_file_as_soon_as_its_task_ends_inside_the_batch(tmp_path, monkeypatch):
    """Progress need not wait for a batch: when the second role asks its first request, the first
    role's rows are already counted in the stats file (`work`), the batch not yet booked (once the
    file is older than WORK_SNAPSHOT_EVERY_S; 0 here)."""
    monkeypatch.setattr("prefgen.engines.stage.WORK_SNAPSHOT_EVERY_S", 0.0)
    seen = []

    def reply(req):
        if req.messages[0]["content"].startswith("judge"):
            seen.append(stats_of(tmp_path))
        return ["ok"]

    class Asks(Echo):
        def run(self, rows, engine):
            for row, result in zip(rows, engine.chat([Request([{"role": "user", "content": f"{self.role} {r['id']}"}])
                                                      for r in rows])):
                row["output_tokens"] += result.tokens

    st, _ = stage(tmp_path, [Asks("generate:a"), Asks("judge:j")], ScriptedEngine(reply))
    run(st, batch(3))
    during = seen[0]
    assert during["batches"] == 0 and during["roles"]["generate:a"]["rows"] == 0  # the batch is not done...
    assert during["work"]["generate:a"] == {"rows": 3, "requests": 3, "output_tokens": 30}  # ...its first role is
    assert during["work"]["judge:j"]["rows"] == 0
    after = stats_of(tmp_path)
    assert after["work"]["judge:j"]["rows"] == 3 and after["batches"] == 1 and after["seq"] > during["seq"]


def test_fast_batches_write_the_stats_file_once_each_not_once_per_role(tmp_path):
    """On an object store every write is a PUT: a role's work is written inside a batch only when
    the file is WORK_SNAPSHOT_EVERY_S old, so three quick batches of two roles cost three writes."""
    from prefgen.output.storage import storage

    st, _ = stage(tmp_path, [Echo("generate:a"), Echo("judge:j")], ScriptedEngine(lambda req: ["ok"]))
    requests = storage(str(tmp_path)).requests
    requests.reset()
    for _ in range(3):
        run(st, batch(2))  # one after the other
    assert requests.calls["PUT"] == 3
    assert stats_of(tmp_path)["work"]["judge:j"]["rows"] == 6 and stats_of(tmp_path)["batches"] == 3
