"""`fastpath agent --node NAME`: the node daemon.

Start: reach the datastore (one line per failure, retried with backoff, nothing on the
node touched meanwhile); register the node under a lease (refused before anything is
written if it clashes); take the pod CIDR (configured, or a block won by compare-and-swap);
serve CNI; then reconcile and follow the watch.

Reconcile is idempotent and reads only the datastore and this node: BIRD's config
(started if absent, reconfigured in place if it changed, left alone otherwise), the
service table, accel's local map. It runs on every change and after every restart.

Restarts are quiet. The lease id is kept in the node's state, so a restarted agent
renews the same lease (no other node sees the node go); BIRD is found by its pid file
and reconfigured, never restarted; the agent never revokes its lease or stops BIRD on
the way out. An agent that stays dead past its lease TTL marks its node's control plane
dead (status, metrics) and changes nothing in the data plane: peering and routes follow
registration, and services keep its pods for `dead_node_grace` (agent/deadnodes.py). A
node leaves the cluster by `fastpath node del`.

A control-plane fault never becomes a data-plane outage, and never ends the agent:
- the datastore goes away: the data plane stays as it is; the agent reports not-ready and
  resumes the watch where it stopped when the datastore is back;
- a reader of the service table stops reporting: the publish stays pending, readiness
  names the reader, and a reader hung beyond a bound gets a fresh table
  (agent/servicetable.py);
- any step of a reconcile fails: that step's problem is reported, the others still apply,
  and the whole view is reconciled again after a back-off.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from fastpath import naming, state
from fastpath.agent import accelview, bgpview
from fastpath.agent import proxy as nodeproxy
from fastpath.agent.config import AgentConfig
from fastpath.agent.deadnodes import DeadNodes
from fastpath.agent.health import HealthServer
from fastpath.agent.metrics import Metrics
from fastpath.agent.servicetable import ServiceTable
from fastpath.bgp import bird
from fastpath.bgp.config import render
from fastpath.bgp.control import BirdControl
from fastpath.bgp.model import validate as validate_mesh
from fastpath.cluster.kv import DatastoreError, Unavailable
from fastpath.cluster.mirror import Mirror
from fastpath.cluster.objects import ROOT, Alive, Conflict, Node, Pod, View, check_node
from fastpath.cluster.store import ClusterStore, default_url
from fastpath.cni import agent as cni_agent
from fastpath.cni import wire
from fastpath.errors import FastpathError, UsageError
from fastpath.kernel import proc
from fastpath.kernel.files import atomic_write
from fastpath.podnet.rtnl import Rtnl
from fastpath.sockredir import loader

log = logging.getLogger("fastpath.agent")
BACKOFF = (0.5, 1, 2, 4, 8)
STATUS_EVERY = 2.0
RETRY_AFTER = 1.0   # seconds before a reconcile with a failed step runs again
VIP_LINGER = 2.0    # seconds a deleted service's VIP stays even with no connection reported
SERVICES_KEY = b"services"


def status_path(node: str) -> Path:
    return state.state_dir() / "agent" / f"{node}.json"


def read_status(node: str) -> dict | None:
    try:
        return json.loads(status_path(node).read_text())
    except (FileNotFoundError, ValueError):
        return None


def only_local_node() -> str | None:
    """The node whose agent keeps its status in this state dir, when there is exactly one."""
    names = sorted(p.stem for p in (state.state_dir() / "agent").glob("*.json"))
    return names[0] if len(names) == 1 else None


def underlay_address() -> str:
    """The node's first global IPv4 address with its prefix: the underlay when none is
    configured (a machine with one uplink)."""
    with Rtnl(None) as r:
        for a in r.ipr.get_addr(family=2):
            ip = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            a4 = ipaddress.IPv4Address(ip) if ip else None
            if a4 and not a4.is_loopback and not a4.is_link_local:
                return f"{ip}/{a['prefixlen']}"
    raise FastpathError("this node has no IPv4 address to use as its underlay address",
                        op="find the underlay address", hint="give --address ADDRESS/PREFIX")


class NodeAgent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.url = cfg.datastore or default_url()
        self.metrics = Metrics(cfg.node)
        self.metrics.info.labels(cfg.node, self.url.split("://")[0]).set(1)
        self.stopping = threading.Event()
        self.beat = time.monotonic()
        self.store: ClusterStore | None = None
        self.mirror: Mirror | None = None
        self.lease = 0
        self.node: Node | None = None
        self.datastore_ok = False
        self.programmed = False
        self.bird_error: str | None = None
        self.sessions: list[dict] = []
        self.services: dict[str, dict] = {}
        self.accel_local: set[str] | None = None
        self.proxy_pid: int | None = None
        self.proxy_error: str | None = None
        self.table: ServiceTable | None = None
        self.handed = 0                # the table generation the proxy was handed
        self.draining: dict[str, int] = {}   # VIP of no service -> connections still on it
        self.retired: dict[str, float] = {}  # VIP -> when its service went
        self.dead = DeadNodes(cfg.dead_node_grace)
        self.gone: set[str] = set()    # nodes dead beyond the grace
        self.step_errors: dict[str, str] = {}   # reconcile step -> why it failed last
        self.retry_at: float | None = None
        self.health: HealthServer | None = None
        self.cni: cni_agent.Agent | None = None
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()   # the store is shared by the loop, keepalive and CNI
        self.started = time.time()

    # ---- start ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Until the datastore answers: one line per failure, growing waits."""
        attempt = 0
        while not self.stopping.is_set():
            try:
                self.store = ClusterStore.open(self.url)
                self.store.kv.revision()
                self.datastore_ok = True
                self.metrics.datastore_up.set(1)
                return
            except Unavailable as e:
                if self.store is not None:
                    self.store.close()
                    self.store = None
                wait = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                print(f"fastpath agent: datastore {self.url} unreachable ({e.msg}); retrying in "
                      f"{wait:g}s; the node's data plane is left as it is", file=sys.stderr, flush=True)
                attempt += 1
                self.stopping.wait(wait)
        raise KeyboardInterrupt

    def _saved_lease(self) -> int:
        st = read_status(self.cfg.node) or {}
        return int(st.get("lease") or 0) if st.get("datastore") == self.url else 0

    def register(self) -> None:
        assert self.store is not None
        kv = self.store.kv
        boot = proc.boot_id()

        def holder_dead(a: Alive) -> bool:
            return a.held_by_dead_process(boot, proc.runs)

        # The lease to renew: the one this state dir recorded, else that of a previous
        # agent of this node that is known dead on this machine (restarted by hand, without
        # its state): renewing it keeps the node alive for everyone, with no churn.
        lease = self._saved_lease()
        prior = self.store.view().alive.get(self.cfg.node)
        if not lease and prior is not None and holder_dead(prior):
            lease = prior.lease
            log.info("taking over lease %x of agent pid %d, which is no longer running",
                     lease, prior.pid)
        if lease and kv.keepalive(lease) <= 0:
            lease = 0
        fresh = not lease
        address = self.cfg.address or underlay_address()
        try:
            # every clash is refused before anything is written (a granted lease writes
            # nothing visible and is revoked on refusal)
            if fresh:
                lease = kv.grant(self.cfg.lease_ttl)
            view = self.store.view()
            wanted = self.cfg.node_object(address, self.cfg.pod_cidr)
            check_node(view, wanted, own_lease=lease, holder_dead=holder_dead)
            cidr = self.cfg.pod_cidr
            if cidr is None:
                prev = view.nodes.get(self.cfg.node)
                held = view.node_blocks(self.cfg.node)
                cidr = prev.pod_cidr if prev and prev.pod_cidr in held else None
                cidr = cidr or self.store.allocate_block(self.cfg.node, self.cfg.pool)
            self.node = self.store.register(self.cfg.node_object(address, cidr), lease)
        except BaseException:
            if fresh and lease:
                kv.revoke(lease)
            raise
        self.lease = lease
        log.info("node %s registered: %s, pods %s, lease %x%s", self.node.name, self.node.address,
                 self.node.pod_cidr, lease, "" if fresh else " (renewed: a restart)")

    def keepalive_loop(self) -> None:
        period = max(1.0, self.cfg.lease_ttl / 3)
        while not self.stopping.wait(period):
            try:
                with self.lock:
                    assert self.store is not None
                    ttl = self.store.kv.keepalive(self.lease)
                    if ttl <= 0:  # expired while the datastore was away: register again
                        self.metrics.lease_renewals.labels("expired").inc()
                        self.lease = self.store.kv.grant(self.cfg.lease_ttl)
                        assert self.node is not None
                        self.store.register(self.node, self.lease)
                        log.warning("lease had expired; registered again with lease %x", self.lease)
                        self._write_status()
                    else:
                        self.metrics.lease_renewals.labels("ok").inc()
            except (DatastoreError, Conflict) as e:
                self.metrics.lease_renewals.labels("error").inc()
                log.warning("lease renewal failed: %s", e)

    # ---- CNI -----------------------------------------------------------------------------

    def cni_prepare(self, stdin: bytes) -> bytes:
        """A network config without podCIDR or ipam gets this node's pod CIDR."""
        try:
            doc = json.loads(stdin)
        except ValueError:
            return stdin  # the plugin answers with the spec's decode error
        if isinstance(doc, dict) and "podCIDR" not in doc and "ipam" not in doc and self.node:
            doc["podCIDR"] = self.node.pod_cidr
            return json.dumps(doc).encode()
        return stdin

    def cni_done(self, env: dict, rc: int, out: bytes) -> None:
        cmd = env.get("CNI_COMMAND", "?")
        self.metrics.cni.labels(cmd, "ok" if rc == 0 else "error").inc()
        if rc != 0 or cmd not in ("ADD", "DEL") or self.node is None:
            return
        args = dict(kv.split("=", 1) for kv in env.get("CNI_ARGS", "").split(";") if "=" in kv)
        name = args.get("K8S_POD_NAME") or "c-" + env.get("CNI_CONTAINERID", "?")[:12]
        labels = {k[len("FP_LABEL_"):]: v for k, v in args.items() if k.startswith("FP_LABEL_")}
        with self.lock:
            assert self.store is not None
            try:
                if cmd == "ADD":
                    ips = json.loads(out).get("ips") or []
                    ip = ips[0]["address"].split("/")[0] if ips else None
                    if ip:
                        self.store.put_pod(Pod(node=self.node.name, name=name, ip=ip, labels=labels,
                                               stamp=time.time()))
                else:
                    self.store.del_pod(self.node.name, name)
            except DatastoreError as e:
                log.warning("could not record pod %s in the datastore: %s", name, e)

    # ---- reconcile -----------------------------------------------------------------------

    def view(self) -> View:
        assert self.mirror is not None
        return View.of(self.mirror.items())

    def _step(self, name: str, fn, view: View) -> bool:
        """One reconcile step; a failure is reported as that step's problem and never
        leaves the loop (a daemon does not exit because one of its duties failed)."""
        try:
            ok = fn(view) is not False
        except Exception as e:  # noqa: BLE001 - every failure becomes a reported problem
            log.exception("%s not programmed", name)
            self.step_errors[name] = str(e) or type(e).__name__
            return False
        self.step_errors.pop(name, None)
        return ok

    def note_liveness(self, view: View) -> None:
        """Which nodes' agents are dead, and which of those are gone for services."""
        assert self.node is not None
        now = time.time()
        self.dead.observe(view, now, me=self.node.name)
        self.gone = self.dead.gone(now)
        dead = len(self.dead.since)
        self.metrics.nodes.labels("alive").set(len(view.nodes) - dead)
        self.metrics.nodes.labels("dead").set(dead - len(self.gone))
        self.metrics.nodes.labels("gone").set(len(self.gone))

    def reconcile(self, changed: set[str]) -> None:
        t0 = time.time()
        view = self.view()
        self.note_liveness(view)
        ok = True
        if self.cfg.bird:
            ok &= self._step("BIRD", self.apply_bird, view)
        ok &= self._step("services", self.apply_services, view)
        if self.cfg.accel:
            ok &= self._step("accel", self.apply_accel, view)
        self.programmed = ok
        self.retry_at = None if ok else time.monotonic() + RETRY_AFTER
        self.metrics.reconciles.labels("ok" if ok else "error").inc()
        done = time.time()
        for k in changed:
            kind, _, _rest = k[len(ROOT):].partition("/")
            if kind == "services" and k in (self.mirror.data if self.mirror else {}):
                svc = view.services.get(_rest)
                if svc and svc.stamp:
                    self.metrics.programming.labels("service").observe(max(0.0, done - svc.stamp))
            elif kind == "pods":
                node, _, name = _rest.partition("/")
                pod = view.pods.get((node, name))
                if pod and pod.stamp:
                    self.metrics.programming.labels("pod").observe(max(0.0, done - pod.stamp))
        log.debug("reconciled %d changes in %.1f ms", len(changed), (time.time() - t0) * 1000)

    def apply_bird(self, view: View) -> bool:
        assert self.node is not None
        mesh = bgpview.mesh_for(view, self.node)
        try:
            validate_mesh(mesh)
            text = render(mesh, self.node.name, str(bird.BirdPaths.of(self.node.name).log))
            if bird.running_pid(self.node.name):
                answer = bird.reconfigure(self.node.name, text)
                if not answer.startswith("Nothing"):
                    log.info("BIRD reconfigured: %s", answer)
            else:
                bird.start(self.node.name, None, text)
                log.info("BIRD started")
            self.bird_error = None
            return True
        except FastpathError as e:
            self.bird_error = str(e)
            log.error("BIRD not programmed: %s", e)
            return False

    def apply_services(self, view: View) -> None:
        svcs = {name: {"listen": s.listen, "backends": view.backends(s, self.gone)}
                for name, s in sorted(view.services.items())}
        if svcs == self.services and self.table is not None:
            self.ensure_proxy()
            return
        if self.table is None:
            self.table = ServiceTable(SERVICES_KEY)
        # new VIPs on the loopback before the proxy reads the table, or its listener's bind
        # would fail; the ones that go leave after it (sync_vips, once drained)
        self.sync_vips(also=svcs)
        if not self.table.set(json.dumps(svcs).encode()):
            self.metrics.table_stalls.inc()
        self.ensure_proxy()
        self.retire_vips(self.services, svcs)
        self.services = svcs
        self.sync_vips()
        self.metrics.services.set(len(svcs))
        self.metrics.backends.clear()
        for name, s in svcs.items():
            self.metrics.backends.labels(name).set(len(s["backends"]))

    def sync_vips(self, also: dict | None = None) -> None:
        """The loopback holds every service's VIP, and the VIP of a deleted service until
        the connections the proxy still carries on it have ended (they drain, then the
        proxy resets what is left at its drain timeout): only then does it go, so no client
        is left with packets that have no route. `also`: services about to be published,
        whose VIPs must be there first."""
        if not self.cfg.proxy:
            return
        want = {str(s["listen"]).rsplit(":", 1)[0]
                for s in [*self.services.values(), *(also or {}).values()]}
        used = nodeproxy.vips_in_use(self.cfg.node)
        now = time.monotonic()
        # workers report their connections twice a second: a VIP whose service just went
        # is kept a little while regardless, so a connection not reported yet keeps it too
        for ip in list(self.retired):
            if ip in want or (now - self.retired[ip] >= VIP_LINGER and ip not in used):
                del self.retired[ip]
        draining = {ip: n for ip, n in sorted(used.items()) if ip not in want}
        draining.update({ip: used.get(ip, 0) for ip in self.retired if ip not in draining})
        if draining != self.draining:
            if draining:
                log.info("VIPs kept while their connections drain: %s",
                         ", ".join(f"{ip} ({n})" for ip, n in draining.items()))
            self.draining = draining
        try:
            nodeproxy.sync_vips(want | set(draining))
        except FastpathError as e:
            log.error("service VIPs not updated: %s", e)

    def retire_vips(self, old: dict, new: dict) -> None:
        gone = {str(s["listen"]).rsplit(":", 1)[0] for s in old.values()} - \
            {str(s["listen"]).rsplit(":", 1)[0] for s in new.values()}
        now = time.monotonic()
        for ip in gone:
            self.retired.setdefault(ip, now)

    def served(self) -> dict[str, str]:
        """Per service, whether this node serves it: a node without its proxy does not,
        and says so instead of listing the service as programmed."""
        if not self.cfg.proxy:
            return {n: "not served: no proxy on this node" for n in self.services}
        if self.proxy_pid is None or self.handed != (self.table.generation if self.table else 0):
            return {n: f"not served: {self.proxy_error or 'the node proxy is not programmed yet'}"
                    for n in self.services}
        return {n: "served" for n in self.services}

    def ensure_proxy(self) -> None:
        """With --proxy: a master of this node that reads our table (started, or adopted
        after a restart of ours, or started again after it died)."""
        if not self.cfg.proxy or self.table is None:
            return
        if not self.services and self.proxy_pid is None:
            return   # started with the first service (in accel's cgroup, if accel is on by then)
        name = self.cfg.node
        pid = nodeproxy.master_pid(name)
        if pid is not None and pid == self.proxy_pid and self.handed == self.table.generation:
            return
        try:
            if pid is None:
                # in accel's cgroup when accel is on: the proxy's same-node sockets are then
                # redirected too, and it copies on exactly those (proxy.worker's accel check)
                wrap = [sys.executable, "-m", "fastpath", "accel", "run", "--"] \
                    if self.cfg.accel and loader.is_enabled() else []
                pid = nodeproxy.start_master(name, self.cfg.proxy_workers, wrap,
                                             self.cfg.proxy_drain_timeout)
                log.info("node proxy started (pid %d)", pid)
            else:
                log.info("node proxy adopted (pid %d)", pid)
            nodeproxy.hand_over(name, self.table.table)
            self.proxy_pid = pid
            self.handed = self.table.generation
            self.proxy_error = None
        except FastpathError as e:
            self.proxy_error = str(e)
            log.error("node proxy not programmed: %s", e)

    def apply_accel(self, view: View) -> None:
        """accel's local map: this node's address and its pods' addresses, reconciled
        against what the map holds (agent/accelview.py)."""
        assert self.node is not None
        if not loader.is_enabled():
            self.accel_local = None
            return
        want = accelview.wanted(self.node.ip, [p.ip for (n, _), p in view.pods.items()
                                               if n == self.node.name])
        try:
            add, remove = accelview.plan(loader.local_nets(), self.node.ip, self.node.pod_cidr, want)
            if add or remove:
                loader.set_local(add, remove)
                log.info("accel local set: added %s, removed %s", [str(n) for n in add] or "-",
                         [str(n) for n in remove] or "-")
            self.accel_local = {str(n) for n in want}
        except FastpathError as e:
            log.error("accel local map not updated: %s", e)

    # ---- readiness and status ------------------------------------------------------------

    def refresh_sessions(self) -> None:
        if not self.cfg.bird or self.node is None:
            return
        paths = bird.BirdPaths.of(self.node.name)
        try:
            with BirdControl(str(paths.ctl)) as ctl:
                protos = ctl.protocols()
        except FastpathError as e:
            self.sessions = []
            self.bird_error = self.bird_error or f"BIRD control socket: {e}"
            return
        self.sessions = [{"protocol": p.name, "state": p.state, "info": p.info,
                          "since": p.since.isoformat() if p.since else None,
                          "established": p.established}
                         for p in protos if p.proto == "BGP"]
        counts: dict[str, int] = {}
        for s in self.sessions:
            k = "established" if s["established"] else "down"
            counts[k] = counts.get(k, 0) + 1
        for k in ("established", "down"):
            self.metrics.sessions.labels(k).set(counts.get(k, 0))

    def problems(self) -> list[str]:
        out = []
        if not self.datastore_ok:
            out.append(f"datastore {self.url} unreachable")
        if self.node is None:
            out.append("node not registered")
        if self.cfg.bird:
            if self.bird_error:
                out.append(f"BIRD: {self.bird_error}")
            down = [s["protocol"] for s in self.sessions if not s["established"]]
            if down:
                out.append(f"BGP sessions not established: {', '.join(down)}")
        for step, why in sorted(self.step_errors.items()):
            out.append(f"{step}: {why}")
        table = self.table.problem() if self.table is not None else None
        if table:
            out.append(table)
        if not self.programmed and not self.step_errors:
            out.append("tables not programmed yet")
        if self.cfg.proxy and self.services and (self.proxy_error or self.proxy_pid is None):
            out.append(f"node proxy: {self.proxy_error or 'not running'}")
        return out

    def _write_status(self) -> None:
        problems = self.problems()
        self.metrics.ready.set(0 if problems else 1)
        doc = {"node": self.cfg.node, "pid": os.getpid(), "datastore": self.url, "lease": self.lease,
               "lease_ttl": self.cfg.lease_ttl, "address": self.node.address if self.node else None,
               "pod_cidr": self.node.pod_cidr if self.node else None,
               "revision": self.mirror.revision if self.mirror else 0, "ready": not problems,
               "problems": problems, "sessions": self.sessions, "services": self.services,
               "served": self.served(), "draining": self.draining,
               "health": self.cfg.health if self.health else None,
               "cni_socket": self.cni.path if self.cni else None, "proxy_pid": self.proxy_pid,
               "dead_nodes": self.dead.report(time.time()),
               "dead_node_grace": self.cfg.dead_node_grace,
               "table": {"generation": self.table.generation, "replaced": self.table.replaced,
                         "pending": self.table.pending is not None} if self.table else None,
               "started": self.started, "time": time.time()}
        path = status_path(self.cfg.node)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, json.dumps(doc, indent=1))

    # ---- the loop ------------------------------------------------------------------------

    def start_servers(self) -> None:
        addr = self.cfg.health_addr()
        if addr is not None:
            self.health = HealthServer(addr, self.metrics, self.problems, lambda: self.beat)
            self.health.start()
        self.cni = cni_agent.Agent(self.cfg.socket or wire.socket_path(), prepare=self.cni_prepare,
                                   done=self.cni_done)
        self.cni.start()
        t = threading.Thread(target=self.cni.serve_forever, name="fp-agent-cni", daemon=True)
        t.start()
        k = threading.Thread(target=self.keepalive_loop, name="fp-agent-lease", daemon=True)
        k.start()
        self.threads += [t, k]

    def follow(self) -> None:
        assert self.store is not None
        self.mirror = Mirror(self.store.kv, ROOT)
        attempt = 0
        changed: set[str] | None = None
        next_status = 0.0
        while not self.stopping.is_set():
            self.beat = time.monotonic()
            try:
                if changed is None:
                    with self.lock:
                        changed = self.mirror.sync() | {"*"}
                else:
                    changed = self.mirror.follow(0.25)
                if time.monotonic() >= next_status:
                    # a watch on a member cut off from quorum stays open and silent: only a
                    # linearizable read tells whether the datastore can still answer
                    with self.lock:
                        self.store.kv.revision()
                if not self.datastore_ok:
                    log.info("datastore %s reachable again (revision %d)", self.url, self.mirror.revision)
                self.datastore_ok = True
                self.metrics.datastore_up.set(1)
                attempt = 0
            except Unavailable as e:
                if self.datastore_ok:
                    log.error("datastore %s unreachable: %s; the data plane stays as it is",
                              self.url, e.msg)
                self.datastore_ok = False
                self.metrics.datastore_up.set(0)
                self.mirror.close()   # the next attempt watches from where it stopped
                self._write_status()
                self.stopping.wait(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                attempt += 1
                next_status = 0.0
                continue
            if not changed and self.node is not None and time.monotonic() >= next_status:
                changed = self._tick()
            if not changed and self.retry_at is not None and time.monotonic() >= self.retry_at:
                changed = {"*"}   # a step failed: the whole view again, after a back-off
            if changed:
                self.reconcile(changed)
            elif self.table is not None and self.table.pending is not None:
                self._flush_table()
            self.metrics.revision.set(self.mirror.revision)
            if changed or time.monotonic() >= next_status:
                self.refresh_sessions()
                self._write_status()
                next_status = time.monotonic() + STATUS_EVERY

    def _tick(self) -> set[str]:
        """The periodic checks (every STATUS_EVERY): what must be reconciled now."""
        assert self.node is not None
        changed: set[str] = set()
        if self.cfg.bird and not bird.running_pid(self.node.name):
            log.warning("BIRD is not running; starting it again")
            changed = {"*"}
        try:
            self.ensure_proxy()   # a master that died is started again
            if self.draining:
                self.sync_vips()  # a drained VIP leaves the loopback
            if self.cfg.accel and (self.accel_local is None) == loader.is_enabled():
                self.apply_accel(self.view())   # accel was enabled (or disabled) since
        except Exception:  # noqa: BLE001 - reported, retried at the next tick
            log.exception("periodic check failed")
        gone = self.gone
        self.note_liveness(self.view())
        if self.gone != gone:
            log.info("nodes gone for services (agent dead beyond %gs): %s",
                     self.cfg.dead_node_grace, ", ".join(sorted(self.gone)) or "none")
            changed = {"*"}
        return changed

    def _flush_table(self) -> None:
        """A change waits in the service table: try it again (and hand a replaced table to
        the proxy)."""
        assert self.table is not None
        gen = self.table.generation
        self.table.flush()
        if self.table.generation != gen:
            self.metrics.table_replaced.inc()
        self.ensure_proxy()

    def close(self) -> None:
        """Stop serving; leave the lease, BIRD and the tables' effects in place."""
        if self.cni is not None:
            self.cni.stop()
            self.cni.close()
        if self.health is not None:
            self.health.stop()
        if self.mirror is not None:
            self.mirror.close()
        if self.table is not None:
            self.table.close()
        if self.store is not None:
            self.store.close()


def find_node_state(node: str) -> None:
    """Find this node's state from the node itself: a BIRD that an agent of `node` started
    in this netns names its state dir and instance (by its pid file). An agent started
    without them (by hand, from its command line) takes them over, and so adopts that BIRD
    instead of starting a second one; an agent told another state dir is refused, since
    two BIRDs of one node would fight for port 179."""
    for pid, argv in bird.running_here():
        found = bird.state_of(argv)
        if found is None or found[2] != node:
            continue
        where, tag = found[0], found[1]
        if where == state.state_dir() and tag == naming.instance():
            return
        if os.environ.get("FASTPATH_STATE_DIR") or os.environ.get("FASTPATH_INSTANCE"):
            raise UsageError(f"BIRD of node {node} (pid {pid}) runs in this netns for state dir "
                             f"{where}{f' (instance {tag})' if tag else ''}, not "
                             f"{state.state_dir()}",
                             hint=f"give --state-dir {where}"
                                  + (f" --instance {tag}" if tag else "") + ", or stop that BIRD")
        os.environ["FASTPATH_STATE_DIR"] = str(where)
        if tag:
            os.environ["FASTPATH_INSTANCE"] = tag
        log.info("state of node %s found from its running BIRD (pid %d): %s%s", node, pid, where,
                 f", instance {tag}" if tag else "")
        return


def run(cfg: AgentConfig) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"fastpath agent {cfg.node}: %(message)s")
    if cfg.bird:
        find_node_state(cfg.node)
    agent = NodeAgent(cfg)

    def on_signal(*_a) -> None:
        agent.stopping.set()
        if agent.cni is not None:
            agent.cni.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.connect()
        with agent.lock:
            agent.register()
        agent.start_servers()
        agent._write_status()
        log.info("serving: CNI on %s, health on %s", agent.cni.path if agent.cni else "-",
                 f"{agent.cfg.health}" if agent.health else "off")
        agent.follow()
    except KeyboardInterrupt:
        pass
    finally:
        agent.close()
    log.info("stopped (lease %x left to expire or be renewed by the next agent)", agent.lease)
    return 0
