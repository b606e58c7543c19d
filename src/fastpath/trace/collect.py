"""The collection edge: answer the path walk's questions from the running kernel.

- Links, addresses, neighbours, per-interface devconf (forwarding, rp_filter, proxy_arp
  from IFLA_AF_SPEC/AF_INET) and route lookups go through rtnetlink: one socket per
  namespace, made inside it (fastpath.podnet.rtnl: no forked helper, and opening never
  creates a namespace that vanished), closed by `close()`.
- conf.all.* and net.ipv4.ip_forward are read from /proc/sys/net by a thread stepped into
  the namespace (fastpath.podnet.sysctl), and the rules with `iptables-save` run inside
  it (nsenter on the namespace fd): the ruleset is parsed by `iptables.parse`, so what
  trace evaluates is what the kernel has loaded through iptables.
- A veth's peer is IFLA_LINK (its ifindex) in the namespace named by IFLA_LINK_NETNSID;
  that id is local to the asking namespace, so it is matched against RTM_GETNSID of each
  candidate namespace's /run/netns file.

Decision: snapshots are taken once per trace and cached; a trace explains the state at
the moment it ran. Rules made with nft(8) directly (not through iptables-nft) are not in
iptables-save's output and are not evaluated; neither are legacy x_tables rules, which
iptables-save flags and the snapshot notes.
"""

from __future__ import annotations

import errno as _errno
import os

from pyroute2.netlink.exceptions import NetlinkError

from fastpath import naming
from fastpath.errors import KernelError, NotFound
from fastpath.kernel.netns import run_in
from fastpath.podnet import netfilter, sysctl
from fastpath.podnet.rtnl import Rtnl
from fastpath.trace import iptables
from fastpath.trace.model import Link, NetnsSnapshot, RouteAnswer, tcp_listeners

NETNS_DIR = "/run/netns"

# rtm_type (include/uapi/linux/rtnetlink.h)
RTN_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
             6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
# ndm_state bits (include/uapi/linux/neighbour.h)
NUD_STATES = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY",
              0x10: "PROBE", 0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT"}
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
NSID_NONE = 0xFFFFFFFF  # RTM_GETNSID: no id assigned (or the namespace itself)


def scoped_namespaces() -> list[str]:
    """The named network namespaces of this instance's scope (`fp-[<tag>-]...`)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if naming.owned(n))


SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.all.proxy_arp")


class LiveProbe:
    """A `model.Probe` on the running kernel. Use as a context manager (closes sockets)."""

    def __init__(self, namespaces: list[str] | None = None) -> None:
        self._names = list(namespaces) if namespaces is not None else scoped_namespaces()
        self._sockets: dict = {}
        self._snaps: dict[str, NetnsSnapshot] = {}
        self._nsids: dict[str, dict[int, str]] = {}

    def __enter__(self) -> "LiveProbe":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        socks, self._sockets = self._sockets, {}
        for s in socks.values():
            s.close()

    # -- netlink --------------------------------------------------------------------

    def _ipr(self, netns: str):
        s = self._sockets.get(netns)
        if s is None:
            s = self._sockets[netns] = Rtnl(netns)
        return s.ipr

    def namespaces(self) -> list[str]:
        return list(self._names)

    def snapshot(self, netns: str) -> NetnsSnapshot:
        snap = self._snaps.get(netns)
        if snap is None:
            snap = self._snaps[netns] = self._take(netns)
        return snap

    def _take(self, netns: str) -> NetnsSnapshot:
        ipr = self._ipr(netns)
        op = f"read links of netns {netns}"
        try:
            raw_links = list(ipr.link("dump"))
            raw_addrs = list(ipr.addr("dump", family=2))
            raw_neigh = list(ipr.neigh("dump", family=2))
        except OSError as e:
            raise KernelError.from_oserror(op, e) from e
        by_index: dict[int, Link] = {}
        masters: dict[int, int] = {}
        for m in raw_links:
            info = m.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            inet: dict = {}
            spec = m.get_attr("IFLA_AF_SPEC")
            if spec:
                inet = spec.get_attr("AF_INET") or {}
            flags = m["flags"]
            nsid = m.get_attr("IFLA_LINK_NETNSID")
            lk = Link(index=m["index"], name=m.get_attr("IFLA_IFNAME"), kind=kind,
                      admin_up=bool(flags & IFF_UP), carrier=bool(flags & IFF_LOWER_UP),
                      peer_index=m.get_attr("IFLA_LINK") if kind == "veth" else None,
                      peer_nsid=nsid, rp_filter=int(inet.get("rp_filter", 0)),
                      forwarding=int(inet.get("forwarding", 0)),
                      proxy_arp=int(inet.get("proxy_arp", 0)),
                      group=int(m.get_attr("IFLA_GROUP") or 0))
            by_index[lk.index] = lk
            if m.get_attr("IFLA_MASTER"):
                masters[lk.index] = m.get_attr("IFLA_MASTER")
        for idx, midx in masters.items():
            if midx in by_index:
                by_index[idx].master = by_index[midx].name
        for a in raw_addrs:
            owner = by_index.get(a["index"])
            if owner is not None:
                owner.addrs.append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        neigh = {}
        for n in raw_neigh:
            on = by_index.get(n["ifindex"])
            dst = n.get_attr("NDA_DST")
            if on is not None and dst:
                neigh[(on.name, dst)] = NUD_STATES.get(n["state"], hex(n["state"]))
        values = [int(sysctl.read(netns, key)) for key in SYSCTLS]
        rules = netfilter.iptables(netns, program="iptables-save").stdout
        notes = []
        if "iptables-legacy tables present" in rules:
            # iptables-nft prints this when rules were also loaded through the legacy
            # x_tables interface: those run too, and trace does not evaluate them.
            notes.append("iptables-legacy rules are loaded too; trace evaluates only the "
                         "nf_tables ones (see iptables-legacy-save)")
        return NetnsSnapshot(name=netns, links={lk.name: lk for lk in by_index.values()},
                             ip_forward=int(values[0]), rp_filter_all=int(values[1]),
                             proxy_arp_all=int(values[2]),
                             ruleset=iptables.parse(rules), neighbours=neigh, notes=notes)

    def route_get(self, netns: str, dst: str, *, src: str | None = None,
                  iif: str | None = None, oif: str | None = None) -> RouteAnswer:
        snap = self.snapshot(netns)
        ans = RouteAnswer(dst=dst, src=src, iif=iif, oif_query=oif)
        kw: dict = {"dst": dst}
        if src:
            kw["src"] = src
        for key, name in (("iif", iif), ("oif", oif)):
            if name is not None:
                if name not in snap.links:
                    raise NotFound(f"no interface {name} in netns {netns}")
                kw[key] = snap.links[name].index
        try:
            msgs = list(self._ipr(netns).route("get", **kw))
        except NetlinkError as e:
            ans.ok, ans.errno, ans.error = False, e.code, os.strerror(e.code)
            return ans
        except OSError as e:
            raise KernelError.from_oserror(f"route get {dst} in netns {netns}", e) from e
        if not msgs:
            ans.ok, ans.errno, ans.error = False, _errno.ENETUNREACH, "no answer"
            return ans
        m = msgs[0]
        ans.type = RTN_TYPES.get(m["type"], str(m["type"]))
        o = m.get_attr("RTA_OIF")
        lk = snap.link_by_index(o) if o is not None else None
        ans.oif = lk.name if lk else (str(o) if o is not None else None)
        ans.gateway = m.get_attr("RTA_GATEWAY")
        ans.prefsrc = m.get_attr("RTA_PREFSRC")
        ans.table = m.get_attr("RTA_TABLE")
        if ans.type == "local":
            ans.oif = ans.oif or "lo"
        return ans

    def peer(self, netns: str, ifname: str) -> tuple[str, str] | None:
        lk = self.snapshot(netns).links.get(ifname)
        if lk is None or lk.kind != "veth" or lk.peer_index is None:
            return None
        if lk.peer_nsid is None:
            other = self.snapshot(netns).link_by_index(lk.peer_index)
            return (netns, other.name) if other else None
        pns = self._nsid_map(netns).get(lk.peer_nsid)
        if pns is None:
            return None
        other = self.snapshot(pns).link_by_index(lk.peer_index)
        return (pns, other.name) if other else None

    def listening(self, netns: str, ip: str, port: int) -> bool | None:
        """From the netns's own /proc/net/tcp, read by a thread inside it (proc(5): the
        table is per network namespace, and /proc/thread-self/net is the reading
        thread's)."""
        def read() -> str:
            with open("/proc/thread-self/net/tcp") as f:
                return f.read()
        try:
            text = run_in(netns, read)
        except (OSError, NotFound, KernelError):
            return None
        return (ip, port) in tcp_listeners(text) or ("0.0.0.0", port) in tcp_listeners(text)

    def _nsid_map(self, netns: str) -> dict[int, str]:
        """nsid (as `netns` numbers them) -> name, for the namespaces in scope."""
        got = self._nsids.get(netns)
        if got is not None:
            return got
        got = {}
        ipr = self._ipr(netns)
        for other in self._names:
            if other == netns:
                continue
            try:
                fd = os.open(os.path.join(NETNS_DIR, other), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                r = ipr.get_netnsid(fd=fd)
            finally:
                os.close(fd)
            if r and r.get("nsid") not in (None, NSID_NONE):
                got[r["nsid"]] = other
        self._nsids[netns] = got
        return got
