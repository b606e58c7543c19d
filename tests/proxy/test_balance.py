from fastpath.proxy.balance import Balancer
from fastpath.proxy.config import HealthCheck, Service


def svc(balance="roundrobin", n=3, check=None):
    return Service("s", ("127.0.0.1", 1), tuple(("10.0.0.%d" % i, 80) for i in range(1, n + 1)),
                   balance=balance, check=check)


def test_round_robin_skips_down_backends():
    b = Balancer(svc())
    assert [b.pick().addr[0] for _ in range(4)] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1"]
    b.backends[1].up = False
    assert [b.pick().addr[0] for _ in range(3)] == ["10.0.0.3", "10.0.0.1", "10.0.0.3"]
    for x in b.backends:
        x.up = False
    assert b.pick() is None


def test_leastconn_prefers_fewest_and_rotates_ties():
    b = Balancer(svc("leastconn"))
    b.backends[0].active = 5
    b.backends[1].active = 1
    b.backends[2].active = 1
    first, second = b.pick(), b.pick()
    assert {first.addr[0], second.addr[0]} == {"10.0.0.2", "10.0.0.3"}
    b.backends[1].up = b.backends[2].up = False
    assert b.pick().addr[0] == "10.0.0.1"


def test_health_fall_and_rise():
    b = Balancer(svc(check=HealthCheck(fall=2, rise=2)))
    x = b.backends[0]
    assert b.check_result(x, False) is None and x.up
    assert b.check_result(x, False) == "down" and not x.up
    assert b.check_result(x, True) is None and not x.up
    assert b.check_result(x, True) == "up" and x.up
