"""A small routing-mode cluster built with ip(8) and iptables for trace's integration tests:
an underlay netns with a bridge, two nodes on it, pods wired the fastpath way (a /32 on
eth0, the link-local gateway 169.254.1.1 with a permanent neighbour entry, a /32 route
per pod on the node, host veths in interface group 0x6670, FORWARD policy DROP plus
FP-FORWARD accepting that group, strict rp_filter on the nodes).

    pa 10.244.1.2 ─┐                       ┌─ pb 10.244.2.2
    pc 10.244.1.3 ─┴ n1 10.255.0.1 ── br0 ── 10.255.0.2 n2
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from fastpath import naming

POD_GROUP = 0x6670
HOST_MAC = "ee:ee:ee:ee:ee:ee"


def sh(*argv: str, input: str | None = None) -> str:
    p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.stderr.strip()}")
    return p.stdout


def in_ns(ns: str, *argv: str, input: str | None = None) -> str:
    return sh("ip", "netns", "exec", ns, *argv, input=input)


@dataclass
class Pod:
    name: str
    netns: str
    ip: str
    node: str
    host_veth: str


@dataclass
class Topology:
    underlay: str = ""
    nodes: dict[str, str] = field(default_factory=dict)         # node -> netns
    node_ips: dict[str, str] = field(default_factory=dict)      # node -> underlay address
    node_uplinks: dict[str, str] = field(default_factory=dict)  # node -> its underlay ifname
    bridge_ports: dict[str, str] = field(default_factory=dict)  # node -> port in the underlay
    pods: dict[str, Pod] = field(default_factory=dict)

    @property
    def namespaces(self) -> list[str]:
        return [self.underlay, *self.nodes.values(), *(p.netns for p in self.pods.values())]

    @property
    def labels(self) -> dict[str, str]:
        out = {self.underlay: "underlay"}
        out.update({ns: f"node {n}" for n, ns in self.nodes.items()})
        out.update({p.netns: f"pod {p.name}" for p in self.pods.values()})
        return out

    def build(self) -> "Topology":
        self.underlay = naming.name("ul")
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def _build(self) -> None:
        sh("ip", "netns", "add", self.underlay)
        sh("ip", "-n", self.underlay, "-b", "-", input="link set lo up\n"
           "link add br0 type bridge\nlink set br0 up\n")
        cidrs = {"n1": "10.244.1.0/24", "n2": "10.244.2.0/24"}
        for i, node in enumerate(("n1", "n2"), 1):
            ns = self.nodes[node] = naming.name(node)
            ip = self.node_ips[node] = f"10.255.0.{i}"
            up, port = naming.link_name("uplink", node), naming.link_name("port", node)
            self.node_uplinks[node], self.bridge_ports[node] = up, port
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", up, "netns", ns, "type", "veth", "peer", "name", port,
               "netns", self.underlay)
            sh("ip", "-n", self.underlay, "-b", "-",
               input=f"link set {port} master br0\nlink set {port} up\n")
            sh("ip", "-n", ns, "-b", "-", input=f"link set lo up\nlink set {up} up\n"
               f"addr add {ip}/24 dev {up}\n")
            in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                  "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1")
            in_ns(ns, "iptables-restore", "--noflush", input=(
                "*filter\n:FORWARD DROP [0:0]\n:FP-FORWARD - [0:0]\n-A FORWARD -j FP-FORWARD\n"
                f"-A FP-FORWARD -m devgroup --src-group {POD_GROUP:#x} -j ACCEPT\n"
                f"-A FP-FORWARD -m devgroup --dst-group {POD_GROUP:#x} -j ACCEPT\nCOMMIT\n"))
        sh("ip", "-n", self.nodes["n1"], "route", "add", cidrs["n2"], "via", self.node_ips["n2"])
        sh("ip", "-n", self.nodes["n2"], "route", "add", cidrs["n1"], "via", self.node_ips["n1"])
        self.add_pod("pa", "n1", "10.244.1.2")
        self.add_pod("pc", "n1", "10.244.1.3")
        self.add_pod("pb", "n2", "10.244.2.2")

    def add_pod(self, name: str, node: str, ip: str) -> Pod:
        ns, node_ns = naming.name(name), self.nodes[node]
        host = naming.link_name("pod", name)
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", host,
           "netns", node_ns)
        sh("ip", "-n", node_ns, "-b", "-", input=(
            f"link set {host} address {HOST_MAC} group {POD_GROUP}\nlink set {host} up\n"
            f"route add {ip}/32 dev {host} scope link\n"))
        sh("ip", "-n", ns, "-b", "-", input=(
            f"link set lo up\nlink set eth0 up\naddr add {ip}/32 dev eth0\n"
            "route add 169.254.1.1/32 dev eth0 scope link\n"
            "route add default via 169.254.1.1 dev eth0\n"
            f"neigh add 169.254.1.1 lladdr {HOST_MAC} dev eth0 nud permanent\n"))
        pod = self.pods[name] = Pod(name, ns, ip, node, host)
        return pod

    def destroy(self) -> None:
        for ns in [p.netns for p in self.pods.values()] + list(self.nodes.values()) + \
                [self.underlay]:
            if ns:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def ping(self, src: str, dst: str) -> bool:
        p = subprocess.run(["ip", "netns", "exec", self.pods[src].netns, "ping", "-c1",
                            "-W1", self.pods[dst].ip], capture_output=True)
        return p.returncode == 0

    def reaches(self, src: str, dst: str, port: int = 7777, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from pod `src` to pod `dst` completes: a listener made
        inside dst's netns, a client inside src's (sockets stay in the netns they were
        made in), so the SYN and the SYN-ACK both take the real path."""
        import socket

        from fastpath.kernel.netns import Netns
        s, d = self.pods[src], self.pods[dst]
        with Netns.open(d.netns) as nd, Netns.open(s.netns) as ns:
            srv = nd.socket(socket.AF_INET, socket.SOCK_STREAM)
            cli = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                srv.bind((d.ip, port))
                srv.listen()
                cli.settimeout(timeout)
                try:
                    cli.connect((d.ip, port))
                except OSError:
                    return False
                return True
            finally:
                cli.close()
                srv.close()
