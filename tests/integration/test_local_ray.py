"""A local Ray that prefgen starts keeps its workers on the driver's interpreter, even when the
driver runs under `uv run`.

Ray's uv hook looks for an ancestor process whose command line starts with `uv run`; under it,
Ray would start every worker through `uv run` in a copy of the working directory, building a
second virtualenv there (and re-syncing it while other workers import vLLM). The test gives the
driver such an ancestor whatever launched pytest: a Python process whose argv reads `uv run`.
"""

import json
import os
import subprocess
import sys

DRIVER = """
import json, sys
import ray
from prefgen.config import parse_config
from prefgen.run.ray_start import init_ray

_, session_dir = init_ray(parse_config({"ray": {"num_cpus": 1}}), [])

@ray.remote
def where():
    return sys.executable

worker_python = ray.get(where.remote(), timeout=60)
print(json.dumps({"worker_python": worker_python, "runtime_env": ray.get_runtime_context().runtime_env,
                  "session_dir": session_dir}))
ray.shutdown()
"""

# Runs as a script named `run` under argv[0] == "uv": the ancestor Ray's hook looks for.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run([sys.argv[1], 'driver.py']).returncode)"


def test_local_workers_run_on_the_driver_interpreter_under_uv_run(tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "run").write_text(LAUNCHER)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_UV_RUN_RUNTIME_ENV")}
    done = subprocess.run(
        ["uv", "run", sys.executable], executable=sys.executable, cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["session_dir"], "prefgen did not start the local Ray itself"
    assert os.path.realpath(seen["worker_python"]) == os.path.realpath(sys.executable)
    assert "py_executable" not in seen["runtime_env"]
    assert "working_dir" not in seen["runtime_env"]
