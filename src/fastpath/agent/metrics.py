"""The agent's Prometheus metrics (prometheus_client), all named fastpath_*.

`fastpath_network_programming_duration_seconds` follows kube-proxy's
network_programming_duration_seconds: from the moment a change was written to the
datastore (the writer stamps services and pods with the time) until this node's tables
show it. Writers and agents share a clock on one machine; across machines it is as good
as NTP, as kube-proxy's is.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PROGRAMMING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, node: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.info = Gauge("fastpath_agent_info", "The agent: node name and datastore", ["node", "datastore"],
                          registry=r)
        self.ready = Gauge("fastpath_agent_ready", "1 when /readyz says ready", registry=r)
        self.datastore_up = Gauge("fastpath_datastore_up", "1 when the datastore answered the last "
                                  "check", registry=r)
        self.revision = Gauge("fastpath_datastore_revision", "The revision the agent has applied",
                              registry=r)
        self.reconciles = Counter("fastpath_reconcile_total", "Reconciliations, by result",
                                  ["result"], registry=r)
        self.programming = Histogram("fastpath_network_programming_duration_seconds",
                                     "From a change written to the datastore to this node's "
                                     "tables showing it", ["kind"], buckets=PROGRAMMING_BUCKETS,
                                     registry=r)
        self.sessions = Gauge("fastpath_bgp_sessions", "BGP sessions of this node, by state",
                              ["state"], registry=r)
        self.services = Gauge("fastpath_services", "Services programmed on this node", registry=r)
        self.backends = Gauge("fastpath_service_backends", "Backends programmed, by service",
                              ["service"], registry=r)
        self.pods = Gauge("fastpath_pods", "Pods on this node (CNI ADDs not yet DELeted)", registry=r)
        self.cni = Counter("fastpath_cni_requests_total", "CNI requests served, by command and "
                           "result", ["command", "result"], registry=r)
        self.lease_renewals = Counter("fastpath_lease_renewals_total", "Lease keepalives, by result",
                                      ["result"], registry=r)
        self.nodes = Gauge("fastpath_nodes", "Registered nodes by their agent's state: alive "
                           "(holds its lease), dead (lease ran out; routes and sessions stay), "
                           "gone (dead beyond the grace: its pods left the services)",
                           ["state"], registry=r)
        self.table_stalls = Counter("fastpath_service_table_stalls_total", "Publishes of the "
                                    "service table that found no free version buffer (a reader "
                                    "held a grace period up)", registry=r)
        self.table_replaced = Counter("fastpath_service_table_replaced_total", "Service tables "
                                      "replaced because a reader stayed hung", registry=r)
        self.node = node
