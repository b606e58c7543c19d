"""The `agent` routing backend of the demo cluster (fastpath.podnet.routing): each node
netns runs its own `fastpath agent`, which learns everything through the datastore.

`up` writes desired state only: each node's registration (address, pod CIDR, ASN) and
the BGP settings. Then it starts one agent per node, inside the node's netns, with a
state directory of its own (`<state>/nodes/<node>`) and the shared datastore, exactly
as on separate machines: the agent renders and runs the node's BIRD, takes its lease
and serves CNI on its own socket. Pods are added as a runtime adds them, by a CNI ADD
to the node's agent from inside the node's netns.

Each agent runs under a supervisor (fastpath.agent.supervise), as systemd's `Restart=`
or a DaemonSet would keep it: an agent that dies comes back within seconds with its own
state dir, netns and command line, which names its state dir and instance, so an
operator can also restart it by hand from what `ps` shows.

`down` (teardown) stops the supervisors, then the agents and their BIRDs, and removes
the nodes from the datastore; deleting a node's netns would take the processes too, but
a SIGTERM first lets each close its sessions with a Cease.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fastpath import naming, state
from fastpath.agent import bgpview
from fastpath.bgp import bird, speakers, tor
from fastpath.bgp.config import external_protocol, peer_of_protocol, peer_protocol
from fastpath.bgp.control import BirdControl
from fastpath.cluster.etcd_server import EtcdCluster, Member, kill_recorded
from fastpath.cluster.kv import DatastoreError
from fastpath.cluster.objects import (
    DEFAULT_ASN,
    ROOT,
    BgpConfig,
    Node,
    Peer,
    Service,
    block_key,
    decode,
    encode,
    key,
)
from fastpath.cluster.store import (
    ClusterStore,
    default_file,
    default_url,
    forget_instance_datastore,
    record_instance_datastore,
    remove_default_file,
)
from fastpath.cluster.store import health as store_health
from fastpath.cni import client as cni_client
from fastpath.errors import FastpathError, UsageError
from fastpath.kernel import netns, proc
from fastpath.kernel.files import socket_path
from fastpath.kernel.libc import setns_raw
from fastpath.podnet import cluster as cl
from fastpath.podnet import routing, sysctl
from fastpath.podnet.rtnl import Rtnl
from fastpath.proxy import demo as proxydemo
from fastpath.proxy.master import PROGRAM_SOCKET
from fastpath.sockredir import loader

RTPROT_BIRD = 12
ETCD_MEMBERS = 3
READY_TIMEOUT = 40.0    # from every agent's first report until all are ready
STARTUP_CAP = 600.0     # a live agent that has not reported yet: at most this long
LEASE_TTL = 5           # short: a stopped demo node leaves the others' configs in seconds
NETWORK = "fp-demo"
CRASH_LOOP = 2          # restarts before ready: the agent cannot start, say why at once


def etcd_dir() -> Path:
    return state.state_dir() / "etcd" / naming.scope().rstrip("-")


def node_state_dir(node: str) -> Path:
    return state.state_dir() / "nodes" / naming.scope().rstrip("-") / node


def cni_socket(node: str) -> str:
    # where `fastpath down` sweeps agents' sockets, and short enough for sun_path
    return f"/run/fastpath/{naming.name(node)}-agent.sock"


def _env_for(node: str) -> dict[str, str]:
    # the node's own state dir and the instance; FASTPATH_BIRD and fault injection pass on
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTPATH_DATASTORE", "FASTPATH_AGENT_SOCKET")}
    env["FASTPATH_STATE_DIR"] = str(node_state_dir(node))
    env["FASTPATH_INSTANCE"] = naming.instance()
    return env


def _enter(fd: int) -> None:
    e = setns_raw(fd)
    if e:
        os.write(2, f"setns: {os.strerror(e)}\n".encode())
        os._exit(126)
    os.close(fd)   # joined: the supervisor need not hold the netns open


def _options_path() -> Path:
    """The demo's agent options that later commands (node add) must reuse."""
    return state.state_dir() / f"agents-{naming.scope().rstrip('-')}.json"


def _options() -> dict:
    try:
        return json.loads(_options_path().read_text())
    except (FileNotFoundError, ValueError):
        return {}


def read_node_status(node: str) -> dict | None:
    try:
        return json.loads((node_state_dir(node) / "agent" / f"{node}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def agent_pid(node: str) -> int | None:
    st = read_node_status(node)
    pid = int(st["pid"]) if st and st.get("pid") else None
    return pid if pid and proc.alive(pid) else None


def supervisor_pid(node: str) -> int | None:
    """The pid of the supervisor that keeps the node's agent running, if it runs."""
    try:
        pid = int((node_state_dir(node) / "supervisor.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if proc.alive(pid) else None


def _parent(pid: int) -> int | None:
    f = proc.stat_fields(pid)
    return int(f[1]) if f else None


def _restarts(node: str, since: int) -> int:
    """How often the node's supervisor restarted its agent after byte `since` of its log."""
    try:
        with open(node_state_dir(node) / "agent.log", "rb") as f:
            f.seek(since)
            return f.read().count(b"fastpath supervise: ")
    except FileNotFoundError:
        return 0


class AgentRouting:
    name = "agent"

    def __init__(self, route_reflector: str | None = None, bgp_hold: int | None = None,
                 datastore: str | None = None, tor: bool = False, proxy: bool = False) -> None:
        self.reflector = route_reflector
        self.hold = bgp_hold
        self.url = datastore
        self.tor = tor
        self.proxy = proxy or _options().get("proxy", False)
        self.started: dict[str, subprocess.Popen] = {}   # node -> its agent's supervisor
        self.log_at: dict[str, int] = {}   # node -> the agent log's size when started

    def _url(self) -> str:
        if self.url in (None, "sqlite", "etcd"):
            return default_url()
        return self.url

    # ---- the demo's etcd: 3 members in the underlay netns --------------------------------

    def _etcd(self, cluster) -> EtcdCluster:
        net = ipaddress.IPv4Network(cluster.underlay)
        hosts = list(net.hosts())
        return EtcdCluster(etcd_dir(), [Member(f"etcd{i}", str(hosts[-1 - i]), 2379, 2380)
                                        for i in range(ETCD_MEMBERS)],
                           netns=cluster.underlay_netns, token=naming.name("etcd"))

    def _start_etcd(self, cluster) -> None:
        etcd = self._etcd(cluster)
        net = ipaddress.IPv4Network(cluster.underlay)
        with Rtnl(cluster.underlay_netns) as u:
            br = u.index(cluster.bridge)
            for m in etcd.members:
                u.call(f"add {m.host} to {cluster.bridge}", "addr", "add", index=br, address=m.host,
                       prefixlen=net.prefixlen)
        etcd.start()
        record_instance_datastore(etcd.url, cluster.underlay_netns)

    # ---- the demo's top-of-rack router: FRR in the underlay netns ------------------------

    def tor_address(self, cluster) -> str:
        return str(list(ipaddress.IPv4Network(cluster.underlay).hosts())[-1 - ETCD_MEMBERS])

    def _start_tor(self, cluster, cs: ClusterStore) -> None:
        net = ipaddress.IPv4Network(cluster.underlay)
        addr = self.tor_address(cluster)
        with Rtnl(cluster.underlay_netns) as u:
            u.call(f"add {addr} to {cluster.bridge}", "addr", "add", index=u.index(cluster.bridge),
                   address=addr, prefixlen=net.prefixlen)
        sysctl.write(cluster.underlay_netns, {"net.ipv4.ip_forward": 1})
        tor.start(cluster.underlay_netns, tor.render(tor.DEFAULT_ASN, addr, str(net),
                                                     hold=self.hold or 3,
                                                     keepalive=max(1, (self.hold or 3) // 3)))
        cs.put_peer(Peer(name="tor", address=addr, asn=tor.DEFAULT_ASN))

    def _stop_etcd(self, cluster) -> None:
        if etcd_dir().exists():
            kill_recorded(etcd_dir())
            shutil.rmtree(etcd_dir(), ignore_errors=True)

    # ---- desired state and agents ------------------------------------------------------

    def asn_of(self, n) -> int:
        """With a ToR, an ASN per node (RFC 7938: eBGP between the nodes and the rack's
        router, a private ASN each); else the cluster's one ASN (iBGP mesh or reflector)."""
        tor_on = self.tor or _options().get("tor", False)
        return DEFAULT_ASN + n.index if tor_on else DEFAULT_ASN

    def _write_node(self, cs: ClusterStore, n) -> None:
        node = Node(name=n.name, address=f"{n.underlay_ip}/{n.underlay_prefixlen}", pod_cidr=n.pod_cidr,
                    router_id=n.router_id, asn=self.asn_of(n))
        node.validate()
        prev = cs.kv.get(key("nodes", n.name))
        if prev is not None and decode(Node, prev.value) != node:
            raise UsageError(f"node {n.name} is already in datastore {self._url()} with other "
                             "settings", hint="another cluster shares this datastore; fastpath down")
        cs.kv.put(key("nodes", n.name), encode(node))

    def start_agent(self, n) -> int:
        d = node_state_dir(n.name)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        # the command line names the state dir and instance: restarted by hand from what
        # `ps` shows, the agent is the same agent
        argv = [sys.executable, "-m", "fastpath", "agent", "--node", n.name, "--datastore", self._url(),
                "--address", f"{n.underlay_ip}/{n.underlay_prefixlen}", "--pod-cidr", n.pod_cidr,
                "--router-id", n.router_id, "--asn", str(self.asn_of(n)), "--socket", cni_socket(n.name),
                "--health", "127.0.0.1:9099", "--lease-ttl", str(LEASE_TTL),
                "--state-dir", str(d), "--instance", naming.instance()]
        if self.proxy:
            # one worker per node proxy, as `proxy demo`: its round robin is then visible
            argv += ["--proxy", "--proxy-workers", "1"]
        sup = [sys.executable, "-m", "fastpath.agent.supervise", "--pidfile", str(d / "supervisor.pid"),
               "--", *argv]
        fd = os.open(f"/run/netns/{n.netns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with open(d / "agent.log", "ab") as log:
                self.log_at[n.name] = log.tell()
                p = subprocess.Popen(sup, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     env=_env_for(n.name), start_new_session=True,
                                     preexec_fn=lambda: _enter(fd), pass_fds=(fd,))
        finally:
            os.close(fd)
        self.started[n.name] = p
        return p.pid

    def stop_agent(self, node: str, timeout: float = 5.0) -> None:
        """SIGTERM the node's supervisor (it passes the signal on and restarts nothing),
        then the agent and its BIRD (the agent leaves BIRD running on purpose: a restart
        must not withdraw routes)."""
        sup = supervisor_pid(node)
        if sup:
            proc.terminate([sup], timeout + 1)
        proc.terminate([p for p in (agent_pid(node), self._bird_pid(node)) if p], timeout)

    def _bird_pid(self, node: str) -> int | None:
        return bird.running_pid_at(bird.BirdPaths.under(node_state_dir(node), node))

    def wait_ready(self, cluster, names: list[str], timeout: float = READY_TIMEOUT) -> None:
        """Until every named agent reports ready and its node routes every other node's
        CIDR. `timeout` counts from the moment every agent has reported once: before
        that, a live agent is still starting (seconds on a slow machine, such as a TCG
        guest), and only STARTUP_CAP bounds the wait; an agent that exits fails at once."""
        start = time.monotonic()
        deadline = start + STARTUP_CAP
        reported = False
        pending = list(names)
        while time.monotonic() < deadline:
            pending = [n for n in names if not self._ready(cluster, n)]
            if not pending:
                return
            if not reported and all(self._reported(n) for n in names):
                reported = True
                deadline = min(deadline, time.monotonic() + timeout)
            dead = [n for n in pending if n in self.started and (
                self.started[n].poll() is not None
                or _restarts(n, self.log_at.get(n, 0)) >= CRASH_LOOP)]
            if dead:
                break
            time.sleep(0.1)
        why = []
        for n in pending:
            st = read_node_status(n)
            tail = _tail(node_state_dir(n) / "agent.log", skip="fastpath supervise: ")
            why.append(f"{n}: " + ("; ".join(st["problems"]) if st and st.get("problems")
                                   else "agent not running" if not agent_pid(n) else "routes missing")
                       + (f" (log: {tail})" if tail else ""))
        raise FastpathError(f"agents not ready after {time.monotonic() - start:.0f}s: " + " | ".join(why),
                            op="start node agents")

    def _ours(self, name: str, st: dict) -> bool:
        """Whether the report is from the agent that the supervisor we started runs."""
        return name not in self.started or _parent(int(st.get("pid") or 0)) == self.started[name].pid

    def _reported(self, name: str) -> bool:
        st = read_node_status(name)
        return st is not None and self._ours(name, st)

    def wait_restarted(self, cluster, name: str, old_pid: int, timeout: float) -> dict:
        """Until the supervisor has brought the node's agent back (a pid other than
        `old_pid`) and it is ready; its report."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = read_node_status(name)
            if st and st.get("pid") != old_pid and self._ready(cluster, name):
                return st
            time.sleep(0.1)
        raise FastpathError(f"the agent of node {name} did not come back within {timeout:.0f}s",
                            op="wait for the agent's supervisor")

    def _ready(self, cluster, name: str) -> bool:
        st = read_node_status(name)
        if not st or not st.get("ready") or not agent_pid(name):
            return False
        if not self._ours(name, st):
            return False   # the report of an agent before the one just started
        node = next(n for n in cluster.nodes if n.name == name)
        return not routing.route_report(cluster, node, RTPROT_BIRD)["missing"]

    # ---- the routing seam --------------------------------------------------------------

    def setup(self, cluster) -> None:
        bird.bird_binary()   # every agent runs BIRD: refuse before anything starts
        if self.reflector is not None and self.reflector not in {n.name for n in cluster.nodes}:
            raise UsageError(f"--route-reflector {self.reflector}: no such node")
        if self.url not in (None, "sqlite", "etcd") and not self.url.startswith(("sqlite://", "etcd://")):
            raise UsageError(f"--datastore {self.url!r}: use sqlite, etcd, or a datastore URL")
        if self.url == "etcd":
            self._start_etcd(cluster)
        elif self.url is not None and self.url != "sqlite":
            record_instance_datastore(self.url, None)
        if self.proxy or self.tor:
            # what later commands (node add) must start their agents with
            _options_path().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _options_path().write_text(json.dumps({"proxy": self.proxy, "tor": self.tor}))
        if self.tor and self.reflector:
            raise UsageError("--tor and --route-reflector: with a ToR the nodes peer only with it")
        with ClusterStore.open(self._url()) as cs:
            # with a ToR, each node peers with the router alone (the usual rack design)
            cs.set_bgp(BgpConfig(mesh=not self.tor, reflectors=(self.reflector,) if self.reflector else (),
                                 hold=self.hold if self.hold is not None else BgpConfig.hold))
            if self.tor:
                self._start_tor(cluster, cs)
            for n in cluster.nodes:
                self._write_node(cs, n)
        for n in cluster.nodes:
            self.start_agent(n)
        self.wait_ready(cluster, [n.name for n in cluster.nodes])

    def node_added(self, cluster, node) -> None:
        with ClusterStore.open(self._url()) as cs:
            self._write_node(cs, node)
        if loader.is_enabled():
            # the demo's nodes share this kernel: every node's pods are local to every other
            loader.set_local([ipaddress.ip_network(node.pod_cidr),
                              ipaddress.ip_network(f"{node.underlay_ip}/32")], [])
        self.start_agent(node)
        self.wait_ready(cluster, [n.name for n in cluster.nodes])

    def node_removed(self, cluster, node) -> None:
        self.stop_agent(node.name)
        self._forget_node(node.name)
        if loader.is_enabled():
            # its pod CIDR and address, and the /32s its agent kept there
            block = ipaddress.ip_network(node.pod_cidr)
            gone = [n for n in loader.local_nets()
                    if n == block or n == ipaddress.ip_network(f"{node.underlay_ip}/32")
                    or (n.version == 4 and n.subnet_of(block))]
            loader.set_local([], gone)

    def check_node_removal(self, cluster, node) -> None:
        if node.name == self.reflector:
            raise UsageError(f"node {node.name} is the route reflector")

    def _forget_node(self, name: str) -> None:
        try:
            with ClusterStore.open(self._url()) as cs:
                v = cs.view()
                a = v.alive.get(name)
                if a is not None:
                    cs.kv.revoke(a.lease)
                for (node, pod) in list(v.pods):
                    if node == name:
                        cs.kv.delete(key("pods", node, pod))
                for cidr in v.node_blocks(name):
                    cs.kv.delete(block_key(cidr))
                cs.kv.delete(key("nodes", name))
        except DatastoreError:
            pass  # down goes on: the processes and netns matter more than the records
        # sockets whose long paths were mapped to short ones (kernel.files.socket_path)
        d = node_state_dir(name)
        for long in (d / "bgp" / naming.scope().rstrip("-") / f"{name}.ctl",
                     d / "proxy" / naming.name("proxy", name) / PROGRAM_SOCKET):
            socket_path(long).unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)

    def teardown(self, cluster) -> None:
        for n in cluster.nodes:
            self.stop_agent(n.name)
        for n in cluster.nodes:
            self._forget_node(n.name)
        tor.stop()
        owned = self._url() == f"sqlite://{default_file()}"
        if owned:
            remove_default_file()   # the demo's own datastore: nothing of it stays
        else:
            try:
                with ClusterStore.open(self._url()) as cs:
                    cs.kv.delete(ROOT + "config/bgp")
                    cs.del_peer("tor")
            except DatastoreError:
                pass
        self._stop_etcd(cluster)
        forget_instance_datastore()
        _options_path().unlink(missing_ok=True)

    def explain_missing_route(self, cluster, node, peer, dst) -> str | None:
        if peer is None or peer.name == node.name:
            return None
        st = read_node_status(node.name)
        if st is None or not agent_pid(node.name):
            return f"the agent of node {node.name} is not running"
        down = [s for s in st.get("sessions", []) if not s["established"]]
        if down:
            return f"BGP sessions of node {node.name} down: {', '.join(s['protocol'] for s in down)}"
        if not st.get("ready"):
            return f"the agent of node {node.name} is not ready: {'; '.join(st.get('problems', []))}"
        return None

    def status(self, cluster, only: str | None = None) -> dict:
        """Per node: its routes, its agent (running, ready, and since when a dead one last
        reported), its BIRD, and its BGP sessions as BIRD itself has them now, each
        against the sessions the datastore says it should have (a session BIRD lacks is
        "missing"; the agent's report is not trusted for this, since a dead agent's is
        stale)."""
        view = None
        try:
            with ClusterStore.open(self._url()) as cs:
                view = cs.view()
        except DatastoreError:
            pass   # the sessions BIRD has are shown as they are
        out: dict[str, Any] = {}
        for n in cluster.nodes:
            if only is not None and n.name != only:
                continue
            st = read_node_status(n.name) or {}
            pid = agent_pid(n.name)
            out[n.name] = {**routing.route_report(cluster, n, RTPROT_BIRD),
                           "agent_pid": pid, "ready": bool(pid) and st.get("ready", False),
                           "reported": st.get("time"),
                           "supervisor_pid": supervisor_pid(n.name),
                           "problems": st.get("problems", []) if pid else [],
                           "bird_pid": self._bird_pid(n.name),
                           "sessions": self._sessions(n.name, view)}
        return out

    # ---- the `fastpath bgp` verbs (bgp/commands.py), on the agents' BIRDs ----------------

    def bgp_sessions(self, cluster, node: str | None = None) -> dict:
        st = self.status(cluster, only=node)
        cfg = BgpConfig()
        try:
            with ClusterStore.open(self._url()) as cs:
                cfg = cs.view().bgp
        except DatastoreError:
            pass
        topo = (f"route reflector {cfg.reflectors[0]}" if cfg.reflectors
                else "full mesh" if cfg.mesh else "external peers only")
        return {"topology": topo, "reflector": cfg.reflectors[0] if cfg.reflectors else None,
                "hold_s": cfg.hold, "nodes": {k: v["sessions"] for k, v in st.items()}}

    def bgp_start(self, cluster, node: str | None = None, timeout: float = 15.0) -> dict:
        """Each agent starts its node's BIRD again by itself when it finds it gone (every
        STATUS_EVERY): wait for that, and name the nodes whose agent is not there to."""
        names = [n.name for n in cluster.nodes if node is None or n.name == node]
        down = [n for n in names if not self._bird_pid(n)]
        not_started = {n: "its agent is not running (it starts BIRD when it is back)"
                       for n in down if not agent_pid(n)}
        waiting = [n for n in down if n not in not_started]
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            time.sleep(0.1)
            waiting = [n for n in waiting if not self._bird_pid(n)]
        not_started.update({n: f"its agent did not start BIRD within {timeout:g}s" for n in waiting})
        t0 = time.monotonic()
        started = [n for n in down if n not in not_started]
        pending = list(names)
        while started and pending and time.monotonic() < deadline:
            pending = [n for n in names if not self._ready(cluster, n)]
            time.sleep(0.1)
        return {"started": started, "not_started": not_started,
                "converged_s": round(time.monotonic() - t0, 3) if started and not pending else None}

    def bgp_config(self, cluster, node: str) -> str:
        """The config the node's BIRD runs: what its agent rendered from the datastore."""
        conf = bird.BirdPaths.under(node_state_dir(node), node).conf
        try:
            return conf.read_text()
        except FileNotFoundError:
            raise FastpathError(f"node {node} has no BIRD config yet (is its agent running?)",
                                op=f"read {conf}") from None

    def datastore_health(self) -> dict:
        """Every member of the cluster's datastore, answering or not."""
        return store_health(self._url())

    def _sessions(self, name: str, view) -> list[dict]:
        expected: list[str] | None = None
        if view is not None and name in view.nodes:
            mesh = bgpview.mesh_for(view, view.nodes[name])
            expected = [peer_protocol(p.name) for p, _ in mesh.peers(name)]
            expected += [external_protocol(p.name) for p in mesh.external_of(name)]
        paths = bird.BirdPaths.under(node_state_dir(name), name)
        protos = None
        if bird.running_pid_at(paths):
            try:
                with BirdControl(str(paths.ctl)) as ctl:
                    protos = {p.name: p for p in ctl.protocols() if p.proto == "BGP"}
            except FastpathError:
                protos = None
        names = expected if expected is not None else sorted(protos or ())
        out = []
        for proto in names:
            peer = (peer_of_protocol(proto) or proto).removeprefix("peer:")
            p = (protos or {}).get(proto)
            if p is None:
                out.append({"peer": peer, "state": "bird down" if protos is None else "missing",
                            "established": False, "uptime_s": None, "imported": None,
                            "exported": None, "last_error": None})
                continue
            s = speakers.session_of(name, p).to_dict()
            out.append({**s, "peer": peer})
        return out

    # ---- pods, through the node's agent as a runtime would --------------------------------

    def add_pod(self, node, pod_name: str, pod_netns: str) -> tuple[str, str]:
        """CNI ADD to the node's agent from inside the node netns; (ip, host veth)."""
        rc, out = self._cni(node, "ADD", pod_name, pod_netns)
        doc = json.loads(out)
        if rc != 0:
            raise FastpathError(f"CNI ADD of pod {pod_name} on node {node.name}: {doc.get('msg')}"
                                + (f" ({doc['details']})" if doc.get("details") else ""),
                                op=f"add pod {pod_name}")
        ip = doc["ips"][0]["address"].split("/")[0]
        host = next(i["name"] for i in doc["interfaces"] if not i.get("sandbox"))
        return ip, host

    def del_pod(self, node, pod_name: str, pod_netns: str) -> None:
        rc, out = self._cni(node, "DEL", pod_name, pod_netns)
        if rc != 0:
            raise FastpathError(f"CNI DEL of pod {pod_name} on node {node.name}: "
                                f"{out.decode(errors='replace').strip()}", op=f"delete pod {pod_name}")

    def _cni(self, node, command: str, pod_name: str, pod_netns: str) -> tuple[int, bytes]:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": pod_name,
               "CNI_NETNS": f"/run/netns/{pod_netns}" if netns.exists(pod_netns) else "",
               "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
               "CNI_ARGS": f"K8S_POD_NAME={pod_name}"}
        conf = json.dumps({"cniVersion": "1.1.0", "name": NETWORK, "type": "fastpath",
                           "agentSocket": cni_socket(node.name)}).encode()
        with netns.Netns.open(node.netns) as ns, netns.entered(ns):
            sock = cni_client.connect_agent(cni_socket(node.name))
            if sock is None:
                raise FastpathError(f"the agent of node {node.name} does not answer on "
                                    f"{cni_socket(node.name)}", op=f"CNI {command} {pod_name}")
            try:
                return cni_client.call_agent(sock, env, conf)
            finally:
                sock.close()


def _tail(path: Path, skip: str | None = None) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines()
                 if x.strip() and not (skip and x.startswith(skip))]
    except FileNotFoundError:
        return ""
    return lines[-1][-200:] if lines else ""



def proxy_up(vip: str = proxydemo.DEFAULT_VIP, port: int = proxydemo.DEFAULT_PORT,
             timeout: float = 20.0) -> dict:
    """`up --proxy` on agents: a backend in every pod, one service in the datastore whose
    backends are every pod; each node's agent programs its own proxy. Returns what
    `fastpath proxy demo` returns, so both print alike."""
    c = cl.require()
    wrap = proxydemo.accel_wrap()
    backends, started = proxydemo.start_backends(c, wrap)
    with ClusterStore.open() as cs:
        cs.put_service(Service(name="demo", listen=f"{vip}:{port}", pods="",
                               port=proxydemo.BACKEND_PORT, stamp=time.time()), replace=True)
    want = sorted(f"{p.ip}:{proxydemo.BACKEND_PORT}" for p in backends)
    deadline = time.monotonic() + timeout
    pending = [n.name for n in c.nodes]
    while pending and time.monotonic() < deadline:
        pending = [n for n in pending
                   if sorted(((read_node_status(n) or {}).get("services", {}).get("demo") or {})
                             .get("backends", [])) != want
                   or not (read_node_status(n) or {}).get("proxy_pid")]
        time.sleep(0.1)
    if pending:
        raise FastpathError(f"agents of {', '.join(pending)} did not program the service",
                            op="up --proxy")
    started += [f"proxy {n.name} {vip}:{port} (programmed by its agent)" for n in c.nodes]
    time.sleep(0.5)  # first health checks
    reached = proxydemo.probe_all(c, vip, port, wrap, backends)
    return {"vip": f"{vip}:{port}", "started": started, "probes": reached, "accel": bool(wrap),
            "ok": all(r["ok"] for r in reached)}
