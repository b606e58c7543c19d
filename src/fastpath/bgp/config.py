"""Render one node's BIRD 2 configuration from the Mesh. Pure: text in, text out.

What the config says, and why:

- `protocol static fp_pod_block`: the node's pod CIDR as one blackhole route. This is
  the aggregate the node announces (Calico announces its IPAM blocks the same way); the
  pods' /32 routes live in the kernel only, BIRD never sees them, so they never leave
  the node.
- `protocol bgp fp_peer_<name>`: one iBGP session per peer (model.Mesh.peers). `direct`
  because every node shares the underlay segment: BIRD then ties the session to the
  interface and drops it at once when that link goes down. Graceful restart is off: a
  peer that dies must have its routes withdrawn at hold-time expiry, not kept as stale.
  On the route reflector each peer is an `rr client`.
- filters, explicit on every channel: a node imports exactly the other nodes' pod CIDRs
  (exact prefixes, nothing longer or shorter) and exports only its own block; the
  reflector also exports (reflects) the other nodes' CIDRs it learned over BGP.
- `protocol kernel fp_kernel`: installs BGP-learned routes (only those) in the node's
  main table, imports nothing from the kernel (`learn off`), and removes its routes when
  BIRD stops (`persist off`). The blackhole stays in BIRD: the kernel already has the
  pods' /32s and the node needs no catch-all for its own block.
- timers (model.Timers): hold 3 s, keepalive 1 s, connect retry and connect delay 1 s.
  BIRD waits at least 1 s before a new session's first connect (bgp_active:
  MAX(1, connect delay time)), so routes converge in ~1.0-1.7 s after `up` or `node add`
  whatever the node count (bench bgp, 2 to 8 nodes); a dead link is noticed at hold-time
  expiry (2.7-3.3 s measured), a dead BIRD at once (the kernel resets its TCP sessions).
- `timeformat protocol iso long ms`: `show protocols` then gives "since" with
  milliseconds, which is how a reconfiguration is proven not to reset a session.
"""

from __future__ import annotations

from fastpath.bgp.model import Mesh

STATIC_PROTO = "fp_pod_block"
KERNEL_PROTO = "fp_kernel"
DEVICE_PROTO = "fp_device"
PEER_PREFIX = "fp_peer_"
EXTERNAL_PREFIX = "fp_ext_"


def peer_protocol(node_name: str) -> str:
    """The BIRD protocol name of the session to `node_name` (BIRD symbols take no '-';
    node names take no '_', so the mapping is one to one)."""
    return PEER_PREFIX + node_name.replace("-", "_")


def external_protocol(peer_name: str) -> str:
    return EXTERNAL_PREFIX + peer_name.replace("-", "_")


def peer_of_protocol(proto: str) -> str | None:
    """Inverse of peer_protocol (and external_protocol, whose peers come back as
    "peer:NAME"), None for a protocol that is not a session."""
    if proto.startswith(EXTERNAL_PREFIX):
        return "peer:" + proto[len(EXTERNAL_PREFIX):].replace("_", "-")
    if not proto.startswith(PEER_PREFIX):
        return None
    return proto[len(PEER_PREFIX):].replace("_", "-")


def _session_timers(t) -> list[str]:
    return [f"  hold time {t.hold};",
            f"  startup hold time {max(t.hold, 3)};",
            f"  keepalive time {t.keepalive};",
            f"  connect retry time {t.connect_retry};",
            f"  connect delay time {t.connect_retry};",
            f"  error wait time {t.error_wait_min}, {t.error_wait_max};",
            "  graceful restart off;"]


def _prefix_set(cidrs: list[str]) -> str:
    return "[ " + ", ".join(cidrs) + " ]"


def render(mesh: Mesh, name: str, log_path: str | None = None) -> str:
    """The complete bird.conf of node `name`. Call model.validate(mesh) first."""
    me = mesh.node(name)
    t = mesh.timers
    peers = mesh.peers(name)
    is_reflector = mesh.reflector == name
    others = sorted((n.pod_cidr for n in mesh.nodes if n.name != name),
                    key=lambda c: tuple(int(x) for x in c.replace("/", ".").split(".")))
    topo = ("full mesh" if mesh.reflector is None
            else "route reflector" if is_reflector else f"client of reflector {mesh.reflector}")
    out = [
        f"# fastpath: BGP speaker of node {me.name} ({topo}). Generated from the cluster",
        "# state by fastpath; edits are overwritten.",
        f"router id {me.router_id};",
        "timeformat protocol iso long ms;",
        "timeformat route iso long ms;",
    ]
    if log_path:
        out.append(f'log "{log_path}" {{ info, remote, warning, error, auth, fatal, bug }};')
    out += [
        "",
        f"define FP_POD_CIDR = {me.pod_cidr};",
    ]
    if others:
        out.append(f"define FP_PEER_CIDRS = {_prefix_set(others)};")
    peer_match = "net ~ FP_PEER_CIDRS" if others else "false"
    out += [
        "",
        "filter fp_import {",
        f"  if net.type = NET_IP4 && {peer_match} then accept;",
        "  reject;",
        "}",
        "",
        "filter fp_export {",
        f'  if proto = "{STATIC_PROTO}" && net = FP_POD_CIDR then accept;',
    ]
    if is_reflector:
        out.append(f"  if source = RTS_BGP && {peer_match} then accept;")
    out += [
        "  reject;",
        "}",
        "",
        f"protocol device {DEVICE_PROTO} {{",
        "  scan time 10;",
        "}",
        "",
        f"protocol static {STATIC_PROTO} {{",
        "  ipv4 { import all; export none; };",
        "  route FP_POD_CIDR blackhole;",
        "}",
        "",
        f"protocol kernel {KERNEL_PROTO} {{",
        "  ipv4 {",
        "    import none;",
        f"    export where source = RTS_BGP && {peer_match};",
        "  };",
        "  learn off;",
        "  persist off;",
        "  scan time 10;",
        "}",
    ]
    for peer, rr_client in peers:
        out += [
            "",
            f"protocol bgp {peer_protocol(peer.name)} {{",
            f'  description "{peer.name}";',
            f"  local {me.address} as {mesh.asn_of(me)};",
            f"  neighbor {peer.address} as {mesh.asn_of(peer)};",
            "  direct;",
            *_session_timers(t),
        ]
        if rr_client:
            out.append("  rr client;")
        out += [
            "  ipv4 {",
            "    import filter fp_import;",
            "    export filter fp_export;",
            "  };",
            "}",
        ]
    for ext in mesh.external_of(name):
        # eBGP to a router outside the cluster: BIRD's default for eBGP is a directly
        # connected neighbour and next hop self, which is what a ToR design wants
        out += [
            "",
            f"protocol bgp {external_protocol(ext.name)} {{",
            f'  description "external peer {ext.name}";',
            f"  local {me.address} as {mesh.asn_of(me)};",
            f"  neighbor {ext.address} as {ext.asn};",
            *_session_timers(t),
        ]
        if ext.password:
            out.append(f'  password "{ext.password}";')
        # nodes that share one ASN learn each other's blocks through the ToR with their
        # own ASN in the path: accept that (fp_import still takes only other nodes' blocks).
        # With an ASN per node (RFC 7938's eBGP design, the demo's --tor) it stays off, so
        # the ToR's echo of this node's own block fails the AS-path loop check quietly,
        # before BIRD would log its next hop (this node's address) as invalid.
        if any(mesh.asn_of(n) == mesh.asn_of(me) for n in mesh.nodes if n.name != me.name):
            out.append("  allow local as;")
        out += [
            "  ipv4 {",
            "    import filter fp_import;",
            "    export filter fp_export;",
            "  };",
            "}",
        ]
    return "\n".join(out) + "\n"
