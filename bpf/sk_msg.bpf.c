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
#include "sockredir.h"

SEC("sk_msg")
int fp_sk_msg(struct sk_msg_md *msg)
{
	struct fp_sock_key peer = {};
	struct fp_counters *c;
	struct fp_sk_state *st;
	__u32 size = msg->size;
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

	if (bpf_msg_redirect_hash(msg, &fp_sockhash, &peer, BPF_F_INGRESS) == SK_PASS) {
		c->redirected_msgs++;
		c->redirected_bytes += size;
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
