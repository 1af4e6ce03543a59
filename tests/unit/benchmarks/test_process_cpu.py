"""The throughput benchmark's CPU accounting: which kind a process's CPU counts under, the tail
after the engine's last busy interval, and the summary's shares; no processes sampled."""

from benchmarks.process_cpu import last_busy_s, process_kind, summary


def test_processes_are_told_apart_by_name_and_title():
    assert process_kind("python", "python -m prefgen.cli run", True, False) == "driver"
    assert process_kind("ray::MapWorker", "ray::MapWorker(MapBatches(ModelStage)).submit", False, False) == "engine"
    assert process_kind("VLLM::EngineCor", "VLLM::EngineCore", False, False) == "engine"
    assert process_kind("python", "python -c spawn", False, True) == "engine"  # anything the engine actor started
    assert process_kind("gcs_server", "/x/ray/core/src/ray/gcs/gcs_server --a", False, False) == "gcs_server"
    assert process_kind("raylet", "/x/ray/core/src/ray/raylet/raylet --b", False, False) == "raylet"
    assert process_kind("ray::IDLE", "ray::IDLE", False, False) == "ray_worker"
    assert process_kind("python", "python -u /x/ray/dashboard/agent.py", False, False) == "ray_other"


def test_the_tail_starts_at_the_engines_last_busy_interval():
    timeline = [(1.0, 0.0), (2.0, 0.9), (3.0, 1.8), (4.0, 0.1), (5.0, 0.0)]
    assert last_busy_s(timeline, 1.0) == 3.0
    assert last_busy_s([(1.0, 0.1)], 1.0) is None
    s = summary({"engine": 2.7, "raylet": 0.3}, {"engine": {0}, "raylet": {0}}, timeline, 10.0, 15.0, 2, 1.0, [2.0, 4.0])
    assert s["last_engine_busy_to_exit_s"] == 7.0 and s["engine_last_busy_s"] == 3.0
    assert s["cpu_s_total"] == 3.0 and s["share_of_run_cpu"] == {"engine": 0.9, "raylet": 0.1}
    assert s["share_of_machine"]["engine"] == 0.135 and s["machine_busy_share"] == 0.75
    assert s["machine_busy_outside_run_s"] == 12.0 and s["load_average_1m"] == {"min": 2.0, "max": 4.0, "mean": 3.0}
    assert s["nice"] == {"engine": [0], "raylet": [0]}
