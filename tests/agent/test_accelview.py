"""The agent's share of accel's local set: reconciled, never only added to. Pure."""

import ipaddress

from fastpath.agent import accelview

N = ipaddress.ip_network


def test_the_set_is_reconciled_and_other_writers_are_left_alone():
    current = [N("10.244.1.0/24"), N("10.244.2.0/24"), N("10.255.0.1/32"), N("10.255.0.2/32"),
               N("10.244.1.2/32"), N("10.244.1.9/32"),     # pod .9 was deleted while the agent was down
               N("10.244.2.7/32"), N("fd00::/64")]
    want = accelview.wanted("10.255.0.1", ["10.244.1.2", "10.244.1.3"])
    add, remove = accelview.plan(current, "10.255.0.1", "10.244.1.0/24", want)
    assert add == [N("10.244.1.3/32")]
    # its own stale /32 goes; the /24s, the other node's address and pods are not its own
    assert remove == [N("10.244.1.9/32")]


def test_nothing_to_do_when_the_set_is_right():
    want = accelview.wanted("10.255.0.1", ["10.244.1.2"])
    assert accelview.plan(sorted(want), "10.255.0.1", "10.244.1.0/24", want) == ([], [])
