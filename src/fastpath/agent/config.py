"""The node agent's settings, from flags or a JSON file (flags win). Pure.

    {"node": "node1", "datastore": "etcd://10.0.0.10:2379,10.0.0.11:2379",
     "address": "10.0.0.1/24", "asn": 64512, "podCIDR": "10.244.1.0/24",
     "health": "127.0.0.1:9099", "leaseTTL": 10}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from fastpath.cluster.objects import DEFAULT_ASN, Node
from fastpath.errors import ConfigError

_FILE_KEYS = {"node": "node", "datastore": "datastore", "address": "address", "asn": "asn",
              "routerID": "router_id", "podCIDR": "pod_cidr", "pool": "pool", "labels": "labels",
              "socket": "socket", "health": "health", "leaseTTL": "lease_ttl", "bird": "bird",
              "accel": "accel", "proxy": "proxy", "proxyWorkers": "proxy_workers",
              "deadNodeGrace": "dead_node_grace", "proxyDrainTimeout": "proxy_drain_timeout"}


@dataclass(frozen=True)
class AgentConfig:
    node: str
    datastore: str | None = None          # None: fastpath.cluster.store.default_url()
    address: str | None = None            # underlay ADDRESS/PREFIX; None: found on the node
    asn: int = DEFAULT_ASN
    router_id: str = ""
    pod_cidr: str | None = None           # None: a block from a pool
    pool: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    socket: str | None = None             # the CNI socket; None: fastpath.cni.wire's default
    health: str = "127.0.0.1:9099"        # "" turns the HTTP endpoints off
    lease_ttl: int = 10
    bird: bool = True
    accel: bool = True                    # keep accel's local map current when accel is on
    proxy: bool = False                   # run and program the node proxy
    proxy_workers: int = 0                # its worker processes; 0: one per CPU
    proxy_drain_timeout: float = 30.0     # connections of a deleted or changed service get
                                          # this long, then are reset (HAProxy's
                                          # hard-stop-after, Envoy's drain time)
    dead_node_grace: float = 300.0        # seconds a node's agent may be dead before its
                                          # pods leave the services (agent/deadnodes.py)

    def health_addr(self) -> tuple[str, int] | None:
        if not self.health:
            return None
        host, _, port = self.health.rpartition(":")
        if not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"health address {self.health!r} is not HOST:PORT")
        return host or "127.0.0.1", int(port)

    def node_object(self, address: str, pod_cidr: str | None) -> Node:
        return Node(name=self.node, address=address, pod_cidr=pod_cidr, asn=self.asn,
                    router_id=self.router_id, labels=dict(self.labels))

    def validate(self) -> "AgentConfig":
        if not 0 <= self.proxy_workers <= 256:
            raise ConfigError(f"proxy workers {self.proxy_workers} must be 0..256 (0: one per CPU)")
        if not 0 <= self.proxy_drain_timeout <= 86400:
            raise ConfigError(f"proxy drain timeout {self.proxy_drain_timeout}s must be 0..86400 seconds")
        if not 0 <= self.dead_node_grace <= 86400:
            raise ConfigError(f"dead node grace {self.dead_node_grace}s must be 0..86400 seconds")
        if not 3 <= self.lease_ttl <= 300:
            raise ConfigError(f"lease TTL {self.lease_ttl}s must be 3..300 seconds")
        self.health_addr()
        self.node_object(self.address or "192.0.2.1/32", self.pod_cidr).validate()
        return self


def load(path: str | None, **flags) -> AgentConfig:
    """The file's settings (when given), then every flag that is not None."""
    doc: dict = {}
    if path:
        try:
            raw = json.loads(Path(path).read_text())
        except OSError as e:
            raise ConfigError(f"cannot read: {e.strerror}", where=path) from e
        except ValueError as e:
            raise ConfigError(f"not JSON: {e}", where=path) from e
        if not isinstance(raw, dict):
            raise ConfigError("expected a JSON object", where=path)
        unknown = sorted(set(raw) - set(_FILE_KEYS))
        if unknown:
            raise ConfigError(f"unknown keys {unknown} (known: {sorted(_FILE_KEYS)})", where=path)
        doc = {_FILE_KEYS[k]: v for k, v in raw.items()}
    doc.update({k: v for k, v in flags.items() if v is not None})
    if not doc.get("node"):
        raise ConfigError("no node name: give --node or \"node\" in the config file")
    known = {f.name for f in fields(AgentConfig)}
    try:
        cfg = AgentConfig(**{k: v for k, v in doc.items() if k in known})
    except TypeError as e:
        raise ConfigError(str(e), where=path) from e
    return replace(cfg).validate()
