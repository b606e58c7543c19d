"""`fastpath-cni`: the executable a runtime runs (as `fastpath`, the config's type).

The fast path: read stdin, connect to the node agent's Unix socket, hand over the CNI
environment, the config and two namespace fds (ours, the "host" side; the pod's), print
the agent's answer, exit with its code. Nothing is imported before we know the agent is
unreachable but the C modules `posix` and `_socket` and this package's `wire`: the
`socket` module alone pulls in enum, selectors and collections, ~7 ms of a ~20 ms run
on this VM (`python -X importtime`; tests/cni/test_client.py keeps it so). With no agent,
the same process does the work itself (`fastpath.cni.plugin`).

An agent must run as root: a socket whose peer is not uid 0 is not trusted with a
netns fd, and the client falls back to doing the work in-process.
"""

from __future__ import annotations

import _socket
import posix
import sys

from fastpath.cni import wire

FORWARDED_PREFIXES = (b"CNI_", b"FASTPATH_")
_VERSION_ANSWER = b'{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}\n'




def _environ() -> dict[str, str]:
    return {k.decode(): v.decode("utf-8", "surrogateescape") for k, v in posix.environ.items()
            if k.startswith(FORWARDED_PREFIXES)}


def _configured_socket(stdin: bytes, environ: dict[str, str]) -> str | None:
    """`agentSocket` or `instance` from the config, parsed only when present."""
    if b'"agentSocket"' not in stdin and b'"instance"' not in stdin:
        return None
    import json
    try:
        doc = json.loads(stdin)
    except ValueError:
        return None  # the agent (or the in-process run) reports the decoding error
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("agentSocket"), str):
        return doc["agentSocket"]
    if isinstance(doc.get("instance"), str) and not environ.get("FASTPATH_AGENT_SOCKET"):
        return wire.socket_path({"FASTPATH_INSTANCE": doc["instance"]})
    return None


def connect_agent(path: str):
    """A connection to a root-owned agent at `path`, or None."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
        cred = s.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # struct ucred
        if int.from_bytes(cred[4:8], sys.byteorder) != 0:
            s.close()
            return None
    except OSError:  # ENOENT: no agent; ECONNREFUSED: stale socket; EACCES: not ours
        s.close()
        return None
    return s


def _open_ns(path: str) -> int:
    # O_RDONLY on an existing nsfs file only: never create what is missing (DEL of a
    # vanished netns must not bring it back).
    return posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)


def call_agent(sock, environ: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    fds, kinds = [], ""
    try:
        try:
            fds.append(_open_ns("/proc/thread-self/ns/net"))
            kinds += "H"
        except OSError:
            pass
        netns = environ.get("CNI_NETNS")
        if netns:
            try:
                fds.append(_open_ns(netns))
                kinds += "P"
            except OSError:
                pass  # gone or unreadable: the agent reports it for ADD/CHECK, ignores it for DEL
        msg = wire.encode_request(environ, stdin, kinds)
        anc = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
        sent = sock.sendmsg([msg], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, anc)] if fds else [])
        if sent < len(msg):
            sock.sendall(msg[sent:])
    finally:
        for fd in fds:
            posix.close(fd)
    sock.shutdown(_socket.SHUT_WR)
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            break
        chunks.append(data)
    return wire.decode_answer(b"".join(chunks))


def _agent_lost(detail: str) -> tuple[int, bytes]:
    # The agent took the request and died before answering: what it did is unknown, so do
    # not redo it here; the runtime retries (spec code 11, "try again later").
    import json
    doc = {"cniVersion": "1.1.0", "code": 11, "msg": "fastpath agent did not answer",
           "details": detail}
    return 1, json.dumps(doc).encode() + b"\n"


def main() -> int:
    environ = _environ()
    stdin = b"" if sys.stdin is None else sys.stdin.buffer.read()
    if environ.get("CNI_COMMAND") == "VERSION":
        sys.stdout.buffer.write(_VERSION_ANSWER)
        return 0
    sock = None
    if environ.get("FASTPATH_CNI_NO_AGENT") != "1":
        sock = connect_agent(wire.socket_path(environ, _configured_socket(stdin, environ)))
    if sock is not None:
        try:
            rc, out = call_agent(sock, environ, stdin)
        except (OSError, ValueError, wire.BadRequest) as e:
            rc, out = _agent_lost(str(e))
        finally:
            sock.close()
    else:
        if "site" not in sys.modules:  # launched with -S: site-packages only now (pyroute2)
            import site
            site.main()
        import os

        from fastpath.cni.plugin import run_in_process
        rc, out = run_in_process(dict(os.environ), stdin)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return rc


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
