"""`fastpath agent`: the node's long-running service for CNI requests.

Why an agent: a CNI plugin is exec'd once per request; a Python one pays for its
interpreter, pyroute2 and SQLite on every call. The agent pays once, keeps them warm, and
does the netlink work in-process; `fastpath-cni` shrinks to a client that forwards the
request (fastpath.cni.wire).

Security: the socket lives in a 0700 directory, is itself 0600, and each connection's
peer credentials (SO_PEERCRED, unix(7)) must be uid 0, since a request carries a netns
fd and ends in netlink changes on the node.

Requests run one at a time, in the order they arrive: they share the node's IPAM and
FORWARD chain, which serialise anyway, and setns(2) below is per thread.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import sys
import time

from fastpath.cni import plugin, wire
from fastpath.errors import AlreadyExists, KernelError

ACCEPT_POLL = 0.5  # seconds between checks of the stop flag


def peer_cred(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer, from SO_PEERCRED (struct ucred)."""
    return struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))


def pidfile_of(path: str) -> str:
    return path + ".pid"


def _bind(path: str) -> socket.socket:
    d = os.path.dirname(path) or "."
    os.makedirs(d, mode=0o700, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:  # nobody listens: a leftover of a crashed agent
            os.unlink(path)
        else:
            pid = peer_cred(probe)[0]
            raise AlreadyExists(f"an agent (pid {pid}) already listens on {path}")
        finally:
            probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)  # created 0600: no window where others could connect
    try:
        s.bind(path)
    except OSError as e:
        s.close()
        raise KernelError.from_oserror(f"bind {path}", e) from e
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    s.listen(64)
    return s


class Agent:
    """`prepare(stdin) -> stdin` may complete a request's network config (the node agent
    fills in its pod CIDR); `done(env, rc, answer)` hears each answer (the node agent
    records pods in the cluster datastore)."""

    def __init__(self, path: str, verbose: bool = False, prepare=None, done=None) -> None:
        self.path = path
        self.verbose = verbose
        self.prepare = prepare
        self.done = done
        self.sock: socket.socket | None = None
        self.stopping = False
        self.served = 0

    def start(self) -> None:
        # Warm the imports the requests need, before the first one waits for them.
        plugin.warm_up()
        self.sock = _bind(self.path)
        self.sock.settimeout(ACCEPT_POLL)
        with open(pidfile_of(self.path), "w") as f:
            f.write(f"{os.getpid()}\n")

    def stop(self, *_sig) -> None:
        self.stopping = True

    def close(self) -> None:
        s, self.sock = self.sock, None
        if s is not None:
            s.close()
            for p in (self.path, pidfile_of(self.path)):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass

    def serve_forever(self) -> None:
        assert self.sock is not None
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as e:
                if e.errno in (errno.EINTR, errno.ECONNABORTED):
                    continue
                raise
            with conn:
                self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        t0 = time.perf_counter()
        pid, uid, _gid = peer_cred(conn)
        if uid != 0:
            return  # close without a word: only root may ask for netns changes
        try:
            env, stdin, fds = wire.recv_request(conn)
        except (wire.BadRequest, OSError) as e:
            print(f"fastpath agent: dropped a request: {e}", file=sys.stderr)
            return
        try:
            if "H" not in fds:  # never fall back to the agent's own netns
                rc, out = 1, plugin.error_answer(
                    stdin, wire.BadRequest("the client sent no host netns fd"))
            else:
                if self.prepare is not None:
                    stdin = self.prepare(stdin)
                rc, out = plugin.run(env, stdin, host_ns=fds["H"], pod_ns=fds.get("P"),
                                     pod_ns_sent="P" in fds)
        finally:
            for fd in fds.values():
                os.close(fd)
        self.served += 1
        if self.done is not None:
            try:
                self.done(env, rc, out)
            except Exception as e:  # noqa: BLE001 - the runtime's answer must still go out
                print(f"fastpath agent: after {env.get('CNI_COMMAND', '?')}: {e}", file=sys.stderr)
        conn.settimeout(5.0)
        try:
            conn.sendall(wire.encode_answer(rc, out))
        except OSError as e:
            print(f"fastpath agent: could not answer: {e}", file=sys.stderr)
        if self.verbose or rc != 0:  # failures always reach the journal, in one line
            print(f"fastpath agent: {env.get('CNI_COMMAND', '?')} {env.get('CNI_CONTAINERID', '-')}/"
                  f"{env.get('CNI_IFNAME', '-')} from pid {pid}: exit {rc} in "
                  f"{(time.perf_counter() - t0) * 1000:.1f} ms"
                  + (f": {out.decode(errors='replace').strip()}" if rc != 0 else ""),
                  file=sys.stderr, flush=True)


def run(path: str, verbose: bool = False) -> int:
    """Serve until SIGTERM/SIGINT; remove the socket on the way out."""
    agent = Agent(path, verbose)
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    agent.start()
    print(f"fastpath agent: listening on {path} (pid {os.getpid()})", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
        agent.serve_forever()
    finally:
        agent.close()
    print(f"fastpath agent: stopped after {agent.served} requests in "
          f"{time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
    return 0
