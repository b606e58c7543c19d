"""fastpath: a node-local data plane for Linux.

Routing-mode pod networking (podnet, cni, bgp), socket-level redirect with eBPF
(sockredir), a splice node proxy (proxy), shared memory between processes (shm) and
RCU-protected tables (rcu). Each package keeps its pure logic apart from the syscall
edge; see ARCHITECTURE in the project docs.
"""

__version__ = "0.1.0"
