"""fastpath's CNI plugin (`fastpath-cni`, installed as `fastpath` in a runtime's plugin
directory) and the node agent it talks to.

Layout: `spec` (CNI 1.1.0 environment, error codes), `config` (network config parsing),
`result` (result documents and their conversion between versions) are pure; `delegate`
execs an IPAM plugin; `plugin` runs the commands on the pod network of `fastpath.podnet`;
`wire` is the client/agent message format with SCM_RIGHTS; `client` is the plugin's entry
point, `agent` the long-running service. This package imports nothing at module level, so
that the client starts fast.
"""
