"""Path assembly: follow one packet from namespace to namespace as the kernel would, asking
a `Probe` for each route lookup and snapshot, and stop at the first thing that drops it.
Pure: all I/O is behind the Probe.

Order of the kernel's steps, which is the order of the checks here (net/ipv4/ip_input.c,
ip_forward.c, route.c):
- sending netns: output route lookup -> OUTPUT hooks -> POSTROUTING -> out the device;
- receiving netns: the device must be up -> PREROUTING -> input route lookup, which
  refuses forwarding when conf.IFACE.forwarding is 0 (EHOSTUNREACH) and applies
  reverse-path filtering (EXDEV) -> INPUT (local) or FORWARD, then POSTROUTING -> out;
- a veth hands the packet to its peer, which has carrier only while both ends are up; a
  bridge port forwards to the port that leads to the next hop's owner, and needs the
  bridge and both ports up.
- taking a link down (`ip link set X down`) removes every route through it, so "no route"
  next to a down link is reported as the link being down, the cause a user can act on.

The walk names one cause per broken path; every step's detail is in the hops.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fastpath.trace import iptables, rpfilter
from fastpath.trace.model import Endpoint, Link, NetnsSnapshot, Probe, RouteAnswer

MAX_HOPS = 16

# Cause kinds, stable strings for --json consumers.
NO_ROUTE = "no-route"
LINK_DOWN = "link-down"
FILTER_DROP = "filter-drop"          # a rule drops it
POLICY_DROP = "policy-drop"          # a chain policy drops it, no rule accepted
RP_FILTER = "rp-filter"
FORWARDING_OFF = "forwarding-off"
NEIGHBOUR = "neighbour"
LOOP = "loop"
MARTIAN = "martian"
NO_LISTENER = "no-listener"          # delivered, but the destination answers with a RST

# The input route lookup refuses a source that fails validation (rp_filter among other
# checks) with EINVAL on current kernels (the martian-source path of ip_route_input_slow)
# and EXDEV on older ones; which check failed we decide ourselves (rpfilter.decide).
_MARTIAN_ERRNOS = (_errno.EINVAL, _errno.EXDEV)


@dataclass(frozen=True)
class MissingRoute:
    """Handed to route explainers when a lookup finds no route (see hooks.py)."""
    netns: str
    label: str
    dst: str
    dst_node: str | None
    node: str | None


RouteExplainer = Callable[[MissingRoute], "str | None"]


@dataclass
class Check:
    what: str                        # "link", "rp_filter", "forwarding", "neighbour"
    ok: bool
    detail: str
    brief: str = ""                  # a few words for the table

    def to_dict(self) -> dict:
        return {"what": self.what, "ok": self.ok, "detail": self.detail,
                "brief": self.brief or self.detail}


@dataclass
class HookStep:
    hook: str                        # PREROUTING, routing, INPUT, FORWARD, OUTPUT, POSTROUTING
    verdict: str                     # ACCEPT, DROP, ..., or for routing: forward/local/...
    detail: str = ""
    tables: list[iptables.Verdict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"hook": self.hook, "verdict": self.verdict, "detail": self.detail,
                "tables": [v.to_dict() for v in self.tables]}


@dataclass
class Hop:
    netns: str
    label: str
    role: str                        # source, router, bridge, destination
    ingress: str | None = None
    egress: str | None = None
    route: RouteAnswer | None = None
    next_hop: str | None = None
    hooks: list[HookStep] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"netns": self.netns, "label": self.label, "role": self.role,
                "ingress": self.ingress, "egress": self.egress,
                "route": self.route.to_dict() if self.route else None,
                "next_hop": self.next_hop,
                "hooks": [h.to_dict() for h in self.hooks],
                "checks": [c.to_dict() for c in self.checks]}


@dataclass
class Cause:
    kind: str
    netns: str
    line: str                        # the one line a user reads

    def to_dict(self) -> dict:
        return {"kind": self.kind, "netns": self.netns, "line": self.line}


@dataclass
class Trace:
    src: Endpoint
    dst: Endpoint
    proto: str
    port: int | None
    hops: list[Hop] = field(default_factory=list)
    cause: Cause | None = None
    delivered: bool = False
    notes: list[str] = field(default_factory=list)
    direction: str = "request"
    reply: "Trace | None" = None     # the answer's way back (SYN-ACK, echo reply)

    @property
    def ok(self) -> bool:
        return self.delivered and self.cause is None and (self.reply is None or self.reply.ok)

    @property
    def broken_by(self) -> Cause | None:
        """The cause that breaks the exchange: the request's, else the reply's."""
        if self.cause:
            return self.cause
        return self.reply.cause if self.reply else None

    def summary(self) -> str:
        if self.cause:
            return self.cause.line
        if self.reply is not None and self.reply.cause:
            return f"the reply is dropped: {self.reply.cause.line}"
        if not self.delivered:
            return (f"{self.src.label} ({self.src.ip}) -> {self.dst.ip}: the packet leaves "
                    f"the namespaces trace can see; nothing on the way drops it")
        return (f"delivered: {self.src.label} ({self.src.ip}) -> {self.dst.label} "
                f"({self.dst.ip}) {self.proto}{'/' + str(self.port) if self.port else ''} "
                f"in {len(self.hops)} hops")

    def to_dict(self) -> dict:
        def ep(e: Endpoint) -> dict:
            return {"ip": e.ip, "netns": e.netns, "label": e.label, "node": e.node}
        out = {"direction": self.direction, "src": ep(self.src), "dst": ep(self.dst),
               "proto": self.proto, "port": self.port, "ok": self.ok,
               "delivered": self.delivered,
               "cause": self.broken_by.to_dict() if self.broken_by else None,
               "summary": self.summary(), "hops": [h.to_dict() for h in self.hops],
               "notes": self.notes}
        if self.direction == "request":
            out["reply"] = self.reply.to_dict() if self.reply else None
        return out


class _Broken(Exception):
    def __init__(self, cause: Cause) -> None:
        self.cause = cause


class PathWalk:
    """One trace. `labels` maps netns -> how people call it ("pod a", "node n1"), `nodes`
    netns -> node name (for explainers)."""

    def __init__(self, probe: Probe, src: Endpoint, dst: Endpoint, *, proto: str = "tcp",
                 port: int | None = None, labels: dict[str, str] | None = None,
                 nodes: dict[str, str] | None = None,
                 explainers: Sequence[RouteExplainer] = (),
                 packet: iptables.Packet | None = None, direction: str = "request",
                 listener: bool = False) -> None:
        """`listener`: at the destination, ask whether anything listens on the TCP port
        (a trace asked about a port: `--port`); without it the walk answers for the path."""
        if src.netns is None:
            raise ValueError("the source must be in a known network namespace")
        self.probe = probe
        self.labels = dict(labels or {})
        self.nodes = dict(nodes or {})
        self.labels.setdefault(src.netns, src.label)
        if dst.netns:
            self.labels.setdefault(dst.netns, dst.label)
        self.explainers = list(explainers)
        self.trace = Trace(src, dst, proto, port, direction=direction)
        self.listener = listener
        self.pkt = packet or iptables.Packet(src=src.ip, dst=dst.ip, proto=proto,
                                             dport=port if proto != "icmp" else None)

    # -- helpers ------------------------------------------------------------------

    def label(self, ns: str) -> str:
        return self.labels.get(ns, ns)

    def _fail(self, kind: str, ns: str, line: str) -> _Broken:
        return _Broken(Cause(kind, ns, line))

    def _hooks(self, hop: Hop, hook: str, snap: NetnsSnapshot, *, in_iface=None,
               out_iface=None) -> None:
        def group(name):
            lk = snap.links.get(name) if name else None
            return lk.group if lk else None
        pkt = iptables.Packet(**{**self.pkt.__dict__, "in_iface": in_iface,
                                 "out_iface": out_iface, "in_group": group(in_iface),
                                 "out_group": group(out_iface)})
        verdicts = iptables.evaluate_hook(snap.ruleset, hook, pkt)
        for v in verdicts:
            self.trace.notes += [f"{self.label(snap.name)}: {n}" for n in v.notes]
        dropped = next((v for v in verdicts if v.drops), None)
        nat = [v for v in verdicts if v.verdict in iptables.NAT_TARGETS]
        if dropped:
            hop.hooks.append(HookStep(hook, dropped.verdict, dropped.explain(), verdicts))
            where = self.label(snap.name)
            if dropped.by_policy:
                raise self._fail(POLICY_DROP, snap.name,
                                 f"{hook} policy {dropped.verdict} in {where} "
                                 f"({dropped.table} table): no rule accepts "
                                 f"{self._flow(in_iface, out_iface)}")
            rule = dropped.rule
            assert rule is not None  # not by policy, so a rule decided
            raise self._fail(FILTER_DROP, snap.name,
                             f"{hook} in {where} drops {self._flow(in_iface, out_iface)}: "
                             f"{dropped.table} {rule.chain} rule {rule.index}: {rule.text}")
        detail = "; ".join(v.explain() for v in verdicts if v.rule is not None)
        for v in nat:
            # fastpath has no NAT anywhere; a rewrite is someone else's rule, worth a word.
            what = (f"the destination is rewritten; trace follows {self.pkt.dst}"
                    if v.verdict in ("DNAT", "REDIRECT") else
                    f"the source is rewritten; the receiver will not see {self.pkt.src}")
            self.trace.notes.append(f"{self.label(snap.name)}: {hook} {v.explain()}: {what}")
        hop.hooks.append(HookStep(hook, nat[0].verdict if nat else "ACCEPT",
                                  detail or "no rule matched, policy ACCEPT"
                                  if verdicts else "no rules", verdicts))

    def _flow(self, in_iface, out_iface) -> str:
        p = self.pkt
        src = f"{p.src}:{p.sport}" if p.sport else p.src
        dst = f"{p.dst}:{p.dport}" if p.dport else p.dst
        dirs = " ".join(x for x in (f"in={in_iface}" if in_iface else "",
                                    f"out={out_iface}" if out_iface else "") if x)
        return f"{p.proto} {src} -> {dst}" + (f" ({dirs})" if dirs else "")

    def _owner(self, ip: str) -> tuple[str, Link] | None:
        for ns in self.probe.namespaces():
            lk = self.probe.snapshot(ns).owner(ip)
            if lk is not None:
                return ns, lk
        return None

    # -- the walk -----------------------------------------------------------------

    def run(self) -> Trace:
        ns, ingress = self.trace.src.netns, None
        assert ns is not None  # __init__ refuses an endpoint without a netns
        seen: set[tuple[str, str | None]] = set()
        try:
            for _ in range(MAX_HOPS):
                if (ns, ingress) in seen:
                    raise self._fail(LOOP, ns, f"routing loop: the packet comes back to "
                                               f"{self.label(ns)} via {ingress}")
                seen.add((ns, ingress))
                nxt = self._visit(ns, ingress)
                if nxt is None:
                    return self.trace
                ns, ingress = nxt
            raise self._fail(LOOP, ns, f"more than {MAX_HOPS} hops: a routing loop")
        except _Broken as b:
            self.trace.cause = b.cause
            return self.trace

    def _visit(self, ns: str, ingress: str | None) -> tuple[str, str] | None:
        snap = self.probe.snapshot(ns)
        self.trace.notes += [f"{self.label(ns)}: {n}" for n in snap.notes
                             if f"{self.label(ns)}: {n}" not in self.trace.notes]
        role = "source" if ingress is None else "router"
        hop = Hop(ns, self.label(ns), role, ingress=ingress)
        self.trace.hops.append(hop)
        if ingress is None:
            route = self._route(hop, snap, src=self.pkt.src)
            if route.type == "local":
                self._hooks(hop, "OUTPUT", snap, out_iface="lo")
                self._hooks(hop, "POSTROUTING", snap, out_iface="lo")
                self._hooks(hop, "INPUT", snap, in_iface="lo")
                self._deliver(hop)
                return None
            hop.hooks.append(HookStep("routing", "output", route.answer()))
            self._hooks(hop, "OUTPUT", snap, out_iface=route.oif)
            self._hooks(hop, "POSTROUTING", snap, out_iface=route.oif)
            return self._egress(hop, snap, route)

        lk = snap.links.get(ingress)
        if lk is None or not lk.admin_up:
            hop.checks.append(Check("link", False, f"{ingress} is down"))
            raise self._fail(LINK_DOWN, ns, f"link down: {ingress} in {self.label(ns)} "
                                            f"(where the packet arrives) is down")
        hop.checks.append(Check("link", True, f"{ingress} {lk.state}"))
        self._hooks(hop, "PREROUTING", snap, in_iface=ingress)
        route = self.probe.route_get(ns, self.pkt.dst, src=self.pkt.src, iif=ingress)
        hop.route = route
        rp = self._rp_check(hop, snap, ingress)
        if not route.ok:
            hop.hooks.append(HookStep("routing", "refused", route.answer()))
            # The kernel's order: a packet not for this netns is refused first when the
            # ingress does not forward (EHOSTUNREACH), then by source validation.
            forwards = lk.forwarding or snap.owner(self.pkt.dst) is not None
            if not forwards and route.errno == _errno.EHOSTUNREACH:
                raise self._forwarding_off(hop, snap, ingress)
            if not rp.passes:
                raise self._fail(RP_FILTER, ns, f"reverse-path filter drops it in "
                                                f"{self.label(ns)} on {ingress}: {rp.reason}")
            if route.errno in _MARTIAN_ERRNOS:
                raise self._fail(MARTIAN, ns, f"{self.label(ns)} refuses the packet on "
                                              f"{ingress} as a martian ({route.error}): a "
                                              f"source it will not accept there")
            if not forwards:
                raise self._forwarding_off(hop, snap, ingress)
            raise self._no_route(snap, route)
        if not rp.passes:
            self.trace.notes.append(f"{self.label(ns)}: the kernel accepted the input route "
                                    f"although {rp.reason}")
        if route.type == "local":
            hop.hooks.append(HookStep("routing", "local", route.answer()))
            self._hooks(hop, "INPUT", snap, in_iface=ingress)
            self._deliver(hop)
            return None
        if route.type not in (None, "unicast"):
            hop.hooks.append(HookStep("routing", route.type, route.answer()))
            raise self._fail(NO_ROUTE, ns, f"no route to {self.pkt.dst} in {self.label(ns)}: "
                                           f"the route is of type {route.type}")
        hop.checks.append(Check("forwarding", True, f"net.ipv4.conf.{ingress}.forwarding=1",
                                "forwarding on"))
        hop.hooks.append(HookStep("routing", "forward", route.answer()))
        self._hooks(hop, "FORWARD", snap, in_iface=ingress, out_iface=route.oif)
        self._hooks(hop, "POSTROUTING", snap, out_iface=route.oif)
        return self._egress(hop, snap, route)

    def _forwarding_off(self, hop: Hop, snap: NetnsSnapshot, ingress: str) -> _Broken:
        hop.checks.append(Check("forwarding", False, f"net.ipv4.conf.{ingress}.forwarding=0",
                                "forwarding OFF"))
        return self._fail(FORWARDING_OFF, snap.name,
                          f"IP forwarding is off in {self.label(snap.name)}: "
                          f"net.ipv4.conf.{ingress}.forwarding=0 "
                          f"(net.ipv4.ip_forward={snap.ip_forward})")

    def _deliver(self, hop: Hop) -> None:
        hop.role = "destination"
        self.trace.delivered = True
        if self.trace.dst.netns and hop.netns != self.trace.dst.netns:
            self.trace.notes.append(f"delivered locally in {hop.label}, not in "
                                    f"{self.label(self.trace.dst.netns)}")
        if self.listener and self.trace.direction == "request" and self.pkt.proto == "tcp" \
                and self.trace.port:
            # a SYN that arrives where nothing listens is answered with a RST
            if self.probe.listening(hop.netns, self.pkt.dst, self.trace.port) is False:
                hop.checks.append(Check("listener", False, f"no TCP listener on "
                                        f"{self.pkt.dst}:{self.trace.port}", "nothing listens"))
                raise self._fail(NO_LISTENER, hop.netns,
                                 f"the packet reaches {hop.label} ({self.pkt.dst}), but nothing "
                                 f"there listens on tcp/{self.trace.port}: the connection is "
                                 f"refused (RST)")
        return None

    def _route(self, hop: Hop, snap: NetnsSnapshot, *, src: str) -> RouteAnswer:
        route = self.probe.route_get(snap.name, self.pkt.dst, src=src)
        hop.route = route
        if not route.ok:
            hop.hooks.append(HookStep("routing", "refused", route.answer()))
            raise self._no_route(snap, route)
        if route.type not in (None, "unicast", "local"):
            hop.hooks.append(HookStep("routing", route.type, route.answer()))
            raise self._fail(NO_ROUTE, snap.name,
                             f"no route to {self.pkt.dst} in {self.label(snap.name)}: "
                             f"the route is of type {route.type}")
        return route

    def _rp_check(self, hop: Hop, snap: NetnsSnapshot, ingress: str) -> rpfilter.RpDecision:
        lk = snap.links[ingress]
        mode = rpfilter.effective_mode(snap.rp_filter_all, lk.rp_filter)
        reverse_oif = None
        if mode:
            back = self.probe.route_get(snap.name, self.pkt.src)
            reverse_oif = back.oif if back.ok and back.type in (None, "unicast", "local") \
                else None
        d = rpfilter.decide(src=self.pkt.src, ingress=ingress, all_value=snap.rp_filter_all,
                            iface_value=lk.rp_filter, reverse_oif=reverse_oif)
        hop.checks.append(Check("rp_filter", d.passes, d.reason,
                                f"rp_filter {d.mode_name}: {'pass' if d.passes else 'DROP'}"))
        return d

    def _no_route(self, snap: NetnsSnapshot, route: RouteAnswer) -> _Broken:
        ns, where = snap.name, self.label(snap.name)
        down = self._down_link_toward(snap)
        if down is not None:
            # Taking a link down deletes the routes through it: the missing route is the
            # symptom, the link the cause.
            return self._fail(LINK_DOWN, ns,
                              f"link down: {down} ({where} has no route to {self.pkt.dst} "
                              f"without it: {route.error})")
        line = f"no route to {self.pkt.dst} in {where} ({route.error})"
        missing = MissingRoute(netns=ns, label=where, dst=self.pkt.dst,
                               dst_node=self.trace.dst.node, node=self.nodes.get(ns))
        for explain in self.explainers:
            why = explain(missing)
            if why:
                line += f": {why}"
                break
        return self._fail(NO_ROUTE, ns, line)

    def _down_link_toward(self, snap: NetnsSnapshot) -> str | None:
        """A link of `snap` that is down and explains a missing route: one whose far end
        is the destination's netns first, else one taken down here (which removed its
        routes), else one whose far end is down while it leads onto a bridge."""
        dst_ns = self.trace.dst.netns
        ranked: list[tuple[int, str]] = []
        for lk in snap.down_links():
            peer = self.probe.peer(snap.name, lk.name)
            if peer is None and lk.admin_up:
                continue
            desc = f"{lk.name} in {self.label(snap.name)} is down"
            if peer is not None and lk.admin_up:
                desc = (f"{peer[1]} in {self.label(peer[0])}, the other end of {lk.name} "
                        f"in {self.label(snap.name)}, is down")
            if peer is not None and peer[0] == dst_ns:
                ranked.append((0, desc))
            elif not lk.admin_up:
                ranked.append((1, desc))
            else:
                ranked.append((2, desc))
        return min(ranked)[1] if ranked else None

    def _egress(self, hop: Hop, snap: NetnsSnapshot, route: RouteAnswer):
        ns, where = snap.name, self.label(snap.name)
        hop.egress = route.oif
        nh = route.gateway or self.pkt.dst
        hop.next_hop = nh
        out = snap.links.get(route.oif or "")
        if out is None:
            raise self._fail(NO_ROUTE, ns, f"the route in {where} leaves via {route.oif}, "
                                           f"which trace cannot see")
        peer = self.probe.peer(ns, out.name)
        if not out.admin_up:
            hop.checks.append(Check("link", False, f"{out.name} is down"))
            raise self._fail(LINK_DOWN, ns, f"link down: {out.name} in {where} is down")
        if not out.carrier:
            hop.checks.append(Check("link", False, f"{out.name} has no carrier"))
            other = f"{peer[1]} in {self.label(peer[0])}, the other end of {out.name}," \
                if peer else f"the other end of {out.name}"
            raise self._fail(LINK_DOWN, ns, f"link down: {other} is down "
                                            f"({out.name} in {where} has no carrier)")
        hop.checks.append(Check("link", True, f"{out.name} UP"))
        neigh = snap.neighbours.get((out.name, nh))
        if neigh:
            hop.checks.append(Check("neighbour", neigh not in ("FAILED", "INCOMPLETE"),
                                    f"{nh} on {out.name}: {neigh}"))
        if peer is None:
            owner = self._owner(self.pkt.dst)
            if owner is None:
                self.trace.notes.append(f"the packet leaves the traced namespaces via "
                                        f"{out.name} in {where} toward {nh}")
                return None
            raise self._fail(NO_ROUTE, ns, f"{where} sends {self.pkt.dst} out {out.name}, "
                                           f"which does not lead to {self.label(owner[0])}")
        pns, pif = peer
        psnap = self.probe.snapshot(pns)
        plink = psnap.links[pif]
        if not plink.master:
            self._check_arp(hop, snap, out, psnap, plink, nh, neigh)
            return pns, pif
        return self._bridge(psnap, plink, nh)

    def _check_arp(self, hop, snap, out: Link, psnap: NetnsSnapshot, plink: Link, nh: str,
                   neigh: str | None) -> None:
        """On a point-to-point veth, someone on the far end must answer ARP for the next
        hop: the owner of that address, or the far end by proxy ARP (a link-local gateway
        as Calico's 169.254.1.1)."""
        if neigh in ("PERMANENT", "NOARP", "REACHABLE"):
            return
        if psnap.owner(nh) is not None:
            # Linux answers ARP for any of its addresses on any interface (arp_ignore=0).
            return
        if plink.proxy_arp or psnap.proxy_arp_all:
            hop.checks.append(Check("neighbour", True,
                                    f"{plink.name} in {self.label(psnap.name)} answers ARP "
                                    f"for {nh} by proxy ARP"))
            return
        hop.checks.append(Check("neighbour", False, f"nobody answers ARP for {nh}"))
        raise self._fail(NEIGHBOUR, snap.name,
                         f"no neighbour: nothing on the far end of {out.name} in "
                         f"{self.label(snap.name)} answers ARP for {nh} "
                         f"(proxy_arp is off on {plink.name} in {self.label(psnap.name)})")

    def _bridge(self, bsnap: NetnsSnapshot, port_in: Link, nh: str):
        bname = port_in.master
        hop = Hop(bsnap.name, self.label(bsnap.name), "bridge", ingress=port_in.name,
                  next_hop=nh)
        self.trace.hops.append(hop)
        where = self.label(bsnap.name)
        bridge = bsnap.links.get(bname) if bname else None
        if bridge is None or not bridge.admin_up:
            hop.checks.append(Check("link", False, f"bridge {bname} is down"))
            raise self._fail(LINK_DOWN, bsnap.name, f"link down: bridge {bname} in {where}")
        # Only what hangs off this bridge's ports can answer for the next hop: follow
        # each port's veth to its far end and look for the address there.
        for port_out in [lk for lk in bsnap.links.values() if lk.master == bname]:
            far = self.probe.peer(bsnap.name, port_out.name)
            if far is None or port_out.name == port_in.name:
                continue
            ns = far[0]
            lk = self.probe.snapshot(ns).links.get(far[1])
            if lk is None or not lk.owns(nh):
                continue
            hop.egress = port_out.name
            hop.hooks.append(HookStep("bridge", "forward",
                                      f"{bname}: {port_in.name} -> {port_out.name} "
                                      f"(toward {nh}, {self.label(ns)})"))
            if not port_out.admin_up:
                hop.checks.append(Check("link", False, f"port {port_out.name} is down"))
                raise self._fail(LINK_DOWN, bsnap.name,
                                 f"link down: bridge port {port_out.name} in {where} "
                                 f"(toward {self.label(ns)}) is down")
            if not lk.admin_up:
                hop.checks.append(Check("link", False, f"{lk.name} in {self.label(ns)} is down"))
                raise self._fail(LINK_DOWN, ns, f"link down: {lk.name} in {self.label(ns)} "
                                                f"(its way onto bridge {bname}) is down")
            hop.checks.append(Check("link", True, f"{bname} UP, {port_in.name} UP, "
                                                  f"{port_out.name} UP"))
            return ns, lk.name
        hop.checks.append(Check("neighbour", False, f"nothing on {bname} owns {nh}"))
        raise self._fail(NEIGHBOUR, bsnap.name,
                         f"no neighbour: nothing on bridge {bname} in {where} owns the next "
                         f"hop {nh} (ARP fails)")


def walk(probe: Probe, src: Endpoint, dst: Endpoint, *, reply: bool = True, **kw) -> Trace:
    """Trace the request from src to dst and, once it arrives, the reply back: a TCP
    connection or a ping needs both. The reply is conntrack state ESTABLISHED, from the
    request's destination port, and for ICMP an echo reply."""
    tr = PathWalk(probe, src, dst, **kw).run()
    if reply and tr.ok and dst.netns is not None and tr.hops[-1].netns == dst.netns:
        proto, port = kw.get("proto", "tcp"), kw.get("port")
        back = iptables.Packet(src=dst.ip, dst=src.ip, proto=proto,
                               sport=port if proto != "icmp" else None,
                               icmp_type=0, ctstate="ESTABLISHED")
        tr.reply = PathWalk(probe, dst, src, packet=back, direction="reply", **kw).run()
    return tr
