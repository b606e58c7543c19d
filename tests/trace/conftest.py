import pytest

from .topology import Topology


@pytest.fixture
def topo(instance):
    """A two-node routing-mode topology of this test's instance, removed afterwards."""
    t = Topology().build()
    try:
        yield t
    finally:
        t.destroy()
