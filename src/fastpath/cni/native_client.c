/*
 * fastpath CNI plugin, native client: the same protocol as fastpath/cni/client.py
 * (fastpath/cni/wire.py), for runtimes that exec the plugin on every pod.
 *
 * Why it exists: the Python client needs an interpreter start, ~12 ms on an idle 2-CPU VM
 * and 25 ms under load, against ~5 ms for a Go plugin such as ptp. This file is the
 * client's fast path only: read stdin, connect to the agent (peer must be uid 0), send the
 * CNI_* and FASTPATH_* environment, the config and two netns fds (ours: the node; the
 * pod's: CNI_NETNS, opened read-only, never created) with SCM_RIGHTS, print the answer and
 * exit with its code. Whenever the agent cannot be reached it execs the Python plugin
 * (FALLBACK, fixed at build time by `fastpath cni install`) with the same stdin, which then
 * does the work in-process. It never interprets the request itself.
 *
 * The config may name the agent (`agentSocket`, `instance`); we find those keys with a
 * plain scan of the top level of the JSON text, which is all the Python client does too
 * before it knows it needs a parser.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef FALLBACK
#error "build with -DFALLBACK=\"/path/to/python/launcher\""
#endif

#define MAX_REQUEST (1 << 20)
static const char VERSION_ANSWER[] =
	"{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n";

extern char **environ;

static char *stdin_buf;
static size_t stdin_len;

static void read_stdin(void)
{
	size_t cap = 4096;
	stdin_buf = malloc(cap);
	for (;;) {
		if (stdin_len == cap) {
			if (cap >= MAX_REQUEST)
				break;
			cap *= 2;
			stdin_buf = realloc(stdin_buf, cap);
		}
		if (!stdin_buf)
			exit(70);
		ssize_t n = read(0, stdin_buf + stdin_len, cap - stdin_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		stdin_len += (size_t)n;
	}
}

/* Hand over to the Python plugin with the stdin we consumed, through a memfd. */
static void fallback(char **argv)
{
	int fd = memfd_create("fastpath-cni-stdin", MFD_CLOEXEC);
	if (fd >= 0) {
		size_t off = 0;
		while (off < stdin_len) {
			ssize_t n = write(fd, stdin_buf + off, stdin_len - off);
			if (n <= 0)
				break;
			off += (size_t)n;
		}
		lseek(fd, 0, SEEK_SET);
		dup2(fd, 0); /* dup2 clears FD_CLOEXEC on the new fd */
	}
	argv[0] = (char *)FALLBACK;
	execv(FALLBACK, argv);
	printf("{\"cniVersion\":\"1.1.0\",\"code\":5,\"msg\":\"cannot run the fastpath plugin\","
	       "\"details\":\"exec %s: %s\"}\n", FALLBACK, strerror(errno));
	exit(1);
}

/* The string value of a top-level "key": "value" in the config, copied into out. */
static int config_string(const char *key, char *out, size_t outlen)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\"", key);
	const char *end = stdin_buf + stdin_len;
	const char *p = memmem(stdin_buf, stdin_len, pat, strlen(pat));
	if (!p)
		return 0;
	p += strlen(pat);
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ':'))
		p++;
	if (p >= end || *p != '"')
		return 0;
	p++;
	size_t i = 0;
	while (p < end && *p != '"' && *p != '\\' && i + 1 < outlen)
		out[i++] = *p++;
	if (p >= end || *p != '"')
		return 0;
	out[i] = 0;
	return 1;
}

static void socket_path(char *out, size_t outlen)
{
	const char *env_sock = getenv("FASTPATH_AGENT_SOCKET");
	const char *tag = getenv("FASTPATH_INSTANCE");
	char conf_tag[16];
	if (config_string("agentSocket", out, outlen))
		return;
	if (!env_sock && config_string("instance", conf_tag, sizeof conf_tag))
		tag = conf_tag;
	else if (env_sock && *env_sock) {
		snprintf(out, outlen, "%s", env_sock);
		return;
	}
	if (tag && *tag)
		snprintf(out, outlen, "/run/fastpath/fp-%s-agent.sock", tag);
	else
		snprintf(out, outlen, "/run/fastpath/fp-agent.sock");
}

static int connect_agent(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t len = sizeof cred;
	if (strlen(path) >= sizeof sa.sun_path)
		return -1;
	strcpy(sa.sun_path, path);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0) {
		close(s);
		return -1;
	}
	return s;
}

static int forwarded(const char *kv)
{
	return strncmp(kv, "CNI_", 4) == 0 || strncmp(kv, "FASTPATH_", 9) == 0;
}

static void lost(const char *why)
{
	printf("{\"cniVersion\":\"1.1.0\",\"code\":11,\"msg\":\"fastpath agent did not answer\","
	       "\"details\":\"%s\"}\n", why);
	exit(1);
}

int main(int argc, char **argv)
{
	(void)argc;
	read_stdin();
	const char *cmd = getenv("CNI_COMMAND");
	if (cmd && strcmp(cmd, "VERSION") == 0) {
		fputs(VERSION_ANSWER, stdout);
		return 0;
	}
	const char *no_agent = getenv("FASTPATH_CNI_NO_AGENT");
	if (no_agent && strcmp(no_agent, "1") == 0)
		fallback(argv);
	char path[256];
	socket_path(path, sizeof path);
	int s = connect_agent(path);
	if (s < 0)
		fallback(argv);

	/* env blob: KEY=VALUE joined by NUL, as wire.encode_request */
	size_t env_len = 0, cap = 4096;
	char *env = malloc(cap);
	for (char **e = environ; env && *e; e++) {
		if (!forwarded(*e))
			continue;
		size_t l = strlen(*e);
		while (env_len + l + 1 > cap)
			env = realloc(env, cap *= 2);
		if (!env)
			return 70;
		if (env_len)
			env[env_len++] = 0;
		memcpy(env + env_len, *e, l);
		env_len += l;
	}
	int fds[2], nfds = 0;
	char kinds[3] = "";
	fds[nfds] = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (fds[nfds] >= 0) {
		strcat(kinds, "H");
		nfds++;
	}
	const char *netns = getenv("CNI_NETNS");
	if (netns && *netns) {
		fds[nfds] = open(netns, O_RDONLY | O_CLOEXEC); /* never O_CREAT */
		if (fds[nfds] >= 0) {
			strcat(kinds, "P");
			nfds++;
		}
	}
	char header[96];
	int hlen = snprintf(header, sizeof header, "FPCNI1 %zu %zu %s\n", env_len, stdin_len,
			    nfds ? kinds : "-");
	struct iovec iov[3] = { { header, (size_t)hlen }, { env, env_len }, { stdin_buf, stdin_len } };
	union {
		char buf[CMSG_SPACE(sizeof(int) * 2)];
		struct cmsghdr align;
	} u;
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 3 };
	if (nfds) {
		msg.msg_control = u.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	size_t total = (size_t)hlen + env_len + stdin_len, sent = 0;
	while (sent < total) {
		ssize_t n = sendmsg(s, &msg, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			lost(strerror(errno));
		sent += (size_t)n;
		msg.msg_control = NULL; /* the fds ride on the first bytes only */
		msg.msg_controllen = 0;
		while (n > 0 && msg.msg_iovlen) {
			if ((size_t)n >= msg.msg_iov->iov_len) {
				n -= (ssize_t)msg.msg_iov->iov_len;
				msg.msg_iov++;
				msg.msg_iovlen--;
			} else {
				msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + n;
				msg.msg_iov->iov_len -= (size_t)n;
				n = 0;
			}
		}
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	shutdown(s, SHUT_WR);

	size_t alen = 0;
	cap = 65536;
	char *ans = malloc(cap);
	for (;;) {
		if (!ans)
			return 70;
		if (alen == cap)
			ans = realloc(ans, cap *= 2);
		ssize_t n = read(s, ans + alen, cap - alen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			lost(strerror(errno));
		if (n == 0)
			break;
		alen += (size_t)n;
	}
	char *nl = alen ? memchr(ans, '\n', alen) : NULL;
	if (!nl)
		lost("truncated answer");
	*nl = 0;
	char *endp;
	long rc = strtol(ans, &endp, 10);
	if (*endp)
		lost("malformed answer");
	size_t off = (size_t)(nl + 1 - ans);
	while (off < alen) {
		ssize_t n = write(1, ans + off, alen - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 74;
		off += (size_t)n;
	}
	return (int)rc;
}
