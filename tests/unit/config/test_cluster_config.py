"""The cluster definitions: cluster.yaml against Ray's own cluster-config schema, and the
KubeRay RayJob manifest's structure. No cloud and no Kubernetes: these check what `ray up`
and the operator would read before they start anything."""

from __future__ import annotations

import copy
import json
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from support.paths import REPO

CLUSTER_YAML = REPO / "cluster.yaml"
RAYJOB_YAML = REPO / "kuberay" / "rayjob.yaml"
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
GPU_EXTRA = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _validate(config: dict) -> None:
    """What `ray up` does to the file before it talks to the cloud: the schema on the file as
    written, then defaults filled in (aws/defaults.yaml) and validated again."""
    jsonschema.validate(config, SCHEMA)
    validate_config(prepare_config(copy.deepcopy(config)))


def _worker_types(config: dict) -> dict:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


# --- cluster.yaml ------------------------------------------------------------------------


def test_cluster_yaml_passes_rays_schema():
    _validate(_cluster())


@pytest.mark.parametrize(
    "mutate, message",
    [
        pytest.param(lambda c: c.update(max_worker=10), "'max_worker' was unexpected", id="unknown-top-level-key"),
        pytest.param(lambda c: c.update(idle_timeout_minutes="ten"), "'ten' is not of type 'number'", id="wrong-type"),
        pytest.param(lambda c: c["available_node_types"]["gpu_worker"].update(min_worker=0),
                     "'min_worker' was unexpected", id="unknown-node-type-key"),
        pytest.param(lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5),
                     "0.5 is not of type 'integer'", id="fractional-gpu"),
        pytest.param(lambda c: c["docker"].update(imag="rayproject/ray"), "'imag' was unexpected", id="unknown-docker-key"),
        pytest.param(lambda c: c["available_node_types"]["head"].pop("node_config"),
                     "'node_config' is a required property", id="missing-node-config"),
        pytest.param(lambda c: c.update(head_node_type="nope"), "must be one of `available_node_types`",
                     id="head-type-not-defined"),
    ],
)  # fmt: skip
def test_rays_schema_rejects_a_broken_copy(mutate, message):
    config = _cluster()
    mutate(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as err:
        _validate(config)
    assert message in str(err.value)


def test_head_holds_no_logical_cpus():
    config = _cluster()
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in head_start and "--head" in head_start


def test_gpu_workers_scale_from_zero():
    config = _cluster()
    gpu_types = {k: v for k, v in _worker_types(config).items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no worker type offers GPUs"
    for name, node in gpu_types.items():
        assert node.get("min_workers", 0) == 0, name
        assert node["max_workers"] >= 1, name
        assert node["node_config"]["InstanceType"].startswith(("g", "p")), name  # a GPU instance family
    assert config["idle_timeout_minutes"] > 0
    assert sum(n.get("min_workers", 0) for n in _worker_types(config).values()) == 0


def test_versions_match_what_prefgen_is_tested_with():
    config = _cluster()
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    packages = [arg for cmd in config["setup_commands"] for arg in shlex.split(cmd)]
    for pin in GPU_EXTRA:  # vllm==0.32.0, as in pyproject's gpu extra
        assert pin in packages
    assert f"ray[data,default]=={ray.__version__}" in packages


def test_token_auth_is_on_every_node():
    config = _cluster()
    assert "--env=RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "--env=RAY_process_group_cleanup_enabled=1" in config["docker"]["run_options"]  # no leaked engines
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}


# --- kuberay/rayjob.yaml -----------------------------------------------------------------


@pytest.fixture(scope="module")
def rayjob() -> dict:
    docs = [d for d in yaml.safe_load_all(RAYJOB_YAML.read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def test_rayjob_is_a_ray_io_v1_rayjob(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["name"]
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}


def test_rayjob_entrypoint_runs_the_job_script_on_a_valid_config(rayjob):
    from prefgen.config import load_config

    args = shlex.split(rayjob["spec"]["entrypoint"])
    assert args[:3] == ["python", "jobs/run_pipeline.py", "run"]
    assert (REPO / args[1]).is_file()
    config = args[3]
    assert (REPO / config).is_file()
    load_config(REPO / config)  # the config the cluster runs validates (hub ids, no network)
    output = args[args.index("--output") + 1]
    assert output.startswith("s3://")  # shared storage: the write stage runs on any node


def test_rayjob_runtime_env_is_valid_for_ray(rayjob):
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert set(env) <= set(RuntimeEnv.known_fields), set(env) - set(RuntimeEnv.known_fields)
    RuntimeEnv(**env)
    assert env["working_dir"].endswith(".zip")  # no local dir in a K8s submitter: a zip URI
    assert set(GPU_EXTRA) <= set(env["uv"]["packages"])


def test_rayjob_autoscales_gpu_workers_from_zero(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0

    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    groups = cluster["workerGroupSpecs"]
    for group in [head] + groups:
        # KubeRay's rayStartParams is a map of strings; an int here is rejected by the CRD.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        for c in group["template"]["spec"]["containers"]:
            assert c["image"].startswith(f"rayproject/ray:{ray.__version__}-")

    gpu = [g for g in groups if any("nvidia.com/gpu" in c["resources"].get("limits", {})
                                    for c in g["template"]["spec"]["containers"])]  # fmt: skip
    assert gpu, "no worker group requests nvidia.com/gpu"
    for g in gpu:
        assert g["minReplicas"] == 0 and g.get("replicas", 0) == 0
        assert g["maxReplicas"] >= 1
        (container,) = g["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert len({g["groupName"] for g in groups}) == len(groups)


def test_manifests_name_the_same_ray_version_everywhere():
    # A client, head and workers on different Ray versions refuse to talk to each other.
    texts = CLUSTER_YAML.read_text() + RAYJOB_YAML.read_text()
    for image in {w for w in texts.split() if w.startswith("rayproject/ray:")}:
        assert image.startswith(f"rayproject/ray:{ray.__version__}-"), image


def test_accelerator_types_the_mission_asks_for_are_offered(rayjob):
    """A stage pinned to a GPU model can only scale up if some worker type advertises that model
    before its nodes exist: in cluster.yaml's resources and in the RayJob's rayStartParams."""
    from prefgen.config import load_config
    from prefgen.roles.plan import plan_stages

    mission = load_config(REPO / "configs" / "mission.yaml")
    wanted = {s.model.engine.accelerator_type for s in plan_stages(mission)}
    wanted.discard(None)
    assert wanted, "configs/mission.yaml pins no accelerator type"
    offered_by_cluster = {k for node in _worker_types(_cluster()).values() for k in node["resources"]}
    offered_by_rayjob = {
        k
        for group in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        if "resources" in group["rayStartParams"]
        for k in json.loads(json.loads(group["rayStartParams"]["resources"]))  # a JSON string inside a string
    }
    for accelerator in wanted:
        resource = f"accelerator_type:{accelerator}"
        assert resource in offered_by_cluster and resource in offered_by_rayjob
        assert mission.ray.expected_resources.get(resource, 0) > 0
