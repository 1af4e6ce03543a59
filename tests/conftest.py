"""The two tiers, by folder: `tests/unit/` starts no Ray and no engine (about a minute in all),
`tests/integration/` runs real Ray and real vLLM (CPU build) on the small embedded model.

Every test under `tests/integration/` is marked `integration` here, so the unit tier is simply
`pytest -m "not integration"`, and a test cannot be put in a tier without its marker.

Fixtures for every tier: `s3_server` and `s3`, an S3 API server on loopback (`support/s3_server.py`);
`gcs_server` and `gcs`, a GCS API server on loopback (`support/gcs_server.py`).
"""

from pathlib import Path

import pytest
from support.gcs_server import gcs, gcs_server  # noqa: F401 - fixtures
from support.s3_server import s3, s3_env, s3_server  # noqa: F401 - fixtures

INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if INTEGRATION in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
