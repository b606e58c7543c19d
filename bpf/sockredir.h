/* Shared by sockops.bpf.c and sk_msg.bpf.c: the SOCKHASH key layout, the counters, and
 * the maps both programs use. fastpath loads sockops.bpf.o first and hands its map fds to
 * sk_msg.bpf.o (bpf_map__reuse_fd), so the two objects share one set of maps.
 *
 * The key layout is mirrored in src/fastpath/sockredir/keys.py; change both together.
 */
#ifndef FASTPATH_SOCKREDIR_H
#define FASTPATH_SOCKREDIR_H

#define FP_AF_INET 2
#define FP_AF_INET6 10

/* One end of a TCP connection, seen from that end. The peer's key is the same tuple with
 * local and remote swapped. Ports are host byte order. `netns` is the netns cookie for
 * loopback peers only: 127.0.0.1:A -> 127.0.0.1:B can exist in two pods at once, while
 * every other local address (node addresses, pod IPs) is unique on the node, and the two
 * ends of a pod-to-pod connection live in different namespaces (so they must not carry it).
 */
struct fp_sock_key {
	__u32 family;     /* FP_AF_INET or FP_AF_INET6 */
	__u32 lport;
	__u32 rport;
	__u32 pad;        /* always 0: keys are compared as bytes */
	__u32 laddr[4];   /* IPv4 uses laddr[0] (network byte order), rest 0 */
	__u32 raddr[4];
	__u64 netns;
};

/* Per-CPU counters, index 0 of fp_counters. */
struct fp_counters {
	__u64 redirected_msgs;
	__u64 redirected_bytes;
	__u64 passed_msgs;      /* peer not in the map: the message took the TCP stack */
	__u64 passed_bytes;
	__u64 sockets_added;
	__u64 sockets_remote;   /* peer not local: never put in the map */
	__u64 sockets_failed;   /* sock_hash_update refused */
	__u64 pinned_to_stack;  /* a socket that sent via the stack once keeps using it */
	__u64 bulk_to_stack;    /* a socket moved to the stack by fp_config.bulk_bytes */
	__u64 backlog_to_stack; /* a socket moved to the stack by fp_config.max_queued */
};

/* Tuning read by sk_msg on every message, index 0 of fp_config; all 0 by default.
 * - bulk_bytes: a socket that sends one message of at least this many bytes leaves the
 *   redirect for good (redirect -> stack keeps byte order: the receiver drains its psock
 *   queue before its TCP receive queue). Bulk flows go faster through TCP (see bench).
 * - apply_bytes: bpf_msg_apply_bytes, run the verdict once per that many bytes.
 * - cork_bytes: bpf_msg_cork_bytes; stalls request/response traffic smaller than the cork
 *   (nothing flushes a cork but more bytes), so only for one-way bulk experiments.
 * - max_queued: a redirected message lands in the peer's psock queue, which neither the
 *   peer's SO_RCVBUF nor the sender's SO_SNDBUF bounds (a sender whose peer does not read
 *   can queue hundreds of MiB, until tcp_mem pressure fails sends with ENOMEM). When the
 *   peer already holds this many unread redirected bytes, the sender moves to the TCP
 *   stack for good, whose window bounds it. 0: no limit.
 */
struct fp_config {
	__u32 bulk_bytes;
	__u32 apply_bytes;
	__u32 cork_bytes;
	__u32 max_queued;
};

/* LPM keys for the local-peer tries: prefixlen then the address, network byte order. */
struct fp_lpm4 {
	__u32 prefixlen;
	__u32 addr;
};

struct fp_lpm6 {
	__u32 prefixlen;
	__u32 addr[4];
};

/* Per-socket state in socket-local storage (freed with the socket). */
struct fp_sk_state {
	__u32 stack_used;  /* this socket sent at least one byte through the TCP stack */
	__u32 pad;
};

_Static_assert(sizeof(struct fp_sock_key) == 56, "keys.py SOCK_KEY");
_Static_assert(sizeof(struct fp_counters) == 80, "keys.py COUNTERS");
_Static_assert(sizeof(struct fp_config) == 16, "keys.py CONFIG");

#define FP_SOCKHASH_MAX 65536

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, FP_SOCKHASH_MAX);
	__type(key, struct fp_sock_key);
	__type(value, __u64);
} fp_sockhash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_counters);
} fp_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fp_lpm4);
	__type(value, __u32);
} fp_local4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fp_lpm6);
	__type(value, __u32);
} fp_local6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_config);
} fp_config SEC(".maps");

/* Each socket in fp_sockhash, by its key -> its struct sock address (written by sockops,
 * read by sk_msg through a read-only BTF cast to see how much its peer has queued). An
 * entry can outlive its socket (LRU, no close hook): readers check the port they find. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FP_SOCKHASH_MAX);
	__type(key, struct fp_sock_key);
	__type(value, __u64);
} fp_sk_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fp_sk_state);
} fp_sk_state SEC(".maps");

static __always_inline struct fp_counters *fp_counters_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&fp_counters, &zero);
}

static __always_inline int fp_is_v4_mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int fp_is_loopback4(__u32 addr)
{
	return (bpf_ntohl(addr) >> 24) == 127;
}

static __always_inline int fp_is_loopback6(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

#endif
