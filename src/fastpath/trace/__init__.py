"""`fastpath trace SRC DST`: one packet's path through the namespaces, hop by hop, as the
kernel takes it, and the one cause when it does not arrive.

Modules: iptables (parse iptables-save, evaluate a chain), rpfilter (reverse-path filter
decision), model (snapshots, route answers, the Probe seam), path (the walk), collect (the
live probe: netlink and iptables-save per netns), endpoints (names -> endpoints, route
explainers for routing backends), render (tables), commands (the CLI).
"""
