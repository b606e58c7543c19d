"""The cluster datastore: what connects the node agents of many machines.

One seam (`kv.KvStore`: keys, revisions, leases, compare-and-swap, a resumable watch),
two backends (`sqlite_kv`: the embedded default for one machine; `etcd_kv`: etcd v3 for
many), typed cluster objects on top (`objects`, `store`), and the watch follower every
reader uses (`mirror`). docs/ARCHITECTURE.md, "Many machines", says how Kubernetes'
objects would map onto the same seam.
"""
