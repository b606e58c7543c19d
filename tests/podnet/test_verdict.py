"""The one health verdict of `fastpath status`: every table row that is missing, down or
stale becomes a named problem. Pure."""

from fastpath.podnet.health import verdict

WIRED = {"ok": True, "nodes": {"node1": [], "node2": []}, "pods": {"node1-pod1": []}}


def _node(**kw) -> dict:
    base = {"expected": ["10.244.2.0/24 via 10.255.0.2"], "missing": [], "agent_pid": 10,
            "ready": True, "problems": [], "bird_pid": 11, "reported": 100.0,
            "sessions": [{"peer": "node2", "state": "Established", "established": True}]}
    return {**base, **kw}


def test_all_well_is_ok():
    assert verdict(WIRED, {"node1": _node(), "node2": _node()}) == {"ok": True, "problems": []}


def test_each_fault_is_one_named_problem():
    routes = {
        "node1": _node(missing=["10.244.2.0/24 via 10.255.0.2"]),
        "node2": _node(agent_pid=None, ready=False, problems=["stale"], bird_pid=None,
                       sessions=[{"peer": "node3", "state": "missing", "established": False},
                                 {"peer": "tor", "state": "Active", "established": False}]),
        "node3": _node(ready=False, problems=["BGP sessions not established: fp_ext_tor"]),
    }
    store = {"ok": False, "members": [{"endpoint": "http://10.255.0.254:2379", "ok": True, "error": None},
                                      {"endpoint": "http://10.255.0.253:2379", "ok": False,
                                       "error": "connection refused"}]}
    v = verdict({**WIRED, "pods": {"node1-pod1": ["eth0 is down"]}}, routes, store, now=130.0)
    assert not v["ok"]
    assert v["problems"] == [
        "pod node1-pod1: eth0 is down",
        "node node1: route 10.244.2.0/24 via 10.255.0.2 is missing",
        "node node2: its agent is not running (last report 30s ago)",
        "node node2: BIRD is not running",
        "node node2: BGP session with node3 is missing",
        "node node2: BGP session with tor is Active",
        "node node3: its agent is not ready: BGP sessions not established: fp_ext_tor",
        "datastore 10.255.0.253:2379: connection refused",
    ]


def test_backends_without_agents_are_judged_by_what_they_report():
    # the static and bgp backends have no agents: no agent rows, no agent problems
    assert verdict(WIRED, {"node1": {"expected": [], "missing": [], "sessions": []}})["ok"]
