// SPDX-License-Identifier: GPL-2.0
/* sockops, attached to one cgroup v2: when a TCP connection of a process in that cgroup
 * becomes established (either side), and its peer is on this node (loopback, or an address
 * in fp_local4/fp_local6, which fastpath fills with the node's addresses and pod CIDR),
 * put the socket into fp_sockhash under its own 4-tuple key. Sockets to remote peers stay
 * out of the map, so they never pay tcp_bpf's cost.
 *
 * IPv4-mapped IPv6 sockets are left alone: their two ends can disagree on the family, so
 * they would never find each other, and tcp_bpf has had bugs around them.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sockredir.h"

static __always_inline int peer_is_local(struct bpf_sock_ops *skops, int *loopback)
{
	if (skops->family == FP_AF_INET) {
		struct fp_lpm4 k = { .prefixlen = 32, .addr = skops->remote_ip4 };

		*loopback = fp_is_loopback4(skops->remote_ip4);
		return *loopback || bpf_map_lookup_elem(&fp_local4, &k) != NULL;
	}
	struct fp_lpm6 k6 = { .prefixlen = 128 };

	k6.addr[0] = skops->remote_ip6[0];
	k6.addr[1] = skops->remote_ip6[1];
	k6.addr[2] = skops->remote_ip6[2];
	k6.addr[3] = skops->remote_ip6[3];
	*loopback = fp_is_loopback6(k6.addr);
	return *loopback || bpf_map_lookup_elem(&fp_local6, &k6) != NULL;
}

SEC("sockops")
int fp_sockops(struct bpf_sock_ops *skops)
{
	struct fp_sock_key key = {};
	struct fp_counters *c;
	int loopback = 0;

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != FP_AF_INET && skops->family != FP_AF_INET6)
		return 1;
	c = fp_counters_get();
	if (!c)
		return 1;

	if (skops->family == FP_AF_INET6) {
		__u32 r[4] = { skops->remote_ip6[0], skops->remote_ip6[1],
			       skops->remote_ip6[2], skops->remote_ip6[3] };
		if (fp_is_v4_mapped(r)) {
			c->sockets_remote++;
			return 1;
		}
	}
	if (!peer_is_local(skops, &loopback)) {
		c->sockets_remote++;
		return 1;
	}

	key.family = skops->family;
	key.lport = skops->local_port;
	key.rport = bpf_ntohl(skops->remote_port);
	if (skops->family == FP_AF_INET) {
		key.laddr[0] = skops->local_ip4;
		key.raddr[0] = skops->remote_ip4;
	} else {
		key.laddr[0] = skops->local_ip6[0];
		key.laddr[1] = skops->local_ip6[1];
		key.laddr[2] = skops->local_ip6[2];
		key.laddr[3] = skops->local_ip6[3];
		key.raddr[0] = skops->remote_ip6[0];
		key.raddr[1] = skops->remote_ip6[1];
		key.raddr[2] = skops->remote_ip6[2];
		key.raddr[3] = skops->remote_ip6[3];
	}
	if (loopback)
		key.netns = bpf_get_netns_cookie(skops);

	if (bpf_sock_hash_update(skops, &fp_sockhash, &key, BPF_NOEXIST) == 0) {
		struct bpf_sock *sk = skops->sk;
		__u64 addr;

		c->sockets_added++;
		if (sk) {
			addr = (__u64)sk;
			bpf_map_update_elem(&fp_sk_addr, &key, &addr, BPF_ANY);
		}
	} else {
		c->sockets_failed++;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
