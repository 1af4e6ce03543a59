"""The CI-time benchmark's reading of pytest's output and its emulated CPU's environment; no pytest run."""

from benchmarks.ci_time import SLOW_CPU, no_avx512_env, parse

OUTPUT = """\
........F.                                                              [100%]
============================= slowest durations ==============================
299.24s call     tests/integration/test_resume.py::test_a_phased_run
0.50s teardown tests/unit/test_a.py::test_x
272.17s setup    tests/integration/test_rejudge_job.py::test_the_job
12.00s call     tests/unit/test_a.py::test_y
FAILED tests/unit/engines/test_placement.py::test_actor_options_per_device - AssertionError
1 failed, 814 passed, 2 errors, 3 warnings in 1727.45s (0:28:47)
"""


def test_the_slowest_tests_come_first_with_their_phase_and_the_outcome_is_counted():
    result = parse(OUTPUT, slowest=2)
    assert [(d["seconds"], d["phase"]) for d in result["slowest"]] == [(299.24, "call"), (272.17, "setup")]
    assert result["slowest"][1]["test"] == "tests/integration/test_rejudge_job.py::test_the_job"
    assert result["outcome"] == {"failed": 1, "passed": 814, "error": 2}
    assert result["summary_line"].startswith("1 failed, 814 passed") and result["total_listed_s"] == 583.9


def test_the_emulated_cpu_comes_first_on_the_path_and_holds_the_kernels_to_avx2():
    env = no_avx512_env({"PYTHONPATH": "/x", "HOME": "/h"})
    assert env["PYTHONPATH"].split(":") == [str(SLOW_CPU), "/x"] and env["HOME"] == "/h"
    assert (env["ATEN_CPU_CAPABILITY"], env["ONEDNN_MAX_CPU_ISA"]) == ("avx2", "AVX2")
    assert (SLOW_CPU / "sitecustomize.py").is_file()
    assert no_avx512_env({})["PYTHONPATH"] == str(SLOW_CPU)
