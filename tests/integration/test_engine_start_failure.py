"""An engine killed while it starts (as by the OOM killer) ends the run after a bounded number
of failed starts (it used to restart forever), with an error naming the stage, the finished rows committed and the folder
resumable. Real Ray (a local one); the engine is a stand-in whose start kills its process, so
the error path runs in seconds instead of loading a model that would not fit."""

import json
import subprocess
import sys

import pytest

from prefgen.output.commits import CommitLog
from prefgen.output.runstate import RunState
from prefgen.output.storage import storage

pytestmark = pytest.mark.integration

DRIVER = """
import json, os, sys
from functools import partial
import prefgen.run.datasets
import prefgen.run.pipeline
from prefgen.config import parse_config
from prefgen.engines.starts import EngineStartFailed
from prefgen.output.storage import storage

def dying_engine(model, device, *args):
    return partial(os._exit, 1)  # the process dies while the engine starts, as an OOM kill does

prefgen.run.datasets.engine_factory = dying_engine
cfg = parse_config({"input": {"path": sys.argv[1]}, "output": {"path": sys.argv[2]},
                    "ray": {"num_cpus": 2, "max_failed_starts": 1}})
try:
    prefgen.run.pipeline.run(cfg)
except EngineStartFailed as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(3)
"""


def test_an_engine_killed_while_starting_stops_the_run_with_a_clear_error(tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    data = tmp_path / "in.jsonl"
    data.write_text('{"instruction": "What is rain?"}\n{"instruction": "Why do we sleep?"}\n{"instruction": ""}\n')
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "driver.py", str(data), str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    error = json.loads(done.stdout.strip().splitlines()[-1])["error"]
    assert "engine stage SmolLM2-135M-Instruct (generate:" in error
    assert "could not start: its actor died 1 time(s) in a row while loading the model" in error
    assert "ray.max_failed_starts=1 reached" in error and "max_model_len" in error
    assert "1 finished rows are committed; rerun the same command to resume" in error
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "EngineStartFailed" in manifest["attempts"][-1]["error"]
    committed = CommitLog.read(storage(str(out))).commits()
    assert [c["rejects"] for c in committed] == [{"empty_instruction": 1}]  # the bad input row, done before Ray
    resumed = RunState(storage(str(out)))  # the folder resumes: same config and input, its driver gone
    resumed.open(manifest["config"], manifest["config_digest"], manifest["input_digest"], False, log=lambda m: None)
    assert len(resumed.done_ids) == 1
