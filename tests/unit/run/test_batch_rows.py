"""How many rows a stage's batches hold: its `batch_size`, cut so that a small input still fills
the batches in flight (no Ray: the plan of a config)."""

from prefgen.config import parse_config
from prefgen.roles.plan import plan_stages
from prefgen.run.datasets import batch_rows

MODELS = {
    "m": {"source": "embedded://SmolLM2-135M-Instruct", "engine": {"batch_size": 16, "batches_in_flight": 4}},
    "api": {"kind": "endpoint", "base_url": "http://127.0.0.1:9/v1", "model": "x", "batch_size": 16},
}


def stage(model: str):
    cfg = parse_config({"models": MODELS, "generators": [{"name": "g", "model": model, "num_completions": 2}],
                        "evolution": {"enabled": False}, "judge": {"model": "m"}})
    return next(s for s in plan_stages(cfg) if s.model_name == model)


def test_a_small_input_is_cut_into_as_many_batches_as_fly_at_once():
    s = stage("m")
    assert [batch_rows(s, rows) for rows in (1, 3, 16, 48, 64, 200)] == [1, 1, 4, 12, 16, 16]


def test_an_endpoints_batches_keep_their_size():
    assert batch_rows(stage("api"), 3) == 16
