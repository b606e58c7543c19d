"""The message between `fastpath-cni` (client) and `fastpath agent`, over a Unix stream socket.

Request, one per connection, sent with the namespace fds as SCM_RIGHTS on its first bytes:

    b"FPCNI1 <env_len> <stdin_len> <fds>\\n" + env + stdin

`env` is the CNI_* (and FASTPATH_*) variables as `KEY=VALUE` joined by NUL; `fds` says
which descriptors ride along, in order: "H" (the client's own network namespace: the
"host" side the runtime expects the plugin to wire) and "P" (the pod's netns, CNI_NETNS
opened read-only). A netns that could not be opened (DEL after it vanished) is just not
sent: the agent never re-creates one.

Answer: b"<exit code>\\n" + the bytes the plugin prints on stdout; then the agent closes.

The client's half (socket_path, encode_request, decode_answer) imports nothing: it runs
on the plugin's fast path, where even `socket` (enum, selectors: ~7 ms here) is too much.
"""

from __future__ import annotations

MAGIC = b"FPCNI1"
MAX_FDS = 2
MAX_REQUEST = 1 << 20  # a network config with a large prevResult is still far below


def socket_path(environ=None, configured: str | None = None) -> str:
    """Where the agent of this instance listens."""
    if environ is None:
        import os
        environ = os.environ
    if configured:
        return configured
    explicit = environ.get("FASTPATH_AGENT_SOCKET")
    if explicit:
        return explicit
    tag = environ.get("FASTPATH_INSTANCE", "")
    return f"/run/fastpath/fp-{tag}-agent.sock" if tag else "/run/fastpath/fp-agent.sock"


def encode_request(env: dict[str, str], stdin: bytes, fd_kinds: str) -> bytes:
    blob = "\0".join(f"{k}={v}" for k, v in env.items()).encode()
    return b"%s %d %d %s\n" % (MAGIC, len(blob), len(stdin), (fd_kinds or "-").encode()) + blob + stdin


class BadRequest(Exception):
    pass


def decode_header(line: bytes) -> tuple[int, int, str]:
    parts = line.split()
    if len(parts) != 4 or parts[0] != MAGIC:
        raise BadRequest("not a fastpath-cni request")
    try:
        env_len, stdin_len = int(parts[1]), int(parts[2])
    except ValueError:
        raise BadRequest("bad lengths") from None
    kinds = parts[3].decode("ascii", "replace")
    kinds = "" if kinds == "-" else kinds
    if env_len < 0 or stdin_len < 0 or env_len + stdin_len > MAX_REQUEST:
        raise BadRequest("request too large")
    if len(kinds) > MAX_FDS or set(kinds) - {"H", "P"}:
        raise BadRequest(f"bad fd kinds {kinds!r}")
    return env_len, stdin_len, kinds


def decode_env(blob: bytes) -> dict[str, str]:
    env = {}
    for item in filter(None, blob.split(b"\0")):
        k, _, v = item.decode("utf-8", "surrogateescape").partition("=")
        env[k] = v
    return env


def recv_request(conn, timeout: float = 5.0) -> tuple[dict[str, str], bytes, dict[str, int]]:
    """Read one request; returns (env, stdin, {"H": fd, "P": fd}). The caller owns the fds."""
    import os
    import socket
    conn.settimeout(timeout)
    buf = b""
    fds: list[int] = []
    try:
        while b"\n" not in buf:
            data, got, _flags, _addr = socket.recv_fds(conn, 65536, MAX_FDS)
            fds += got
            if not data:
                raise BadRequest("client closed before sending a request")
            buf += data
            if len(buf) > 256 and b"\n" not in buf:
                raise BadRequest("no header")
        header, _, rest = buf.partition(b"\n")
        env_len, stdin_len, kinds = decode_header(header)
        while len(rest) < env_len + stdin_len:
            data = conn.recv(65536)
            if not data:
                raise BadRequest("short request")
            rest += data
        if len(fds) != len(kinds):
            raise BadRequest(f"expected {len(kinds)} fds, got {len(fds)}")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return decode_env(rest[:env_len]), rest[env_len:env_len + stdin_len], dict(zip(kinds, fds))


def encode_answer(rc: int, stdout: bytes) -> bytes:
    return b"%d\n" % rc + stdout


def decode_answer(data: bytes) -> tuple[int, bytes]:
    head, sep, body = data.partition(b"\n")
    if not sep:
        raise BadRequest("truncated answer")
    return int(head), body
