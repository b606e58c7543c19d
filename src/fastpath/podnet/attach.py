"""Wire ONE pod into a host netns, unwire it, or inspect it: the code path shared by
`fastpath pod add` and the CNI plugin (ADD / DEL / CHECK).

    attach(host_ns, pod_ns, host_ifname=..., address="10.244.1.2/32") -> Attachment
    detach(host_ns, host_ifname=...)                                 -> bool
    inspect(host_ns, pod_ns, host_ifname=..., address=...)           -> list[str] (problems)

host_ns / pod_ns: a netns name (/run/netns/NAME), a path (CNI_NETNS: /proc/PID/ns/net,
/run/netns/x), an open fd (received over SCM_RIGHTS; we dup it), an open `Rtnl` (reused
across many pods: the node's socket), or None for the caller's current netns. A netns
that does not exist is NotFound; nothing is ever created by opening one.

What attach makes (the design and why: fastpath.podnet.plan):
    host: veth <host_ifname> (MAC ee:ee:ee:ee:ee:ee, group POD_DEVGROUP, up),
          route IP/32 dev <host_ifname> scope link
    pod:  lo up; <ifname> (the veth peer, created directly in the pod netns, up) with IP,
          permanent neighbour gateway -> ee:ee:ee:ee:ee:ee, gateway/32 scope link,
          default via gateway
The host side's FORWARD acceptance comes from the interface group (fastpath.podnet.netfilter
installs the chain once per node). Each step is undone in reverse order if a later one
fails; since every host- and pod-side object hangs off the veth, the undo of the first
step (delete the veth) takes the rest with it, and we never delete something we did not
make (a name collision fails before anything exists).

Failure injection (fastpath.faults): FASTPATH_PODNET_FAIL_AT=<step> (one of STEPS) makes attach fail right
after that step, as a kernel error would; tests use it to check the rollback.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass

from fastpath import faults
from fastpath.errors import AlreadyExists, FastpathError, KernelError, NotFound
from fastpath.podnet import netfilter, plan
from fastpath.podnet.plan import PodWiring
from fastpath.podnet.rtnl import Rtnl

STEPS = ("veth", "host-up", "host-route", "pod-link", "pod-address", "pod-routes")
IFF_UP = 1
LOOPBACK_IFINDEX = 1
IFA_F_NOPREFIXROUTE = 0x200
NUD_PERMANENT = 0x80


@dataclass(frozen=True)
class Attachment:
    host_ifname: str
    host_ifindex: int
    host_mac: str
    ifname: str
    ifindex: int
    mac: str
    address: str           # ip/prefix
    gateway: str
    mtu: int

    def to_dict(self) -> dict:
        return asdict(self)


class _Borrowed:
    """An Rtnl the caller owns (not closed here) or one we open and close."""

    def __init__(self, spec) -> None:
        self.own = not isinstance(spec, Rtnl)
        self.rtnl = Rtnl(spec) if self.own else spec

    def __enter__(self) -> Rtnl:
        return self.rtnl

    def __exit__(self, *exc) -> None:
        if self.own:
            self.rtnl.close()


def attach(host_ns, pod_ns, *, host_ifname: str, address: str, ifname: str = "eth0",
           gateway: str | None = None, mtu: int | None = None, devgroup: int | None = None,
           wiring: PodWiring | None = None) -> Attachment:
    """Wire one pod; on any failure, remove everything made and re-raise."""
    w = wiring or PodWiring.make(host_ifname=host_ifname, address=address, ifname=ifname,
                                 gateway=gateway, mtu=mtu,
                                 devgroup=plan.POD_DEVGROUP if devgroup is None else devgroup)
    with _Borrowed(host_ns) as host, _Borrowed(pod_ns) as pod:
        undo: list = []
        try:
            return _attach(host, pod, w, undo)
        except BaseException:
            for fn in reversed(undo):
                try:
                    fn()
                except FastpathError:
                    pass  # best effort: the first error is the one to report
            raise


def _attach(host: Rtnl, pod: Rtnl, w: PodWiring, undo: list) -> Attachment:
    peer = {"ifname": w.ifname, "net_ns_fd": pod.ns.fd, "mtu": w.mtu}
    link = {"ifname": w.host_ifname, "kind": "veth", "peer": peer, "address": w.host_mac,
            "mtu": w.mtu}
    if w.devgroup is not None:
        link["group"] = w.devgroup
    # A name collision fails here with EEXIST before anything exists (the kernel creates
    # both ends or neither), so there is nothing of anyone else's to roll back.
    try:
        host.call(f"create veth {w.host_ifname}", "link", "add", **link)
    except AlreadyExists:
        raise AlreadyExists(f"interface {w.host_ifname} (or {w.ifname} in netns {pod.label}) "
                            f"already exists", op=f"create veth {w.host_ifname}") from None
    hidx = host.index(w.host_ifname)
    if hidx is None:
        raise KernelError("veth vanished after creation", op=f"create veth {w.host_ifname}")
    undo.append(lambda: host.call(f"delete veth {w.host_ifname}", "link", "del", index=hidx))
    faults.point("podnet", "veth", "attach")

    host.call(f"set {w.host_ifname} up", "link", "set", index=hidx, state="up")
    faults.point("podnet", "host-up", "attach")
    for r in w.host_routes():
        host.call(f"add route {r['dst']} dev {w.host_ifname}", "route", "add", dst=r["dst"],
                  oif=hidx, scope=253)  # RT_SCOPE_LINK
    faults.point("podnet", "host-route", "attach")

    plink = pod.link(w.ifname)
    if plink is None:
        raise KernelError(f"{w.ifname} missing after veth creation", op=f"create veth {w.host_ifname}")
    pidx = plink["index"]
    # lo is ifindex 1 in every netns (LOOPBACK_IFINDEX): registered first, never renumbered
    pod.call("set lo up", "link", "set", index=LOOPBACK_IFINDEX, state="up")
    pod.call(f"set {w.ifname} up", "link", "set", index=pidx, state="up")
    faults.point("podnet", "pod-link", "attach")
    addr = {"index": pidx, "address": str(w.ip), "prefixlen": w.address.network.prefixlen}
    if w.noprefixroute:
        addr["flags"] = IFA_F_NOPREFIXROUTE
    pod.call(f"add address {w.address} to {w.ifname}", "addr", "add", **addr)
    faults.point("podnet", "pod-address", "attach")
    pod.call(f"add neighbour {w.gateway}", "neigh", "add", dst=str(w.gateway), lladdr=w.host_mac,
             ifindex=pidx, state=NUD_PERMANENT)
    for r in w.pod_routes():
        kw = {"dst": r["dst"], "oif": pidx}
        if "scope" in r:
            kw["scope"] = 253
        if "gateway" in r:
            kw["gateway"] = r["gateway"]
        pod.call(f"add route {r['dst']} in pod", "route", "add", **kw)
    faults.point("podnet", "pod-routes", "attach")
    return Attachment(host_ifname=w.host_ifname, host_ifindex=hidx, host_mac=w.host_mac,
                      ifname=w.ifname, ifindex=pidx, mac=plink.get("IFLA_ADDRESS") if plink else "",
                      address=str(w.address), gateway=str(w.gateway), mtu=w.mtu)


def detach(host_ns, *, host_ifname: str) -> bool:
    """Remove the pod's veth (its peer, addresses and both sides' routes go with it).
    False when it was already gone; a missing host netns is NotFound."""
    with _Borrowed(host_ns) as host:
        idx = host.index(host_ifname)
        if idx is None:
            return False
        try:
            host.call(f"delete veth {host_ifname}", "link", "del", index=idx)
        except NotFound:
            return False
        return True


def inspect(host_ns, pod_ns, *, host_ifname: str, address: str, ifname: str = "eth0",
            gateway: str | None = None, mtu: int | None = None, check_forward: bool = True,
            devgroup: int | None = None) -> list[str]:
    """Every way the pod's wiring differs from what attach makes; [] when intact.

    Each problem is one line naming the object (for CNI CHECK and `fastpath status`).
    """
    w = PodWiring.make(host_ifname=host_ifname, address=address, ifname=ifname, gateway=gateway,
                       mtu=mtu, devgroup=plan.POD_DEVGROUP if devgroup is None else devgroup)
    problems: list[str] = []
    with _Borrowed(host_ns) as host, _Borrowed(pod_ns) as pod:
        hl = host.link(w.host_ifname)
        if hl is None:
            problems.append(f"host interface {w.host_ifname} is missing in netns {host.label}")
        else:
            if not hl["flags"] & IFF_UP:
                problems.append(f"host interface {w.host_ifname} is down")
            if w.devgroup is not None and hl.get("IFLA_GROUP") != w.devgroup:
                problems.append(f"host interface {w.host_ifname} is not in group {w.devgroup:#x} "
                                f"(FP-FORWARD does not accept it)")
            if not any(r.get("oif") == hl["index"] for r in _routes(host, f"{w.ip}/32")):
                problems.append(f"route {w.ip}/32 dev {w.host_ifname} is missing in netns {host.label}")
        pl = pod.link(w.ifname)
        if pl is None:
            problems.append(f"pod interface {w.ifname} is missing in netns {pod.label}")
        else:
            if not pl["flags"] & IFF_UP:
                problems.append(f"pod interface {w.ifname} is down")
            addrs = {(a.get("IFA_ADDRESS"), a["prefixlen"])
                     for a in pod.call("list addresses", "addr", "dump") if a["index"] == pl["index"]}
            if (str(w.ip), w.address.network.prefixlen) not in addrs:
                problems.append(f"address {w.address} is missing on {w.ifname} in netns {pod.label}")
            if hl is not None and pl.get("IFLA_LINK") != hl["index"]:
                problems.append(f"pod interface {w.ifname} is not the peer of {w.host_ifname}")
            gw = [r for r in _routes(pod, "0.0.0.0/0") if r.get("gateway") == str(w.gateway)]
            if not gw:
                problems.append(f"default route via {w.gateway} is missing in netns {pod.label}")
        if check_forward and hl is not None:
            st = netfilter.forward_status(host.ns)
            if st["policy"] != "ACCEPT" and not (st["jump"] and st["accepts_pods"]):
                problems.append(f"FORWARD in netns {host.label} does not accept pod traffic "
                                f"(policy {st['policy']}, no {netfilter.FORWARD_CHAIN} rule)")
    return problems


def _routes(r: Rtnl, dst: str) -> list[dict]:
    net, plen = dst.split("/")
    out = []
    for m in r.call(f"list routes to {dst}", "route", "dump", family=socket.AF_INET):
        d = m.get("RTA_DST") or "0.0.0.0"
        if m["dst_len"] == int(plen) and d == net and (m.get("RTA_TABLE") or m["table"]) == 254:
            out.append({"oif": m.get("RTA_OIF"), "gateway": m.get("RTA_GATEWAY")})
    return out
