"""attach / detach / inspect on real namespaces: by name, path and fd; rollback at every
step; opening a missing netns never creates it."""

from __future__ import annotations

import os

import pytest

from fastpath import faults, naming
from fastpath.errors import AlreadyExists, NotFound
from fastpath.kernel import netns
from fastpath.podnet import attach, netfilter
from fastpath.podnet.rtnl import Rtnl

pytestmark = pytest.mark.root


@pytest.fixture
def host_and_pods():
    names = [naming.name("bench-host"), naming.name("bench-p1"), naming.name("bench-p2")]
    for n in names:
        netns.create(n)
    yield names
    for n in names:
        netns.delete(n)


def _links(ns):
    with Rtnl(ns) as r:
        return sorted(m.get("IFLA_IFNAME") for m in r.call("dump", "link", "dump"))


def test_attach_inspect_detach_by_name_path_and_fd(host_and_pods):
    host, p1, p2 = host_and_pods
    netfilter.ensure_forward(host)
    with Rtnl(host) as h:
        a = attach.attach(h, p1, host_ifname="fpt1", address="10.50.0.2/32")
        assert a.address == "10.50.0.2/32" and a.gateway == "169.254.1.1"
        assert a.host_mac == "ee:ee:ee:ee:ee:ee"
        fd = os.open(f"/run/netns/{p2}", os.O_RDONLY)
        try:
            attach.attach(h, fd, host_ifname="fpt2", address="10.50.0.3/24", mtu=1400)
            os.fstat(fd)  # the caller's fd stays open: attach dups it
        finally:
            os.close(fd)
        assert attach.inspect(h, p1, host_ifname="fpt1", address="10.50.0.2/32") == []
        assert attach.inspect(host, f"/run/netns/{p2}", host_ifname="fpt2", address="10.50.0.3/24",
                              mtu=1400) == []
        # break things: inspect names each
        h.call("down", "link", "set", index=h.index("fpt1"), state="down")
        with Rtnl(p1) as p:
            p.call("del", "route", "del", dst="0.0.0.0/0", gateway="169.254.1.1")
        probs = attach.inspect(h, p1, host_ifname="fpt1", address="10.50.0.2/32")
        assert "host interface fpt1 is down" in probs
        assert any("default route via 169.254.1.1 is missing" in x for x in probs)
        netfilter.remove_forward(host)
        assert any("FORWARD" in x for x in attach.inspect(h, p1, host_ifname="fpt1", address="10.50.0.2/32"))
        assert attach.detach(h, host_ifname="fpt1") is True
        assert attach.detach(h, host_ifname="fpt1") is False
        probs = attach.inspect(h, p1, host_ifname="fpt1", address="10.50.0.2/32", check_forward=False)
        assert any("fpt1 is missing" in x for x in probs) and any("eth0 is missing" in x for x in probs)
        with pytest.raises(AlreadyExists):
            attach.attach(h, p2, host_ifname="fpt2", address="10.50.0.9/32", ifname="eth1")
    assert "eth1" not in _links(p2)


@pytest.mark.parametrize("step", attach.STEPS)
def test_rollback_after_failure_at_each_step(host_and_pods, monkeypatch, step):
    host, p1, _ = host_and_pods
    before_host, before_pod = _links(host), _links(p1)
    monkeypatch.setenv(faults.ENV["podnet"], step)
    with pytest.raises(faults.InjectedFailure):
        attach.attach(host, p1, host_ifname="fpt9", address="10.50.0.9/32")
    assert _links(host) == before_host and _links(p1) == before_pod
    with Rtnl(host) as h:
        assert not [m for m in h.call("r", "route", "dump", family=2) if m.get("RTA_DST") == "10.50.0.9"]


def test_missing_netns_is_not_found_and_not_created(host_and_pods):
    ghost = naming.name("bench-ghost")
    with pytest.raises(NotFound, match=ghost):
        attach.attach(host_and_pods[0], ghost, host_ifname="fpt3", address="10.50.0.4")
    with pytest.raises(NotFound):
        attach.detach(ghost, host_ifname="fpt3")
    assert not os.path.exists(f"/run/netns/{ghost}")
    assert "fpt3" not in _links(host_and_pods[0])
