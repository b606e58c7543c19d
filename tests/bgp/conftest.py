"""A bare BGP underlay per test (fastpath.bgp.testbed) and its guaranteed teardown."""

from __future__ import annotations

import pytest


class Bed:
    def __init__(self):
        from fastpath.bgp import testbed
        self.tb = testbed
        self.nodes = []
        testbed.create_underlay()

    def add(self, i):
        n = self.tb.node_def(i)
        self.tb.add_node(n)
        self.nodes.append(n)
        return n

    def close(self):
        from fastpath.bgp import sweep
        sweep.sweep()
        self.tb.destroy(self.nodes)


@pytest.fixture
def bed():
    b = Bed()
    try:
        yield b
    finally:
        b.close()
