"""The two tiers, by folder: `tests/unit/` starts no Ray and no engine (under two minutes in all),
`tests/integration/` runs real Ray and real vLLM (CPU build) on the small embedded model.

Every test under `tests/integration/` is marked `integration` here, so the unit tier is simply
`pytest -m "not integration"`, and a test cannot be put in a tier without its marker.
"""

from pathlib import Path

import pytest

INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if INTEGRATION in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
