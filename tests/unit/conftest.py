"""The unit tier's rule, enforced: no test here starts Ray or one of prefgen's vLLM engines.

A test that needs either belongs in `tests/integration/`; here it fails at once with that
message instead of slowing the tier down. (The engines are refused where prefgen builds them,
so that the tier never pays for importing vLLM just to guard against it.)
"""

import pytest


def _refuse(what):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a unit test started {what}: move it to tests/integration/")

    return refuse


@pytest.fixture(autouse=True)
def no_ray_and_no_engine(monkeypatch):
    import ray

    import prefgen.engines.engine
    import prefgen.roles.judge.reward

    monkeypatch.setattr(ray, "init", _refuse("Ray (ray.init)"))
    for module, name in ((prefgen.engines.engine, "VllmEngine"), (prefgen.engines.engine, "AsyncVllmEngine"),
                         (prefgen.roles.judge.reward, "RewardEngine")):
        monkeypatch.setattr(getattr(module, name), "__init__", _refuse(f"a vLLM engine ({name})"))
