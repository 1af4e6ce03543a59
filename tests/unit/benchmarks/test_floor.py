"""The floor's bookkeeping (engines one after another, each role once over every row) on a
scripted engine, and the arithmetic of the prefgen/floor report; no Ray, no vLLM."""

import json
import os
import subprocess

import pytest
from support.scripted_engine import ScriptedEngine

from prefgen.config import EngineConfig, PipelineConfig, parse_config
from benchmarks.floor import child_pids, floor_device, free_engine, prefgen_engine_start, run_floor, throughput_report


def work_rows(n):
    return [{"id": f"r{i}", "instruction": f"question {i}?", "source": "s", "line": i + 1, "candidates": [],
             "output_tokens": 0, "reject_reason": None, "reject_detail": None} for i in range(n)]


@pytest.fixture(autouse=True)
def engine_env(monkeypatch):
    """The floor sets the engine's env in os.environ; monkeypatch puts it back after each test."""
    for key in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND"):
        monkeypatch.delenv(key, raising=False)


class Recorder:
    """Engine factory and free function that log what happens, in order."""

    def __init__(self):
        self.events, self.engines = [], []

    def factory(self, source, engine_cfg, device):
        self.events.append(("start", source, device))
        engine = ScriptedEngine(lambda req: [f"answer {k}" for k in range(req.n)])
        self.engines.append(engine)
        return engine

    def free(self, engine):
        self.events.append(("free", self.engines.index(engine)))
        return []


def test_one_engine_at_a_time_each_freed_before_the_next_starts(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    cfg = parse_config({
        "models": {"a": {"source": str(a), "engine": {"device": "cpu", "cpu_kv_cache_gib": 3}},
                   "b": {"source": str(b)}},
        "generators": [{"name": "ga", "model": "a", "num_completions": 2}],
        "evolution": {"enabled": False},
        "judge": {"model": "b"},
    })
    rec = Recorder()
    out = run_floor(cfg, work_rows(5), rec.factory, cuda_available=True, free=rec.free, log=lambda m: None)
    assert rec.events == [("start", str(a), "cpu"), ("free", 0), ("start", str(b), "gpu"), ("free", 1)]
    assert list(out["engines"]) == ["a", "b"] and out["engines"]["b"]["device"] == "gpu"
    assert list(out["roles"]) == ["generate:ga", "judge:judge", "verify:judge"]
    # the generator saw every row in one call: the engine batches as wide as it can
    assert [len(call) for call in rec.engines[0].calls] == [5]
    assert out["roles"]["generate:ga"] | {"rows": 5, "requests": 5, "output_tokens": 100} == out["roles"]["generate:ga"]
    assert out["rows"] == 5
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"  # the CPU engine's env, as prefgen's actor gets it


def test_every_role_of_the_default_runs_once_over_all_rows_on_one_engine():
    rec = Recorder()
    out = run_floor(PipelineConfig(), work_rows(3), rec.factory, cuda_available=False, free=rec.free,
                    log=lambda m: None)
    assert len(rec.engines) == 1
    assert list(out["roles"]) == ["generate:smol-focused", "generate:smol-creative", "evolve", "judge:judge",
                                  "verify:judge"]
    assert all(rs["rows"] == 3 for rs in out["roles"].values())
    engine = out["engines"]["SmolLM2-135M-Instruct"]
    assert engine["output_tokens"] == sum(rs["output_tokens"] for rs in out["roles"].values()) > 0
    assert engine["busy_s"] >= sum(rs["busy_s"] for rs in out["roles"].values())


def test_a_failing_role_rejects_its_rows_and_later_roles_skip_them(monkeypatch):
    monkeypatch.setattr("benchmarks.floor.engine_dead", lambda exc: False)  # (the real check imports vLLM)
    rec = Recorder()

    def failing(source, engine_cfg, device):
        rec.factory(source, engine_cfg, device)
        return ScriptedEngine(lambda req: (_ for _ in ()).throw(ValueError("boom")))

    out = run_floor(PipelineConfig(), work_rows(2), failing, cuda_available=False, free=lambda e: [],
                    log=lambda m: None)
    assert out["rejected_rows"] == 2
    assert out["roles"]["generate:smol-focused"]["rows"] == 2 and out["roles"]["judge:judge"]["rows"] == 0


def test_floor_device_follows_the_config_and_auto_follows_cuda():
    assert floor_device(EngineConfig(device="auto"), cuda_available=True) == "gpu"
    assert floor_device(EngineConfig(device="auto"), cuda_available=False) == "cpu"
    assert floor_device(EngineConfig(device="cpu"), cuda_available=True) == "cpu"


def test_free_engine_shuts_the_engine_core_down_and_reports_children_left():
    shut = []

    class Core:
        def shutdown(self):
            shut.append(True)

    class Engine:
        def __init__(self):
            self.llm = type("LLM", (), {"llm_engine": type("E", (), {"engine_core": Core()})()})()

    others = set(child_pids())  # children of this test process started by earlier tests are not the engine's
    assert set(free_engine(Engine(), wait_s=0)) - others == set() and shut == [True]
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in free_engine(object(), wait_s=0)
    finally:
        child.kill()
        child.wait()


def manifest(mode, starts, wall=100.0):
    stages = {name: {"replicas": 1, "engine_start_s": s, "busy_s": 30.0, "output_tokens": 600, "roles": [name]}
              for name, s in starts.items()}
    roles = {f"generate:{name}": {"stage": name, "rows": 8, "requests": 8, "output_tokens": 600, "busy_s": 30.0,
                                  "dropped": {}} for name in starts}
    return {"mode": mode, "wall_seconds": wall, "input_rows": 8, "rows_skipped": 0, "pairs": 6,
            "output_tokens": 600 * len(starts), "stages": stages, "roles": roles}


def floor_result(starts, busy):
    engines = {name: {"device": "cpu", "roles": [f"generate:{name}"], "engine_start_s": s, "busy_s": busy[name],
                      "output_tokens": 500, "free_s": 0.5, "children_after_free": 0} for name, s in starts.items()}
    roles = {f"generate:{name}": {"stage": name, "rows": 8, "requests": 8, "output_tokens": 500, "busy_s": busy[name],
                                  "dropped": {}} for name in starts}
    return {"engines": engines, "roles": roles, "rows": 8, "wall_s": 60.0, "rejected_rows": 0}


def test_streaming_start_is_the_slowest_engine_phased_the_sum():
    assert prefgen_engine_start(manifest("streaming", {"a": 12.0, "b": 20.0})) == (20.0, "max")
    assert prefgen_engine_start(manifest("phased", {"a": 12.0, "b": 20.0})) == (32.0, "sum")


@pytest.mark.parametrize("mode, prefgen_start", [("streaming", 20.0), ("phased", 32.0)])
def test_ratios_with_and_without_start_up(mode, prefgen_start):
    f_start, f_busy = {"a": 8.0, "b": 4.0}, {"a": 16.0, "b": 12.0}
    report = throughput_report(manifest(mode, {"a": 12.0, "b": 20.0}, wall=100.0), 110.0,
                               floor_result(f_start, f_busy))
    ratios = report["prefgen_over_floor"]
    floor_start, floor_work = sum(f_start.values()), sum(f_busy.values())
    assert ratios["wall_with_start"] == round(100.0 / (floor_start + floor_work), 2)
    assert ratios["wall_without_start"] == round((100.0 - prefgen_start) / floor_work, 2)
    assert ratios["engine_start_over_alone"] == round(prefgen_start / f_start["a"], 2)  # the floor's first engine
    assert ratios["engine_start_over_alone_by_engine"] == {"a": 1.5, "b": 2.5}
    assert ratios["output_tokens"] == round(1200 / 1000, 2)
    assert report["floor"]["engine_start_alone_s"] == 8.0
    assert report["floor"]["rows_per_hour"] == round(8 * 3600 / (floor_start + floor_work), 1)
    assert report["prefgen"]["rows_per_hour"] == round(8 * 3600 / 100.0, 1)
    assert report["prefgen"]["wall_s"] == 110.0 and report["prefgen"]["pipeline_wall_s"] == 100.0


def test_report_shape_is_plain_json_with_both_sides_per_role():
    report = throughput_report(manifest("streaming", {"a": 10.0}), 105.0, floor_result({"a": 5.0}, {"a": 20.0}))
    assert set(report) == {"prefgen", "floor", "prefgen_over_floor"}
    assert json.loads(json.dumps(report)) == report
    for side in ("prefgen", "floor"):
        role = report[side]["roles"]["generate:a"]
        assert set(role) == {"stage", "rows", "requests", "busy_s", "output_tokens", "tokens_per_s"}
        assert role["tokens_per_s"] == round(role["output_tokens"] / role["busy_s"], 1)
        assert {"engine_start_s", "busy_s", "output_tokens"} <= set(report[side]["engines"]["a"])
    assert report["floor"]["engines"]["a"]["children_after_free"] == 0


def test_a_floor_run_as_a_process_is_set_against_prefgen_process_to_process():
    floor = floor_result({"a": 5.0}, {"a": 20.0})
    assert "process_wall" not in throughput_report(manifest("streaming", {"a": 10.0}), 105.0, floor)["prefgen_over_floor"]
    report = throughput_report(manifest("streaming", {"a": 10.0}), 105.0, dict(floor, process_wall_s=30.0))
    assert report["floor"]["process_wall_s"] == 30.0
    assert report["prefgen_over_floor"]["process_wall"] == 3.5  # prefgen's wall from outside over the floor's


def test_ratios_are_none_when_the_floor_did_no_work():
    report = throughput_report(manifest("streaming", {"a": 10.0}), 105.0, floor_result({"a": 0.0}, {"a": 0.0}))
    ratios = report["prefgen_over_floor"]
    assert ratios["wall_with_start"] is None and ratios["wall_without_start"] is None
    assert ratios["engine_start_over_alone"] is None and report["floor"]["roles"]["generate:a"]["tokens_per_s"] is None


def test_the_floor_engines_steps_are_logged_through_its_llm_engine():
    from types import SimpleNamespace

    from benchmarks.floor import log_steps

    widths = iter([(0, 0), (5, 2), (3, 0)])  # the first: log_steps asking whether the scheduler is here
    scheduler = SimpleNamespace(get_request_counts=lambda: next(widths, (0, 0)))
    llm_engine = SimpleNamespace(step=lambda: ["out"], engine_core=SimpleNamespace(engine_core=SimpleNamespace(
        scheduler=scheduler)))
    engine = SimpleNamespace(llm=SimpleNamespace(llm_engine=llm_engine))
    log = log_steps(engine)
    assert [llm_engine.step(), llm_engine.step()] == [["out"], ["out"]]
    assert log.steps == 2 and log.max_running == 5 and log.max_waiting == 2
    assert log_steps(SimpleNamespace(llm=SimpleNamespace(llm_engine=SimpleNamespace(engine_core=object())))) is None
