"""Socket-level redirect with eBPF: sockops puts same-node TCP sockets into a SOCKHASH,
sk_msg sends each message straight into the peer socket's ingress queue."""
