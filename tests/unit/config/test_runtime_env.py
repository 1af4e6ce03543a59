"""The job's runtime environment files, without a cluster: valid for Ray, installing nothing
locally, pinning vLLM like the gpu extra on a cluster, and an upload that stays small."""

import zipfile

import pytest
import yaml

from support.paths import REPO

RUNTIME_ENV = REPO / "jobs" / "runtime_env.yaml"
RUNTIME_ENV_CLUSTER = REPO / "jobs" / "runtime_env.cluster.yaml"
JOB_INPUT = "prefgen/data/sample_preferences.jsonl"  # the job test reads it from the upload



@pytest.mark.parametrize("path", [RUNTIME_ENV, RUNTIME_ENV_CLUSTER], ids=lambda p: p.name)
def test_runtime_env_files_are_valid_for_ray(path):
    from ray.runtime_env import RuntimeEnv

    spec = yaml.safe_load(path.read_text())
    # RuntimeEnv accepts unknown keys as plugins, so a typo ("exclude") would pass silently.
    assert set(spec) <= set(RuntimeEnv.known_fields), set(spec) - set(RuntimeEnv.known_fields)
    RuntimeEnv(**spec)  # types and mutually exclusive fields (pip / uv / conda)
    assert spec["working_dir"] == "."
    assert {".venv/", ".git/"} <= set(spec["excludes"])


def test_local_runtime_env_installs_nothing():
    spec = yaml.safe_load(RUNTIME_ENV.read_text())
    assert not {"pip", "uv", "conda", "container", "image_uri", "py_executable"} & set(spec)


def test_cluster_runtime_env_pins_vllm_like_the_gpu_extra():
    import tomllib

    spec = yaml.safe_load(RUNTIME_ENV_CLUSTER.read_text())
    gpu_extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert set(gpu_extra) <= set(spec["uv"]["packages"])


def test_working_dir_upload_stays_small(tmp_path):
    """Zip the repository the way the job client does, with the file's excludes and without
    .gitignore: the upload holds the code and no virtualenv or git objects."""
    from ray._private.runtime_env.packaging import _zip_files

    spec = yaml.safe_load(RUNTIME_ENV.read_text())
    package = tmp_path / "pkg.zip"
    _zip_files(str(REPO), spec["excludes"], str(package), include_gitignore=False)
    names = zipfile.ZipFile(package).namelist()
    assert "jobs/run_pipeline.py" in names and "prefgen/cli.py" in names and JOB_INPUT in names
    assert not [n for n in names if n.startswith((".venv/", ".git/")) or "__pycache__" in n]
    assert package.stat().st_size < 20 * 1024**2, package.stat().st_size
