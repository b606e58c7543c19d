"""podnet fixtures: a cluster made with `fastpath up` and always removed with `fastpath down`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_fastpath


@pytest.fixture
def down():
    """Runs `fastpath down` after the test, whatever happened."""
    yield
    run_fastpath("down", check=False)


@pytest.fixture
def cluster(down):
    """A 2-node, 2-pods-per-node cluster; yields its status as JSON."""
    run_fastpath("up")
    return json.loads(run_fastpath("status", "--json").stdout)
