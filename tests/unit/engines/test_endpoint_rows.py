"""What an endpoint's outcomes do to rows, stages, the writer, the plan and the summary (no Ray, no
HTTP: scripted engines): a request that failed rejects its row as `request_failed` with its
status; an endpoint that stops marks its batch, which the writer leaves unwritten; counts add up.
"""

import asyncio
from collections import Counter

import pyarrow as pa
import pytest
from support.scripted_engine import ScriptedEngine

from prefgen.config import parse_config
from prefgen.engines.endpoint import EndpointStopped
from prefgen.engines.engine import Request, Result
from prefgen.roles.evolve.task import EvolveTask
from prefgen.roles.generate.task import GenerateTask
from prefgen.roles.judge.task import JudgeTask
from prefgen.output.writer import write_batch
from prefgen.engines.placement import PlanError, endpoint_actor_options
from prefgen.roles.plan import plan_stages
from prefgen.report.summary import RunSummary
from prefgen.schema import STOPPED, WORK_ROW, candidate, to_table
from prefgen.engines.stage import ModelStage
from prefgen.output.storage import storage
from support.paths import REPO

FAILED = "endpoint api: HTTP 503 after 6 attempts: overloaded"


def row(rid, texts=()):
    cands = [candidate(candidate_id=f"{rid}/g/{i}", text=t, model="m", generator="g", origin="generated")
             for i, t in enumerate(texts)]
    return {"id": rid, "instruction": f"Q {rid}?", "source": "s", "line": 1, "candidates": cands,
            "output_tokens": 0, "reject_reason": None, "reject_detail": None}


def failing_for(marker: str, ok):
    """A scripted engine: requests whose prompt mentions `marker` fail, the others get ok(request)."""
    return ScriptedEngine(lambda req: Result(failed=FAILED) if marker in str(req.messages) else ok(req))


def test_a_failed_generation_rejects_its_row_only():
    rows = [row("r1"), row("r2")]
    GenerateTask("g", "m").run(rows, failing_for("Q r1?", lambda req: ["fine"]))
    assert rows[0]["reject_reason"] == "request_failed" and "generator g:" in rows[0]["reject_detail"]
    assert "HTTP 503" in rows[0]["reject_detail"] and rows[0]["candidates"] == []
    assert rows[1]["reject_reason"] is None and len(rows[1]["candidates"]) == 1


def test_a_failed_rewrite_rejects_its_row_only():
    rows, counter = [row("r1", ["a"]), row("r2", ["b"])], iter(range(10))
    EvolveTask("m", ["details"], num_evolutions=2).run(rows, failing_for("Q r1?", lambda req: [f"better {next(counter)}"]))
    assert rows[0]["reject_reason"] == "request_failed" and "evolve: endpoint api: HTTP 503" in rows[0]["reject_detail"]
    assert rows[1]["reject_reason"] is None and len(rows[1]["candidates"]) == 3


def test_a_failed_judge_call_rejects_its_row_and_records_the_status():
    rows = [row("r1", ["x", "y"]), row("r2", ["x", "y"])]
    JudgeTask("j", "m", permutations=1).run(rows, failing_for("Q r1?", lambda req: ['{"A": {"rationale": "r", '
                                                                                   '"rating": 4}, "B": {"rationale": '
                                                                                   '"r", "rating": 2}}']))
    assert rows[0]["reject_reason"] == "request_failed" and "judge j: endpoint api: HTTP 503" in rows[0]["reject_detail"]
    assert rows[0]["candidates"][0]["judgments"][0]["error"] == FAILED
    assert rows[1]["reject_reason"] is None and [c["rating"] for c in rows[1]["candidates"]] == [4, 2]


class StoppingEngine:
    """An async engine that stops on its second call, as an endpoint does on a 401."""

    def __init__(self):
        self.calls = 0

    async def chat(self, requests):
        self.calls += 1
        if self.calls > 1:
            raise EndpointStopped("endpoint api (m at http://x/v1): HTTP 401, the API key was refused: no")
        return [Result(texts=["t"], tokens=1) for _ in requests]

    def usage(self):
        return {"model": "m", "base_url": "http://x/v1", "requests": self.calls, "stopped": None}


class Ask:
    role, dropped = "judge:j", Counter()

    def run(self, rows, engine):
        engine.chat([Request([{"role": "user", "content": "q"}]) for _ in rows])
        engine.chat([Request([{"role": "user", "content": "q"}]) for _ in rows])


def test_a_stopped_endpoint_marks_the_whole_batch_and_the_writer_writes_nothing(tmp_path):
    (tmp_path / "_stats").mkdir()
    rows = [row("r1", ["a"]), row("r2", ["b"])]
    rows[1]["reject_reason"], rows[1]["reject_detail"] = "prompt_too_long", "long"
    st = ModelStage(StoppingEngine, [Ask()], "api", storage(str(tmp_path)))
    out = asyncio.run(st(to_table(rows, WORK_ROW))).to_pylist()
    assert [r["reject_reason"] for r in out] == [STOPPED, STOPPED]  # the rejected row too: nothing is committed
    assert "HTTP 401" in out[0]["reject_detail"]
    (stats,) = (tmp_path / "_stats").rglob("*.json")
    assert '"endpoint"' in stats.read_text()  # the engine's counts go to the stats file
    report = write_batch(to_table(out, WORK_ROW), storage(str(tmp_path)), "token", {"strategy": "best_vs_worst",
                         "min_margin": 1, "length_matched": False, "allow_truncated_chosen": False}, 0)
    assert "HTTP 401" in report.to_pylist()[0]["report"] and '"stop"' in report.to_pylist()[0]["report"]
    assert not (tmp_path / "pairs").exists() and not (tmp_path / "rejects").exists()
    assert isinstance(report, pa.Table)


def endpoint_cfg(max_in_flight=6, evolver="api"):
    return parse_config({"models": {
        "api": {"kind": "endpoint", "base_url": "http://127.0.0.1:9/v1", "model": "m", "max_in_flight": max_in_flight},
        "local": {"kind": "vllm"}},
        "generators": [{"model": "api"}], "evolution": {"model": evolver}, "judge": {"model": "api"}})


def test_an_endpoint_is_one_cpu_actor_and_its_limit_is_split_between_its_stages():
    stages = plan_stages(endpoint_cfg(max_in_flight=7, evolver="local"))
    assert [s.name for s in stages] == ["api", "local", "api#2"]
    assert [s.max_in_flight for s in stages] == [4, None, 3]  # never more than 7 open at once
    eng = stages[0].model.engine
    assert eng.replica_range == (1, 1) and eng.device == "cpu"
    assert endpoint_actor_options(eng) == {"num_cpus": 0.25}  # no GPU, nothing in the runtime env
    assert [s.max_in_flight for s in plan_stages(endpoint_cfg())] == [6]  # one stage: the whole limit
    with pytest.raises(PlanError, match="max_in_flight: 1 cannot be shared by the 2 stages"):
        plan_stages(endpoint_cfg(max_in_flight=1, evolver="local"))


def test_summary_sums_endpoint_counts_and_prices_them():
    usage = {"model": "m", "base_url": "http://x/v1", "requests": 10, "retries": 2, "failed": 1,
             "schema_fallbacks": 0, "top_ups": 0, "prompt_tokens": 1_000_000, "completion_tokens": 200_000,
             "answers_without_usage": 0, "http_errors": {"429": 2}, "price_prompt_per_mtok": 0.5,
             "price_completion_per_mtok": 1.5, "cost": 0.8, "stopped": None}
    actor = {"stage": "api#2", "engine_start_s": 0.0, "busy_s": 1.0, "roles": {}, "endpoint": usage}
    summary = RunSummary(output="out")
    summary.add_stage_stats([actor, dict(actor, stage="api")], [("api", []), ("api#2", [])])
    e = summary.endpoints["api"]
    assert (e["requests"], e["retries"], e["failed"], e["http_errors"]) == (20, 4, 2, {"429": 4})
    assert e["cost"] == pytest.approx(2 * 0.5 + 0.4 * 1.5)
    lines = summary.lines()
    assert any(line.startswith("endpoint api (m at http://x/v1): 20 requests, 4 retries, 2 failed") for line in lines)
    assert "  cost: 1.6000 at the configured prices per million tokens" in lines


def test_the_hosted_judge_config_plans_its_judge_as_a_cpu_stage():

    from prefgen.config import load_config
    from prefgen.run.ray_start import plan_run

    cfg = load_config(REPO / "configs" / "hosted-judge.yaml")
    stages = plan_stages(cfg)
    devices, mode, _ = plan_run(cfg, stages, {"CPU": 8, "GPU": 1})
    assert [s.name for s in stages] == ["qwen2.5-1.5b", "gpt-judge"] and mode == "streaming"
    assert devices["gpt-judge"] == "cpu" and stages[1].max_in_flight == 32
    assert "api_key" not in str(cfg.model_dump()).replace("api_key_env", "").replace("api_key_file", "")


def test_how_an_endpoint_is_called_does_not_change_the_digest():
    def digest(**api):
        spec = {"kind": "endpoint", "base_url": "http://h/v1", "model": "m"} | api
        return parse_config({"models": {"api": spec}, "judge": {"model": "api"}, "generators": [{}]}).digest()

    base = digest()
    assert digest(max_in_flight=3, timeout_s=9, retries=1, api_key_env="K", price_prompt_per_mtok=1.0) == base
    assert digest(model="other") != base and digest(base_url="http://other/v1") != base
