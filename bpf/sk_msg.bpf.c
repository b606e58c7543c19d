// SPDX-License-Identifier: GPL-2.0
/* sk_msg, attached to fp_sockhash: every sendmsg on a socket in the map runs this. If the
 * peer socket is in the map too, the message goes straight into the peer's ingress queue
 * (bpf_msg_redirect_hash with BPF_F_INGRESS), skipping TCP/IP, veth, routing and netfilter.
 *
 * It always returns SK_PASS: on a miss the message takes the TCP stack (returning SK_DROP
 * would fail the send with EACCES).
 *
 * Ordering: the receiver's tcp_bpf_recvmsg reads its redirect queue before TCP's receive
 * queue. So once a socket has sent anything through the stack (its first send raced the
 * peer's PASSIVE_ESTABLISHED, or the peer was not in the map), it keeps using the stack for
 * the rest of its life; otherwise later redirected bytes could overtake earlier ones.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "sockredir.h"

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* sk_user_data carries flags in its low bits (SK_USER_DATA_NOCOPY, _BPF, _PSOCK) */
#define FP_SK_USER_DATA_PTRMASK (~7UL)

/* Bytes redirected into the peer that it has not read yet (psock->msg_tot_len, the count
 * FIONREAD reports). sk_msg may not release a socket reference, so the peer is found
 * through fp_sk_addr and read with read-only BTF casts (a fault reads 0); the local port
 * must match, or the entry is stale. Either wrong answer is safe: moving a socket to the
 * stack keeps byte order, staying redirected only leaves the queue unbounded. */
static __always_inline __u32 peer_queued(struct fp_sock_key *peer)
{
	__u64 *addr = bpf_map_lookup_elem(&fp_sk_addr, peer);
	struct sk_psock *psock;
	struct sock *sk;
	unsigned long ud;

	if (!addr || !*addr)
		return 0;
	sk = bpf_rdonly_cast((void *)*addr, bpf_core_type_id_kernel(struct sock));
	if (sk->__sk_common.skc_num != peer->lport)
		return 0;
	ud = (unsigned long)sk->sk_user_data;
	if (!ud)
		return 0;
	psock = bpf_rdonly_cast((void *)(ud & FP_SK_USER_DATA_PTRMASK),
				bpf_core_type_id_kernel(struct sk_psock));
	return psock->msg_tot_len;
}

SEC("sk_msg")
int fp_sk_msg(struct sk_msg_md *msg)
{
	struct fp_sock_key peer = {};
	struct fp_counters *c;
	struct fp_sk_state *st;
	struct fp_config *cfg;
	__u32 size = msg->size;
	__u32 zero = 0;
	int loopback;

	c = fp_counters_get();
	if (!c)
		return SK_PASS;
	if (!msg->sk)
		goto pass;
	st = bpf_sk_storage_get(&fp_sk_state, msg->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		goto pass;
	if (st->stack_used) {
		c->passed_msgs++;
		c->passed_bytes += size;
		return SK_PASS;
	}
	cfg = bpf_map_lookup_elem(&fp_config, &zero);
	if (cfg && cfg->bulk_bytes && size >= cfg->bulk_bytes) {
		st->stack_used = 1;
		c->bulk_to_stack++;
		goto pass;
	}

	peer.family = msg->family;
	peer.lport = bpf_ntohl(msg->remote_port);
	peer.rport = msg->local_port;
	if (msg->family == FP_AF_INET) {
		peer.laddr[0] = msg->remote_ip4;
		peer.raddr[0] = msg->local_ip4;
		loopback = fp_is_loopback4(msg->remote_ip4);
	} else {
		peer.laddr[0] = msg->remote_ip6[0];
		peer.laddr[1] = msg->remote_ip6[1];
		peer.laddr[2] = msg->remote_ip6[2];
		peer.laddr[3] = msg->remote_ip6[3];
		peer.raddr[0] = msg->local_ip6[0];
		peer.raddr[1] = msg->local_ip6[1];
		peer.raddr[2] = msg->local_ip6[2];
		peer.raddr[3] = msg->local_ip6[3];
		loopback = fp_is_loopback6(peer.laddr);
	}
	if (loopback)
		peer.netns = bpf_get_netns_cookie(msg);

	if (cfg && cfg->max_queued && peer_queued(&peer) >= cfg->max_queued) {
		st->stack_used = 1;
		c->backlog_to_stack++;
		goto pass;
	}
	if (bpf_msg_redirect_hash(msg, &fp_sockhash, &peer, BPF_F_INGRESS) == SK_PASS) {
		c->redirected_msgs++;
		c->redirected_bytes += size;
		if (cfg && cfg->apply_bytes)
			bpf_msg_apply_bytes(msg, cfg->apply_bytes);
		if (cfg && cfg->cork_bytes)
			bpf_msg_cork_bytes(msg, cfg->cork_bytes);
		return SK_PASS;
	}
	st->stack_used = 1;
	c->pinned_to_stack++;
pass:
	c->passed_msgs++;
	c->passed_bytes += size;
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
