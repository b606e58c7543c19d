"""The path walk on an in-memory machine (tests/trace/fakes.py): every hop, hook and
cause, without root."""

from fastpath.trace import iptables, path
from fastpath.trace.path import MissingRoute

from .fakes import cluster


def walk(m, src, dst, **kw):
    return path.walk(m, src, dst, port=kw.pop("port", 80), **kw)


def test_cross_node_path_hop_by_hop():
    m, ep = cluster()
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.ok, tr.summary()
    assert [(h.netns, h.role, h.ingress, h.egress) for h in tr.hops] == [
        ("pa", "source", None, "eth0"), ("n1", "router", "v-pa", "ul0"),
        ("ul", "bridge", "port-n1", "port-n2"), ("n2", "router", "ul0", "v-pb"),
        ("pb", "destination", "eth0", None)]
    n1 = tr.hops[1]
    assert [s.hook for s in n1.hooks] == ["PREROUTING", "routing", "FORWARD", "POSTROUTING"]
    fwd = n1.hooks[2]
    assert fwd.verdict == "ACCEPT" and "FP-FORWARD rule 1" in fwd.detail
    assert n1.route.gateway == "10.255.0.2" and n1.route.iif == "v-pa"
    assert [s.hook for s in tr.hops[0].hooks] == ["routing", "OUTPUT", "POSTROUTING"]
    assert [s.hook for s in tr.hops[-1].hooks] == ["PREROUTING", "routing", "INPUT"]
    # the reply goes back through n2 (FP-FORWARD rule 1: from a pod) and n1 (rule 2)
    assert tr.reply is not None and tr.reply.ok
    assert tr.reply.hops[1].hooks[2].tables[0].rule.index == 1
    assert tr.reply.hops[3].hooks[2].tables[0].rule.index == 2
    assert ("n1", "10.244.1.2", None, None) in m.lookups  # strict rp_filter's reverse lookup
    d = tr.to_dict()
    assert d["ok"] and d["cause"] is None and d["reply"]["direction"] == "reply"
    assert d["hops"][1]["route"]["answer"] == "10.244.2.2 from 10.244.1.2 via 10.255.0.2 dev ul0 iif v-pa"


def test_same_node_path_stays_on_the_node():
    m, ep = cluster()
    tr = walk(m, ep["pa"], ep["pc"], proto="icmp", port=None)
    assert tr.ok and [h.netns for h in tr.hops] == ["pa", "n1", "pc"]


def test_no_route_names_the_node_and_asks_explainers():
    m, ep = cluster()
    m.routes["n1"] = [r for r in m.routes["n1"] if r.dst != "10.244.2.0/24"]
    seen = []

    def explain(mr: MissingRoute):
        seen.append(mr)
        return "the BGP session to n2 is down"
    tr = walk(m, ep["pa"], ep["pb"], labels={"n1": "node n1"}, nodes={"n1": "n1"},
              explainers=[lambda mr: None, explain])
    assert not tr.ok and tr.cause.kind == path.NO_ROUTE and tr.cause.netns == "n1"
    assert tr.cause.line == ("no route to 10.244.2.2 in node n1 (Network is unreachable): "
                             "the BGP session to n2 is down")
    assert seen == [MissingRoute("n1", "node n1", "10.244.2.2", "n2", "n1")]
    assert tr.reply is None


def test_forward_policy_drop_with_no_accepting_rule():
    m, ep = cluster()
    m.snaps["n2"].ruleset.chain("filter", "FP-FORWARD").rules.pop(1)
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.POLICY_DROP and tr.cause.netns == "n2"
    assert tr.cause.line.startswith("FORWARD policy DROP in n2 (filter table): no rule accepts "
                                    "tcp 10.244.1.2 -> 10.244.2.2:80 (in=ul0 out=v-pb)")
    assert tr.hops[-1].hooks[-1].verdict == "DROP"


def test_reply_dropped_is_the_cause_when_the_request_arrives():
    m, ep = cluster()
    m.snaps["n2"].ruleset.chain("filter", "FP-FORWARD").rules.pop(0)
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.delivered and tr.cause is None and not tr.ok
    assert tr.broken_by.kind == path.POLICY_DROP
    assert tr.summary().startswith("the reply is dropped: FORWARD policy DROP in n2")
    assert tr.to_dict()["cause"]["kind"] == path.POLICY_DROP


def test_a_drop_rule_is_named():
    m, ep = cluster()
    m.snaps["n1"].ruleset = iptables.parse(
        "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -d 10.244.2.0/24 -p tcp "
        "--dport 80 -j DROP\nCOMMIT\n")
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.FILTER_DROP
    assert tr.cause.line.endswith("filter FORWARD rule 1: -A FORWARD -d 10.244.2.0/24 -p tcp "
                                  "--dport 80 -j DROP")
    assert walk(m, ep["pa"], ep["pb"], port=443).ok


def test_pod_side_link_down_on_the_destination():
    m, ep = cluster()
    m.set_down("pb", "eth0")
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.LINK_DOWN and tr.cause.netns == "n2"
    assert tr.cause.line == ("link down: eth0 in pod pb, the other end of v-pb, is down "
                             "(v-pb in n2 has no carrier)")


def test_node_side_link_down_took_the_route_with_it():
    m, ep = cluster()
    m.set_down("n2", "v-pb")
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.LINK_DOWN
    assert tr.cause.line == ("link down: v-pb in n2 is down (n2 has no route to 10.244.2.2 "
                             "without it: Network is unreachable)")


def test_source_link_down():
    m, ep = cluster()
    m.set_down("pa", "eth0")
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.LINK_DOWN and tr.cause.netns == "pa"


def test_bridge_port_down():
    m, ep = cluster()
    m.snaps["ul"].links["port-n2"].admin_up = False
    m.snaps["n2"].links["ul0"].carrier = False
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.LINK_DOWN and tr.cause.netns == "ul"
    assert tr.cause.line == "link down: bridge port port-n2 in ul (toward n2) is down"


def test_bridge_down():
    m, ep = cluster()
    m.snaps["ul"].links["br0"].admin_up = False
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.LINK_DOWN and "bridge br0" in tr.cause.line


def test_strict_reverse_path_filter():
    m, ep = cluster()
    # n2 now routes pa's address back toward pb's veth: asymmetric
    m.route("n2", "10.244.1.2/32", "v-pb")
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.RP_FILTER and tr.cause.netns == "n2"
    assert "rp_filter=1 (max of all=1, ul0=0)" in tr.cause.line
    assert "the route back to 10.244.1.2 leaves via v-pb, not ul0" in tr.cause.line
    # loose mode only wants some route back
    m.snaps["n2"].rp_filter_all = 2
    assert walk(m, ep["pa"], ep["pb"], reply=False).ok


def test_forwarding_off():
    m, ep = cluster()
    m.snaps["n1"].links["v-pa"].forwarding = 0
    m.snaps["n1"].ip_forward = 0
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.FORWARDING_OFF
    assert "net.ipv4.conf.v-pa.forwarding=0" in tr.cause.line


def test_blackhole_route():
    m, ep = cluster()
    m.route("n1", "10.244.2.2/32", "ul0", type="blackhole")
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.NO_ROUTE and "type blackhole" in tr.cause.line


def test_arp_for_the_gateway_needs_an_entry_or_proxy_arp():
    m, ep = cluster()
    del m.snaps["pa"].neighbours[("eth0", "169.254.1.1")]
    tr = walk(m, ep["pa"], ep["pb"], reply=False)
    assert tr.cause.kind == path.NEIGHBOUR and "answers ARP for 169.254.1.1" in tr.cause.line
    m.snaps["n1"].links["v-pa"].proxy_arp = 1
    assert walk(m, ep["pa"], ep["pb"], reply=False).ok


def test_next_hop_nobody_owns_on_the_bridge():
    m, ep = cluster()
    m.routes["n1"] = [r for r in m.routes["n1"] if r.dst != "10.244.2.0/24"]
    m.route("n1", "10.244.2.0/24", "ul0", via="10.255.0.9")
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.NEIGHBOUR and "owns the next hop 10.255.0.9" in tr.cause.line


def test_routing_loop_is_caught():
    m, ep = cluster()
    m.routes["n2"] = [r for r in m.routes["n2"] if r.dst != "10.244.2.2/32"]
    m.route("n2", "10.244.2.0/24", "ul0", via="10.255.0.1")
    # FP-FORWARD drops underlay -> underlay; open it to let the packet loop
    assert walk(m, ep["pa"], ep["pb"]).cause.kind == path.POLICY_DROP
    m.snaps["n1"].ruleset = m.snaps["n2"].ruleset = iptables.Ruleset()
    # back on n1 from the underlay, strict rp_filter drops it (pa is behind v-pa) ...
    assert walk(m, ep["pa"], ep["pb"]).cause.kind == path.RP_FILTER
    m.snaps["n1"].rp_filter_all = 0
    tr = walk(m, ep["pa"], ep["pb"])  # ... and without it, it loops
    assert tr.cause.kind == path.LOOP and "routing loop" in tr.cause.line


def test_nat_is_noted():
    m, ep = cluster()
    m.snaps["n1"].ruleset = iptables.parse(
        "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o ul0 -j MASQUERADE\nCOMMIT\n")
    tr = walk(m, ep["pa"], ep["pb"], reply=False)
    assert tr.ok and any("MASQUERADE" in n and "will not see 10.244.1.2" in n for n in tr.notes)
    m.snaps["n2"].ruleset = iptables.parse(
        "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp --dport 80 -j DNAT "
        "--to-destination 10.244.2.9\nCOMMIT\n")
    tr = walk(m, ep["pa"], ep["pb"], reply=False)
    assert any(n.startswith("n2: PREROUTING nat PREROUTING rule 1") and
               "destination is rewritten" in n for n in tr.notes), tr.notes


def test_destination_outside_the_namespaces():
    m, ep = cluster()
    from fastpath.trace.model import Endpoint
    m.route("n1", "0.0.0.0/0", "ul0", via="10.255.0.2")
    m.route("n2", "0.0.0.0/0", "ul0", via="10.255.0.254")
    m.snaps["n2"].ruleset = iptables.Ruleset()
    tr = walk(m, ep["pa"], Endpoint("192.0.2.1", None, "192.0.2.1"))
    assert tr.cause.kind == path.NEIGHBOUR  # nobody on the bridge owns 10.255.0.254
    from fastpath.trace.model import Link
    m.snaps["n1"].links["ext0"] = Link(20, "ext0", forwarding=1)  # leads outside
    m.route("n1", "192.0.2.0/24", "ext0", via="192.0.2.254")
    tr = walk(m, ep["pa"], Endpoint("192.0.2.1", None, "192.0.2.1"))
    assert tr.cause is None and not tr.delivered and not tr.ok
    assert "leaves the traced namespaces via ext0 in n1" in tr.notes[-1]


def test_forwarding_off_is_named_before_rp_filter_as_the_kernel_checks_it():
    m, ep = cluster()
    m.route("n2", "10.244.1.2/32", "v-pb")          # rp_filter would drop it too
    m.snaps["n2"].links["ul0"].forwarding = 0
    tr = walk(m, ep["pa"], ep["pb"])
    assert tr.cause.kind == path.FORWARDING_OFF and tr.cause.netns == "n2"
    assert m.route_get("n2", "10.244.2.2", src="10.244.1.2", iif="ul0").errno == 113


def test_nothing_listening_is_refused_not_delivered():
    m, ep = cluster()
    m.listeners = {("pb", "0.0.0.0", 80)}
    assert walk(m, ep["pa"], ep["pb"], port=80, listener=True).ok
    assert walk(m, ep["pa"], ep["pb"], port=9).ok   # not asked (no --port): the path is whole
    tr = walk(m, ep["pa"], ep["pb"], port=9, listener=True)
    assert tr.delivered and not tr.ok and tr.broken_by.kind == path.NO_LISTENER
    assert "nothing there listens on tcp/9: the connection is refused" in tr.summary()
    assert not tr.summary().startswith("delivered")
    assert tr.reply is None      # no SYN-ACK to follow: the answer is a RST
    # ICMP has no ports, and a listener on the pod's own address counts as well as the wildcard
    assert walk(m, ep["pa"], ep["pb"], proto="icmp", port=None, listener=True).ok
    m.listeners = {("pb", ep["pb"].ip, 9)}
    assert walk(m, ep["pa"], ep["pb"], port=9, listener=True).ok
