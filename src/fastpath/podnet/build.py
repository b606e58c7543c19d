"""Making and unmaking the demo cluster: `fastpath up`, node add/del, pod add/del.

Every operation records an undo for each thing it makes and, when a later step fails,
runs them in reverse before re-raising: a failed `up` or `pod add` leaves what was there
before, and nothing else. State rows are claimed first (so concurrent commands cannot
pick one name or address twice) and released by the same undo.

Kernel objects live in netns named through fastpath.naming:
  fp-<tag>-underlay, fp-<tag>-<node>, fp-<tag>-pod-<pod>   (see fastpath.podnet.cluster)
Deleting a node's netns takes its veths (and the bridge port peers) with it.
"""

from __future__ import annotations

import ipaddress
import os
import time

from fastpath import faults, naming, state
from fastpath.errors import (
    AlreadyExists,
    FastpathError,
    KernelError,
    NotFound,
    UsageError,
)
from fastpath.kernel import netns, proc
from fastpath.podnet import attach as _attach
from fastpath.podnet import cluster as cl
from fastpath.podnet import netfilter, plan, routing, sysctl
from fastpath.podnet.ipam import Ipam
from fastpath.podnet.rtnl import Rtnl

POD_NETNS_PART = "pod"


def pod_netns(pod: str) -> str:
    return naming.name(POD_NETNS_PART, pod)


def pod_host_ifname(pod: str) -> str:
    return naming.link_name("pod", pod)


class Undo:
    """A stack of undo actions, run in reverse on failure."""

    def __init__(self) -> None:
        self.actions: list = []

    def push(self, fn, *args) -> None:
        self.actions.append((fn, args))

    def run(self) -> None:
        while self.actions:
            fn, args = self.actions.pop()
            try:
                fn(*args)
            except Exception:  # best effort: the original error is what the user sees
                pass


class Builder:
    """One command's connection to the state and its rtnetlink sockets (one per netns)."""

    def __init__(self) -> None:
        self.conn = cl.connect()
        self.ipam = Ipam(self.conn)
        self._rtnl: dict[str, Rtnl] = {}

    def rtnl(self, ns_name: str) -> Rtnl:
        r = self._rtnl.get(ns_name)
        if r is None:
            r = self._rtnl[ns_name] = Rtnl(ns_name)
        return r

    def drop_rtnl(self, ns_name: str) -> None:
        r = self._rtnl.pop(ns_name, None)
        if r is not None:
            r.close()

    def close(self) -> None:
        for r in self._rtnl.values():
            r.close()
        self._rtnl.clear()
        self.conn.close()

    def __enter__(self) -> "Builder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the cluster --------------------------------------------------------------------

    def up(self, *, nodes: int = 2, pods: int = 2, routing_name: str | None = None,
           underlay: str = plan.DEFAULT_UNDERLAY,
           pod_supernet: str = plan.DEFAULT_POD_SUPERNET,
           routing_options: dict | None = None) -> tuple[cl.Cluster, bool]:
        """Build the cluster; (cluster, False) without change when one exists already."""
        p = plan.plan_cluster(nodes, pods, underlay=underlay, pod_supernet=pod_supernet)
        backend = routing.get(routing_name, **(routing_options or {}))
        under_ns = naming.name("underlay")
        bridge = naming.link_name("underlay", "bridge")
        if not cl.insert_cluster(self.conn, underlay=str(p.underlay), underlay_netns=under_ns,
                                 bridge=bridge, pod_supernet=str(p.pod_supernet), routing=backend.name):
            return cl.load_existing(self.conn), False
        undo = Undo()
        undo.push(self._forget_all)
        try:
            self._make_underlay(under_ns, bridge, undo)
            faults.point("podnet", "underlay", "up")
            for np in p.nodes:
                node = cl.Node(name=np.name, index=np.index, netns=naming.name(np.name),
                               underlay_ip=str(np.underlay_ip), underlay_prefixlen=p.underlay.prefixlen,
                               underlay_ifname="eth0", bridge_port=naming.link_name("underlay", np.name),
                               pod_cidr=str(np.pod_cidr), router_id=np.router_id)
                self._make_node(cl.load_existing(self.conn), node, undo)
                faults.point("podnet", "node", "up")
            c = cl.load_existing(self.conn)
            # node agents (routing "agent") serve the pods' CNI: they come first
            agents = hasattr(backend, "add_pod")
            if agents:
                backend.setup(c)
                undo.push(backend.teardown, c)
            for pod_name, node_name in p.pods:
                self._add_pod(c, node_name, pod_name, undo, backend)
            c = cl.load_existing(self.conn)
            if not agents:
                backend.setup(c)
                undo.push(backend.teardown, c)
            faults.point("podnet", "routing", "up")
            cl.set_phase(self.conn, "ready")
        except BaseException:
            undo.run()
            raise
        return cl.load_existing(self.conn), True

    def _forget_all(self) -> None:
        cl.forget(self.conn)
        self.ipam.forget_space()

    def _make_underlay(self, name: str, bridge: str, undo: Undo) -> None:
        _create_netns(name)
        undo.push(self._delete_netns, name)
        u = self.rtnl(name)
        u.call("set lo up", "link", "set", index=u.index("lo"), state="up")
        u.call(f"create bridge {bridge}", "link", "add", ifname=bridge, kind="bridge")
        u.call(f"set {bridge} up", "link", "set", index=u.index(bridge), state="up")

    def _delete_netns(self, name: str) -> None:
        self.drop_rtnl(name)
        kill_processes_in(name)
        netns.delete(name)

    def _make_node(self, c: cl.Cluster, node: cl.Node, undo: Undo) -> None:
        with state.transaction(self.conn):
            cl.insert_node(self.conn, node)
        undo.push(lambda: self.conn.execute("DELETE FROM podnet_nodes WHERE scope=? AND name=?",
                                            (naming.scope(), node.name)))
        _create_netns(node.netns)
        undo.push(self._delete_netns, node.netns)
        u = self.rtnl(c.underlay_netns)
        br = u.index(c.bridge)
        if br is None:
            raise NotFound(f"bridge {c.bridge} is missing in netns {c.underlay_netns}")
        n = self.rtnl(node.netns)
        u.call(f"create veth {node.bridge_port}", "link", "add", ifname=node.bridge_port, kind="veth",
               peer={"ifname": node.underlay_ifname, "net_ns_fd": n.ns.fd})
        port = u.index(node.bridge_port)
        u.call(f"attach {node.bridge_port} to {c.bridge}", "link", "set", index=port, master=br,
               state="up")
        n.call("set lo up", "link", "set", index=n.index("lo"), state="up")
        eth = n.index(node.underlay_ifname)
        n.call(f"set {node.underlay_ifname} up", "link", "set", index=eth, state="up")
        n.call(f"add {node.underlay_ip}/{node.underlay_prefixlen} on {node.name}", "addr", "add",
               index=eth, address=node.underlay_ip, prefixlen=node.underlay_prefixlen)
        sysctl.write(n.ns, sysctl.NODE_SYSCTLS)
        netfilter.ensure_forward(n.ns)

    def add_node(self, name: str | None = None, pod_cidr: str | None = None) -> cl.Node:
        c = cl.require(self.conn)
        idx = max((n.index for n in c.nodes), default=0) + 1
        name = plan.check_name("node", name or plan.node_name(idx))
        if any(n.name == name for n in c.nodes):
            raise AlreadyExists(f"node {name} already exists")
        u = ipaddress.IPv4Network(c.underlay)
        if pod_cidr is None:
            used = [ipaddress.IPv4Network(n.pod_cidr) for n in c.nodes]
            k = idx
            while any(plan.node_pod_cidr(ipaddress.IPv4Network(c.pod_supernet), k).overlaps(x) for x in used):
                k += 1
            cidr = plan.node_pod_cidr(ipaddress.IPv4Network(c.pod_supernet), k)
        else:
            cidr = plan.parse_net("pod CIDR", pod_cidr)
        plan.check_new_cidr(name, cidr, u, {n.name: ipaddress.IPv4Network(n.pod_cidr) for n in c.nodes})
        used_ips = {n.underlay_ip for n in c.nodes}
        k = idx
        while str(plan.underlay_ip(u, k)) in used_ips:
            k += 1
        ip = plan.underlay_ip(u, k)
        node = cl.Node(name=name, index=idx, netns=naming.name(name), underlay_ip=str(ip),
                       underlay_prefixlen=u.prefixlen, underlay_ifname="eth0",
                       bridge_port=naming.link_name("underlay", name), pod_cidr=str(cidr),
                       router_id=str(ip))
        if netns.exists(node.netns):
            raise AlreadyExists(f"netns {node.netns} already exists (run fastpath down?)")
        backend = routing.get(c.routing)
        undo = Undo()
        try:
            self._make_node(c, node, undo)
            c = cl.load_existing(self.conn)
            backend.node_added(c, c.node(name))
        except BaseException:
            undo.run()
            try:
                backend.node_removed(cl.load_existing(self.conn), node)
            except Exception:
                pass
            raise
        return node

    def del_node(self, name: str) -> list[str]:
        c = cl.require(self.conn)
        node = c.node(name)
        check = getattr(routing.get(c.routing), "check_node_removal", None)
        if check is not None:  # e.g. bgp refuses to remove the route reflector
            check(c, node)
        removed = []
        for p in c.pods_on(name):
            self.del_pod(p.name, node_going=True)
            removed.append(f"pod {p.name}")
        with state.transaction(self.conn):
            cl.delete_node(self.conn, name)
        c = cl.load_existing(self.conn)
        routing.get(c.routing).node_removed(c, node)
        self._delete_netns(node.netns)
        self.ipam.forget_pool(node.pod_cidr)
        removed.append(f"node {name}")
        return removed

    # ---- pods ---------------------------------------------------------------------------

    def add_pod(self, node_name: str, pod_name: str | None = None) -> cl.Pod:
        c = cl.require(self.conn)
        undo = Undo()
        try:
            return self._add_pod(c, node_name, pod_name, undo, routing.get(c.routing))
        except BaseException:
            undo.run()
            raise

    def _claim_pod(self, c: cl.Cluster, node: cl.Node, pod_name: str | None) -> str:
        with state.transaction(self.conn):
            if pod_name is None:
                taken = {r[0] for r in self.conn.execute(
                    "SELECT name FROM podnet_pods WHERE scope=?", (naming.scope(),))}
                k = 1
                while plan.pod_name(node.name, k) in taken:
                    k += 1
                pod_name = plan.pod_name(node.name, k)
            else:
                plan.check_name("pod", pod_name)
                if self.conn.execute("SELECT 1 FROM podnet_pods WHERE scope=? AND name=?",
                                     (naming.scope(), pod_name)).fetchone():
                    raise AlreadyExists(f"pod {pod_name} already exists")
            self.conn.execute("INSERT INTO podnet_pods VALUES (?, ?, ?, ?, NULL, ?, ?, 'creating', ?)",
                              (naming.scope(), pod_name, node.name, pod_netns(pod_name),
                               pod_host_ifname(pod_name), plan.POD_IFNAME, time.time()))
        return pod_name

    def _add_pod(self, c: cl.Cluster, node_name: str, pod_name: str | None, undo: Undo,
                 backend=None) -> cl.Pod:
        node = c.node(node_name)
        name = self._claim_pod(c, node, pod_name)
        undo.push(lambda: cl.delete_pod(self.conn, name))
        if backend is not None and hasattr(backend, "add_pod"):
            # the node's agent wires the pod (CNI ADD), as a runtime on that machine would
            ns_name = pod_netns(name)
            _create_netns(ns_name)
            undo.push(self._delete_netns, ns_name)
            ip, host_if = backend.add_pod(node, name, ns_name)
            undo.push(backend.del_pod, node, name, ns_name)
            # the agent ran with its own environment: a pod add's fault is injected here,
            # after its CNI ADD, so the rollback (a CNI DEL) is what the test exercises
            faults.point("podnet", "pod-address", "pod add")
            self.conn.execute("UPDATE podnet_pods SET ip=?, host_ifname=?, phase='ready' WHERE scope=? "
                              "AND name=?", (ip, host_if, naming.scope(), name))
            return cl.Pod(name=name, node=node.name, netns=ns_name, ip=ip, host_ifname=host_if,
                          ifname=plan.POD_IFNAME, phase="ready")
        host = self.rtnl(node.netns)       # NotFound when the node's netns vanished
        owner = cl.OWNER_PREFIX + name
        ip = self.ipam.allocate(node.pod_cidr, owner)
        undo.push(self.ipam.release, owner)
        ns_name = pod_netns(name)
        _create_netns(ns_name)
        undo.push(self._delete_netns, ns_name)
        with Rtnl(ns_name) as pod_rtnl:
            _attach.attach(host, pod_rtnl, host_ifname=pod_host_ifname(name), address=f"{ip}/32")
        # No undo for the veth: deleting the pod netns (above) deletes both its ends.
        self.conn.execute("UPDATE podnet_pods SET ip=?, phase='ready' WHERE scope=? AND name=?",
                          (str(ip), naming.scope(), name))
        return cl.Pod(name=name, node=node.name, netns=ns_name, ip=str(ip),
                      host_ifname=pod_host_ifname(name), ifname=plan.POD_IFNAME, phase="ready")

    def del_pod(self, pod_name: str, node_going: bool = False) -> cl.Pod:
        """Delete a pod. With `node_going` (its node is being removed), a node agent that
        does not answer its CNI DEL is no reason to stop: the node's netns, and with it the
        pod's veth, goes next, and the node's records leave the datastore with it (an
        operator removes exactly the nodes whose agents are dead)."""
        c = cl.require(self.conn)
        pod = c.pod(pod_name)
        node = c.node(pod.node)
        backend = routing.get(c.routing)
        if hasattr(backend, "del_pod"):
            try:
                backend.del_pod(node, pod.name, pod.netns)
            except FastpathError:
                if not node_going:
                    raise
            self._delete_netns(pod.netns)
            cl.delete_pod(self.conn, pod.name)
            return pod
        try:
            _attach.detach(self.rtnl(node.netns), host_ifname=pod.host_ifname)
        except NotFound:
            pass  # the node's netns is gone: so is the veth
        self._delete_netns(pod.netns)
        self.ipam.release(cl.OWNER_PREFIX + pod.name)
        cl.delete_pod(self.conn, pod.name)
        return pod


def _create_netns(name: str) -> None:
    try:
        netns.create(name)
    except AlreadyExists as e:
        # not in our state, yet there: a leftover of a crash, which `down` sweeps
        raise AlreadyExists(f"netns {name} already exists but is not in the cluster state",
                            hint="fastpath down removes leftovers") from e


def kill_processes_in(ns_name: str, grace: float = 1.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process whose netns is `ns_name` (commands run with
    `fastpath exec`, servers): a netns with a live process outlives its name."""
    try:
        with netns.Netns.open(ns_name) as n:
            pids = [p for p in netns.pids_in(n) if p != os.getpid()]
    except (NotFound, UsageError, KernelError):
        return []
    proc.terminate(pids, grace)
    return pids
