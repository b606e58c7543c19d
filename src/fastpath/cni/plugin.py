"""The CNI commands, run in the agent or in the plugin process itself.

`run(environ, stdin, host_ns, pod_ns)` is the one entry: it parses the CNI environment and
config, runs ADD / DEL / CHECK / STATUS / GC / VERSION on fastpath's pod network
(fastpath.podnet.attach and fastpath.podnet.ipam: the code `fastpath pod add` uses), and
returns (exit code, stdout bytes). Every failure leaves as the spec's error document here
(fastpath.cni.spec.error_from_exception); nothing below prints.

host_ns is the namespace the runtime ran the plugin in (the node: where the host veth,
the /32 route and FORWARD acceptance go), pod_ns the CNI_NETNS; each is a path, an fd
(the agent's, from SCM_RIGHTS) or None for "the current one".

Decisions:
- ADD is transactional: address, veth and record are undone in reverse order when a
  later step fails (a delegated IPAM gets its DEL), then the error is returned.
- DEL never fails for something already gone (spec: "plugins should generally complete a
  DEL action without error even if some resources are missing"): unknown container, a
  second DEL and a vanished netns all succeed and free the address. We never open a
  netns with O_CREAT, so a vanished one stays vanished.
- The host veth name is a hash of (instance, network, container, ifname), so DEL finds
  it even when our record is lost.
- The node's side (ip_forward, FP-FORWARD acceptance, policy untouched) is made sure of
  on ADD and remembered per host netns (by its SO_NETNS_COOKIE, never reused within a
  boot) for NODE_CHECK_TTL seconds, in the agent's memory or in the state database,
  since checking costs two iptables runs (10-50 ms). CHECK always looks for real.

Failure injection for tests: FASTPATH_CNI_FAIL_AT=ipam|record makes ADD fail right after
that step (fastpath.faults; podnet's steps: FASTPATH_PODNET_FAIL_AT).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import sys
import time

from fastpath import faults, naming, state
from fastpath.cni import config as cniconfig
from fastpath.cni import delegate, spec
from fastpath.cni import result as cniresult
from fastpath.cni.delegate import DelegateError
from fastpath.cni.spec import CniError, Env
from fastpath.cni.store import Attachment, Store, ipam_owner
from fastpath.errors import AlreadyExists, FastpathError, NotFound
from fastpath.kernel.netns import Netns
from fastpath.podnet import attach, netfilter, sysctl
from fastpath.podnet.ipam import Ipam, capacity
from fastpath.podnet.rtnl import Rtnl

NODE_CHECK_TTL = 30.0


class CheckFailed(FastpathError):
    """CHECK found the attachment different from what ADD made."""


spec.FASTPATH_CODES.setdefault("CheckFailed", 109)
spec.FASTPATH_LABELS.setdefault(109, "attachment is not as ADD made it")


class _Warm:
    """What the agent keeps between requests: state connections, node checks."""

    conns: dict[str, object] = {}
    node_checked: dict[int, float] = {}
    keep = False  # True in the agent


def warm_up() -> None:
    """Import and open what requests need (the agent calls this once at start)."""
    _Warm.keep = True


def _conn():
    path = str(state.db_path())
    c = _Warm.conns.get(path)
    if c is None:
        c = state.connect()
        # WAL with synchronous=NORMAL: a commit survives a crash of any process, only an OS
        # crash or power loss may roll back the last ones; pods (netns, veths) do not
        # survive those either, and GC reconciles leases. FULL costs an fsync per commit,
        # ~7 ms each here, two per ADD and per DEL.
        c.execute("PRAGMA synchronous=NORMAL")
        if _Warm.keep:
            _Warm.conns[path] = c
    return c


@contextlib.contextmanager
def _scoped_environ(environ: dict[str, str], conf):
    """FASTPATH_* of the request (and the config's instance/stateDir) for its duration."""
    want = {k: v for k, v in environ.items() if k.startswith("FASTPATH_")}
    if conf is not None and conf.instance:
        want["FASTPATH_INSTANCE"] = conf.instance
    if conf is not None and conf.state_dir:
        want["FASTPATH_STATE_DIR"] = conf.state_dir
    # The request's values win; the agent's own stay for what the request does not name.
    saved = {k: os.environ.get(k) for k in want}
    os.environ.update(want)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _labelled(ns, label: str):
    """An fd from the agent's client, as a Netns named after what it is (for messages)."""
    if not isinstance(ns, int) or isinstance(ns, bool):
        yield ns
        return
    n = Netns(os.dup(ns), label)
    try:
        yield n
    finally:
        n.close()


def _answer(doc) -> bytes:
    return b"" if doc is None else (json.dumps(doc) + "\n").encode()


def _version_for_error(stdin: bytes) -> str:
    try:
        v = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError):
        return spec.SPEC_VERSION
    return v if v in spec.SUPPORTED_VERSIONS else spec.SPEC_VERSION


def run(environ: dict[str, str], stdin: bytes, host_ns=None, pod_ns=None,
        pod_ns_sent: bool | None = None) -> tuple[int, bytes]:
    """One CNI invocation -> (exit code, stdout)."""
    try:
        env = spec.parse_env(environ)
        if env.command == "VERSION":
            return 0, _answer(spec.version_document())
        conf = cniconfig.parse(stdin, env.command)
        if pod_ns_sent is False and env.netns:
            pod_ns = _MISSING  # the client could not open CNI_NETNS
        elif pod_ns is None and pod_ns_sent is None:
            pod_ns = env.netns or None
        with _scoped_environ(environ, conf), _labelled(host_ns, "node") as host_ns, \
                _labelled(pod_ns, env.netns) as pod_ns:
            out = HANDLERS[env.command](env, conf, host_ns, pod_ns)
        return 0, _answer(out)
    except Exception as e:
        return 1, error_answer(stdin, e)


def error_answer(stdin: bytes, e: BaseException) -> bytes:
    return _answer(spec.error_from_exception(e).document(_version_for_error(stdin)))


def run_in_process(environ: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    return run(environ, stdin, host_ns=None, pod_ns=None, pod_ns_sent=None)


_MISSING = object()


def _open_pod(pod_ns, env):
    """The pod netns as an Rtnl; a vanished one is spec error 3, never re-created."""
    if pod_ns is _MISSING:
        raise CniError(spec.UNKNOWN_CONTAINER, "network namespace does not exist", env.netns)
    try:
        return Rtnl(pod_ns)
    except NotFound as e:
        raise CniError(spec.UNKNOWN_CONTAINER, "network namespace does not exist", str(e)) from None


def _host_link(conf, env) -> str:
    return naming.link_name("cni", conf.name, env.container_id, env.ifname)


def _ensure_node(host, store) -> None:
    """ip_forward on, FP-FORWARD accepting pod interfaces (FORWARD policy left as it is)."""
    key = _netns_cookie(host)
    if key is not None:
        last = _Warm.node_checked.get(key) if _Warm.keep else store.node_checked_at(key)
        if last is not None and time.time() - last < NODE_CHECK_TTL:
            return
    if sysctl.read(host.ns, "net.ipv4.ip_forward") != "1":
        sysctl.write(host.ns, {"net.ipv4.ip_forward": 1})
    st = netfilter.forward_status(host.ns)
    if not (st["jump"] and st["accepts_pods"]):
        netfilter.ensure_forward(host.ns, policy_drop=False)
    if key is not None:
        if _Warm.keep:
            _Warm.node_checked[key] = time.time()
        else:
            store.mark_node_checked(key)


SO_NETNS_COOKIE = 71  # asm-generic/socket.h, Linux 5.14


def _netns_cookie(host) -> int | None:
    """A netns identity that is never reused (SO_NETNS_COOKIE on a socket living in it);
    an nsfs inode number is reused as soon as the namespace is freed."""
    try:
        raw = socket.socket(fileno=os.dup(host.ipr.fileno()))
    except OSError:
        return None
    with raw:
        try:
            return int.from_bytes(raw.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), sys.byteorder)
        except OSError:  # older kernel: no cache, check every time
            return None


def _first_ipv4(res: dict) -> str:
    for ip in res.get("ips", []):
        if ipaddress.ip_interface(ip["address"]).version == 4:
            return ip["address"]
    raise DelegateError("the IPAM plugin returned no IPv4 address")


def cmd_add(env, conf, host_ns, pod_ns):

    conn = _conn()
    store = Store(conn)
    if store.get(conf.name, env.container_id, env.ifname) is not None:
        raise AlreadyExists(f"container {env.container_id} already has {env.ifname} on network "
                            f"{conf.name}", hint="DEL it first")
    owner = ipam_owner(conf.name, env.container_id, env.ifname)
    host_link = _host_link(conf, env)
    with _open_pod(pod_ns, env) as pod, Rtnl(host_ns) as host:
        _ensure_node(host, store)
        undo: list = []
        try:
            if conf.delegated:
                undo.append(lambda: delegate.call("DEL", env, conf.raw))
                ires = delegate.call("ADD", env, conf.raw)
                address = _first_ipv4(ires)
            else:
                ipam = Ipam(conn)
                undo.append(lambda: ipam.release(owner))
                address = f"{ipam.allocate_lease(conf.pod_cidr, owner).address}/32"
            faults.point("cni", "ipam", "CNI ADD")
            att = attach.attach(host, pod, host_ifname=host_link, address=address,
                                ifname=env.ifname, mtu=conf.mtu)
            undo.append(lambda: attach.detach(host, host_ifname=host_link))
            own = cniresult.build(
                interfaces=[{"name": att.host_ifname, "mac": att.host_mac, "mtu": att.mtu},
                            {"name": att.ifname, "mac": att.mac, "mtu": att.mtu,
                             "sandbox": env.netns}],
                ips=[{"address": att.address, "gateway": att.gateway, "interface": 1}],
                routes=[{"dst": "0.0.0.0/0", "gw": att.gateway}],
                dns=conf.raw.get("dns") if isinstance(conf.raw.get("dns"), dict) else None)
            faults.point("cni", "record", "CNI ADD")
            store.put(Attachment(conf.name, env.container_id, env.ifname, att.address, host_link,
                                 env.netns, host.ns.inode()[1],
                                 conf.ipam["type"] if conf.delegated else None, own))
        except BaseException:
            for fn in reversed(undo):
                try:
                    fn()
                except Exception:
                    pass  # best effort: the first error is the one to report
            raise
    return cniresult.convert(cniresult.merge(conf.prev_result, own), conf.cni_version)


def _remove(env, conf, host, rec) -> None:
    """Unwire and free one attachment; anything already gone is fine."""

    conn = _conn()
    host_link = rec.host_link if rec else _host_link(conf, env)
    attach.detach(host, host_ifname=host_link)
    if conf.delegated:
        delegate.call("DEL", env, conf.raw)
    Ipam(conn).release(ipam_owner(conf.name, env.container_id, env.ifname))
    Store(conn).delete(conf.name, env.container_id, env.ifname)


def cmd_del(env, conf, host_ns, pod_ns):
    rec = Store(_conn()).get(conf.name, env.container_id, env.ifname)
    with Rtnl(host_ns) as host:
        _remove(env, conf, host, rec)
    return None


def cmd_check(env, conf, host_ns, pod_ns):

    if conf.prev_result is None:
        raise CniError(spec.INVALID_CONFIG, "invalid network configuration: prevResult",
                       "CHECK needs the prevResult of ADD")
    conn = _conn()
    rec = Store(conn).get(conf.name, env.container_id, env.ifname)
    if rec is None:
        raise CniError(spec.UNKNOWN_CONTAINER, "no such attachment",
                       f"container {env.container_id} has no {env.ifname} on network {conf.name}")
    problems = []
    prev = conf.prev_result
    mine = [ip["address"] for ip in prev["ips"]
            if isinstance(ip.get("interface"), int)
            and prev["interfaces"][ip["interface"]].get("name") == env.ifname
            and prev["interfaces"][ip["interface"]].get("sandbox")]
    if rec.address not in mine:
        problems.append(f"prevResult does not list {rec.address} on {env.ifname}")
    if not conf.delegated:
        lease = Ipam(conn).lookup(ipam_owner(conf.name, env.container_id, env.ifname))
        if lease is None or f"{lease.address}/32" != rec.address:
            problems.append(f"IPAM holds no lease of {rec.address} for this container")
    with _open_pod(pod_ns, env) as pod, Rtnl(host_ns) as host:
        problems += attach.inspect(host, pod, host_ifname=rec.host_link, address=rec.address,
                                   ifname=env.ifname, mtu=conf.mtu)
    if problems:
        raise CheckFailed("; ".join(problems), op=f"CHECK {env.container_id}/{env.ifname}")
    return None


def cmd_status(env, conf, host_ns, pod_ns):
    try:
        conn = _conn()
        if conf.delegated:
            delegate.find_plugin(conf.ipam["type"], env.path)
        else:
            used = len(Ipam(conn).leases(conf.pod_cidr))
            if used >= capacity(conf.pod_cidr):
                raise CniError(spec.STATUS_UNAVAILABLE, "no address left",
                               f"all {used} addresses of {conf.pod_cidr} are leased")
    except CniError:
        raise
    except Exception as e:
        raise CniError(spec.STATUS_UNAVAILABLE, "plugin cannot take ADDs",
                       str(spec.error_from_exception(e).details or e)) from None
    with Netns.open(host_ns) as host:
        if sysctl.read(host, "net.ipv4.ip_forward") != "1" and Store(conn).list(conf.name):
            raise CniError(spec.STATUS_DEGRADED, "IP forwarding is off on this node",
                           "existing pods cannot reach other nodes; ADD turns it on")
    return None


def cmd_gc(env, conf, host_ns, pod_ns):

    valid = set(conf.valid_attachments or [])
    conn = _conn()
    stale = [r for r in Store(conn).list(conf.name) if r.key not in valid]
    with Rtnl(host_ns) as host:
        for rec in stale:
            one = Env("DEL", rec.container_id, rec.netns, rec.ifname, env.args, env.path)
            _remove(one, conf, host, rec)
    # Leases of this network without a record (an ADD that died between steps).
    valid_owners = {ipam_owner(conf.name, c, i) for c, i in valid}
    ipam = Ipam(conn)
    for lease in ipam.leases():
        if lease.owner.startswith(f"cni/{conf.name}/") and lease.owner not in valid_owners:
            ipam.release(lease.owner)
    return None


HANDLERS = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status,
            "GC": cmd_gc}
