"""Fixtures shared by the integration tests.

`local_ray`: one Ray in the test process for the whole session, for the tests that only need a
Ray to run Ray Data or place actors (no prefgen run of their own): started once, with logical
GPUs and an accelerator type so placement can be checked without a GPU. A test that runs
`prefgen run` gets the Ray that run starts itself, as a user's run does; the kill-and-resume
tests need that, since a resume stops only a Ray its killed driver started.
"""

import pytest

from prefgen.pipeline import keep_local_workers_on_this_interpreter


@pytest.fixture(scope="session")
def local_ray():
    import ray

    keep_local_workers_on_this_interpreter()
    ray.init(address="local", num_cpus=4, num_gpus=2, resources={"accelerator_type:A10G": 1},
             include_dashboard=False, object_store_memory=256 << 20)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
