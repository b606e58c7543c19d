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

/* How sk_msg learns how much its peer has queued (fp_config.max_queued). One source, three
 * objects (the Makefile passes -DFP_PEER_QUEUE=...); the loader picks the first whose
 * kernel features are present (src/fastpath/sockredir/features.py):
 *
 * FP_QUEUE_TOT_LEN (sk_msg.bpf.o): psock->msg_tot_len, read through the kfunc
 *   bpf_rdonly_cast. O(1). Needs the kfunc (6.2+) and the field (6.12 has it, 6.1 not).
 * FP_QUEUE_WALK (sk_msg_walk.bpf.o): sum sg.size over the peer's psock->ingress_msg list
 *   with bpf_probe_read_kernel, at most FP_WALK_MAX messages. A list longer than that
 *   counts as full: the sender moves to the stack, which keeps byte order, so the queue
 *   stays bounded by max_queued plus FP_WALK_MAX messages. Debian 12's 6.1 takes this.
 * FP_QUEUE_NONE (sk_msg_nobound.bpf.o): no bound (peer_queued() is 0); the kernel's own
 *   behaviour, for kernels that allow neither read. The loader says so in one line.
 */
#define FP_QUEUE_TOT_LEN 1
#define FP_QUEUE_WALK 2
#define FP_QUEUE_NONE 3
#ifndef FP_PEER_QUEUE
#define FP_PEER_QUEUE FP_QUEUE_TOT_LEN
#endif
#define FP_WALK_MAX 64

/* sk_user_data carries flags in its low bits (SK_USER_DATA_NOCOPY, _BPF, _PSOCK) */
#define FP_SK_USER_DATA_PTRMASK (~7UL)

#if FP_PEER_QUEUE == FP_QUEUE_TOT_LEN
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

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
#elif FP_PEER_QUEUE == FP_QUEUE_WALK
/* The same peer lookup as above, with bpf_probe_read_kernel (CO-RE relocated) instead of
 * BTF casts. The list is read without psock->ingress_lock: a racing reader can make the
 * sum wrong in either direction, and both directions are safe (see above). */
static __always_inline __u32 peer_queued(struct fp_sock_key *peer)
{
	__u64 *addr = bpf_map_lookup_elem(&fp_sk_addr, peer);
	struct list_head *head, *pos;
	struct sk_psock *psock;
	struct sock *sk;
	unsigned long ud;
	__u32 sum = 0;
	int i;

	if (!addr || !*addr)
		return 0;
	sk = (struct sock *)*addr;
	if (BPF_CORE_READ(sk, __sk_common.skc_num) != peer->lport)
		return 0;
	ud = (unsigned long)BPF_CORE_READ(sk, sk_user_data);
	if (!ud)
		return 0;
	psock = (struct sk_psock *)(ud & FP_SK_USER_DATA_PTRMASK);
	head = (struct list_head *)((void *)psock + bpf_core_field_offset(struct sk_psock,
									    ingress_msg));
	pos = BPF_CORE_READ(psock, ingress_msg.next);
	for (i = 0; i < FP_WALK_MAX; i++) {
		struct sk_msg *m;

		if (!pos || pos == head)
			return sum;
		m = (struct sk_msg *)((void *)pos - bpf_core_field_offset(struct sk_msg, list));
		sum += BPF_CORE_READ(m, sg.size);
		pos = BPF_CORE_READ(m, list.next);
	}
	return 0xffffffff; /* longer than the walk: count it as full */
}
#else
static __always_inline __u32 peer_queued(struct fp_sock_key *peer)
{
	return 0;
}
#endif

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

	if (FP_PEER_QUEUE != FP_QUEUE_NONE && cfg && cfg->max_queued &&
	    peer_queued(&peer) >= cfg->max_queued) {
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
