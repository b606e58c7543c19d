"""Handing memfd regions (and channels) to another local process over a Unix socket.

Kernel facts relied on (unix(7), cmsg(3), memfd_create(2), fcntl(2)):
- SCM_RIGHTS installs the sender's very open files in the receiver; MSG_CMSG_CLOEXEC marks
  them close-on-exec as they arrive, so a fork+exec in between cannot leak them.
- If the ancillary buffer is too small the kernel sets MSG_CTRUNC and discards (closes)
  the fds that did not fit; the ones that did fit ARE installed and are ours to close.
  A message carries at most SCM_MAX_FD (253) fds.
- SOCK_SEQPACKET keeps message boundaries (one header, its fds, nothing mixed with the next)
  and reports the peer's close as a zero-length read.
- SO_PEERCRED gives the pid/uid/gid of the peer as of connect(); the kernel fills it in,
  the peer cannot forge it.
- Seals only ever get added. Once F_SEAL_SHRINK is on a memfd its size can no longer go
  down, so an st_size read AFTER seeing the seal is a floor for good: mapping that many
  bytes can never SIGBUS. (Without the seal, a sender that truncates after we mapped kills
  us with SIGBUS on the next read, no exception possible.) Hence the order: seals, then
  fstat, then mmap.

Protocol: right after accept the server checks SO_PEERCRED and sends a greeting, a REPLY
that is OK or a refusal; the client waits for it in connect() before it sends anything, so
a refused client never hands over a single fd and gets the reason as one clear line. (A
server closing with unread data in its queue would give the client ECONNRESET instead of
the reason.) Then the client sends one message (a REGION or a CHANNEL header with its
fds) and the server answers with a REPLY again: OK, or a refusal with errno and a reason,
which the client raises as HandoverRefused.
"""

from __future__ import annotations

import array
import errno
import os
import select
import socket
import stat
from dataclasses import dataclass, field

from fastpath.errors import KernelError, UsageError
from fastpath.shm import header as hdr
from fastpath.shm.errors import HandoverRefused, PeerDied, PeerNotAllowed
from fastpath.shm.memfd import (
    F_SEAL_FUTURE_WRITE,
    F_SEAL_SHRINK,
    F_SEAL_WRITE,
    Region,
    get_seals,
)

# We never expect more than 3 fds; room for a few more lets us see (and close) a peer that
# sends extra ones instead of only learning "truncated". Anything beyond is discarded by
# the kernel (MSG_CTRUNC) and never installed.
MAX_FDS = 8
_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
_MSG_CMSG_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0x40000000)
# A sparse memfd can claim a terabyte and still pass the size check; mapping it costs
# nothing until touched, but a receiver that reads or copies it all would not survive.
MAX_REGION = 64 << 30


def close_fds(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# --- one message ------------------------------------------------------------------------

def send_message(sock: socket.socket, header: hdr.Header, fds=(), body: bytes = b"") -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    try:
        sock.sendmsg([header.pack() + body], anc)
    except (BrokenPipeError, ConnectionResetError) as e:
        raise PeerDied("the peer closed the connection", op=f"send {header.kind_name}",
                       errno=e.errno) from e
    except OSError as e:
        raise KernelError.from_oserror(f"sendmsg {header.kind_name}", e) from e


def wait_readable(sock: socket.socket, timeout: float | None, what: str) -> None:
    if timeout is None:
        return
    r, _, _ = select.select([sock], [], [], max(0.0, timeout))
    if not r:
        raise HandoverRefused(f"nothing received in {timeout:g}s", op=what, errno=errno.ETIMEDOUT)


def recv_message(sock: socket.socket, timeout: float | None = None,
                 what: str = "receive") -> tuple[hdr.Header, bytes, list[int]]:
    """One message: (header, body, fds). The fds are the caller's to keep or close; on any
    error here every fd that arrived has already been closed."""
    wait_readable(sock, timeout, what)
    try:
        data, anc, flags, _ = sock.recvmsg(hdr.MAX_MESSAGE + 1, _ANCILLARY, _MSG_CMSG_CLOEXEC)
    except ConnectionResetError as e:
        raise PeerDied("the peer reset the connection", op=what, errno=e.errno) from e
    except OSError as e:
        raise KernelError.from_oserror(f"recvmsg ({what})", e) from e
    fds: list[int] = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(payload[: len(payload) - len(payload) % a.itemsize])
            fds.extend(a)
    try:
        if not data and not fds:
            raise PeerDied("the peer closed the connection before sending", op=what)
        if flags & socket.MSG_CTRUNC:
            raise HandoverRefused(f"the peer sent more than {MAX_FDS} fds (ancillary data "
                                  "truncated); all closed", op=what, errno=errno.EMSGSIZE)
        if flags & socket.MSG_TRUNC:
            raise HandoverRefused(f"message longer than {hdr.MAX_MESSAGE} bytes", op=what,
                                  errno=errno.EMSGSIZE)
        try:
            h, body = hdr.unpack(data)
        except hdr.HeaderError as e:
            raise HandoverRefused(str(e), op=what, errno=errno.EPROTO) from e
        if len(fds) != h.nfds:
            raise HandoverRefused(f"{h.kind_name} header promises {h.nfds} fds, {len(fds)} "
                                  "arrived; all closed", op=what, errno=errno.EPROTO)
    except BaseException:
        close_fds(fds)
        raise
    return h, body, fds


# --- what a received fd must be before we map it ----------------------------------------

def check_memfd(fd: int, size: int, *, writable: bool) -> int:
    """Refuse a memfd that could SIGBUS us or that is not what the header says; returns its
    seals. The order matters (see the module doc): seals first, then st_size."""
    op = "check received memfd"
    try:
        seals = get_seals(fd)
    except KernelError as e:
        raise HandoverRefused("the fd is not a sealable memfd (F_GET_SEALS failed)", op=op,
                              errno=e.errno) from e
    if not seals & F_SEAL_SHRINK:
        raise HandoverRefused("memfd is not sealed against shrinking (F_SEAL_SHRINK): its sender "
                              "could truncate it under our mapping and kill us with SIGBUS",
                              op=op, errno=errno.EPERM, hint="seal the region before sending it")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise HandoverRefused("the fd is not a regular memfd", op=op, errno=errno.EINVAL)
    if st.st_size != size:
        raise HandoverRefused(f"header says {size} bytes, the memfd has {st.st_size}", op=op,
                              errno=errno.EINVAL)
    if writable and seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
        raise HandoverRefused("memfd is write-sealed but must be mapped writable", op=op,
                              errno=errno.EPERM)
    return seals


def check_eventfd(fd: int) -> None:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as e:
        raise HandoverRefused("cannot inspect received fd", op="check received eventfd",
                              errno=e.errno) from e
    if target != "anon_inode:[eventfd]":
        raise HandoverRefused(f"expected an eventfd, got {target}", op="check received eventfd",
                              errno=errno.EINVAL)


def map_received(fd: int, size: int, *, writable: bool, populate: bool = False) -> Region:
    """Check, then map; the Region owns `fd` on success, the fd is closed on failure."""
    try:
        seals = check_memfd(fd, size, writable=writable)
        if seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
            writable = False
        try:
            return Region(fd, size, writable=writable, populate=populate)
        except KernelError as e:  # e.g. a hugetlb memfd of a size mmap refuses
            raise HandoverRefused(f"cannot map it: {e.msg}", op="map received memfd",
                                  errno=e.errno) from e
    except BaseException:
        close_fds([fd])
        raise


# --- peers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int

    @classmethod
    def of(cls, sock: socket.socket) -> "PeerCred":
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        pid, uid, gid = array.array("i", raw)
        return cls(pid, uid, gid)


@dataclass(frozen=True)
class AllowList:
    """Who may hand us memory: a peer is allowed if its uid OR its gid is listed.
    The default is our own effective uid (a user talks to their own processes)."""

    uids: frozenset[int] = field(default_factory=lambda: frozenset({os.geteuid()}))
    gids: frozenset[int] = frozenset()

    def allows(self, cred: PeerCred) -> bool:
        return cred.uid in self.uids or cred.gid in self.gids

    def describe(self) -> str:
        parts = [f"uid {sorted(self.uids)}"] if self.uids else []
        parts += [f"gid {sorted(self.gids)}"] if self.gids else []
        return " or ".join(parts) or "nobody"


@dataclass
class Received:
    """A region handed to us: mapped, checked. `length` is the payload the sender used."""

    region: Region
    length: int
    flags: int
    peer: PeerCred

    @property
    def payload(self) -> memoryview:
        return self.region.buf[: self.length]

    def close(self) -> None:
        self.region.close()

    def __enter__(self) -> "Received":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Connection:
    """One SOCK_SEQPACKET connection, either side. Owns its socket; closes once."""

    def __init__(self, sock: socket.socket, peer: PeerCred) -> None:
        self.sock = sock
        self.peer = peer

    @classmethod
    def connect(cls, path: str, timeout: float | None = 10.0) -> "Connection":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            s.settimeout(timeout)
            s.connect(path)
            s.settimeout(None)
            conn = cls(s, PeerCred.of(s))
        except TimeoutError as e:  # socket.timeout: a backlog that never drains
            s.close()
            raise HandoverRefused(f"no answer in {timeout:g}s", op=f"connect {path}",
                                  errno=errno.ETIMEDOUT) from e
        except FileNotFoundError as e:
            s.close()
            raise UsageError(f"no socket at {path}", op="connect", errno=e.errno,
                             hint="start the receiver first: fastpath shm recv --listen SOCKET") from e
        except OSError as e:
            s.close()
            raise KernelError.from_oserror(f"connect {path}", e) from e
        try:
            conn.wait_reply(timeout, f"connect {path}")
        except BaseException:
            conn.close()
            raise
        return conn

    def fileno(self) -> int:
        return self.sock.fileno()

    # client side: send and wait for the verdict
    def send_region(self, region: Region, length: int | None = None, *, readonly: bool = False,
                    timeout: float | None = 30.0) -> None:
        """Seal `region` (SHRINK|GROW; FUTURE_WRITE too if `readonly`) and hand it over."""
        length = region.size if length is None else length
        if not 0 <= length <= region.size:
            raise UsageError(f"payload length {length} outside region of {region.size} bytes")
        region.seal(future_write=readonly)
        h = hdr.Header(hdr.KIND_REGION, size=region.size, length=length,
                       flags=hdr.FLAG_READONLY if readonly else 0)
        send_message(self.sock, h, [region.fd])
        self.wait_reply(timeout, "send region")

    def wait_reply(self, timeout: float | None, what: str) -> None:
        h, body, fds = recv_message(self.sock, timeout, f"{what}: wait for the peer's reply")
        close_fds(fds)
        if h.kind != hdr.KIND_REPLY:
            raise HandoverRefused(f"expected a reply, got {h.kind_name}", op=what, errno=errno.EPROTO)
        if not h.flags & hdr.FLAG_OK:
            reason = body.decode("utf-8", "replace") or "refused"
            cls = PeerNotAllowed if h.arg0 == errno.EACCES else HandoverRefused
            raise cls(f"the peer refused: {reason}", op=what, errno=h.arg0 or None)

    # server side: receive, check, answer
    def reply(self, ok: bool, reason: str = "", err: int = 0) -> None:
        h = hdr.Header(hdr.KIND_REPLY, flags=hdr.FLAG_OK if ok else 0, arg0=err)
        try:
            send_message(self.sock, h, body=reason.encode()[: hdr.MAX_BODY])
        except PeerDied:
            pass  # it left before hearing the verdict; nothing of ours depends on it

    def recv_region(self, timeout: float | None = 30.0, max_size: int = MAX_REGION) -> Received:
        """The next region the peer hands over, checked and mapped read-only; a refusal is
        answered to the peer and raised here (HandoverRefused), with nothing mapped."""
        h, body, fds = recv_message(self.sock, timeout, "receive region")
        try:
            if h.kind != hdr.KIND_REGION:
                raise HandoverRefused(f"expected a region, got {h.kind_name}", op="receive region",
                                      errno=errno.EPROTO)
            if h.size > max_size:
                raise HandoverRefused(f"region of {h.size} bytes exceeds the {max_size}-byte limit",
                                      op="receive region", errno=errno.EFBIG)
        except BaseException as e:
            close_fds(fds)
            self._refuse(e)
            raise
        try:
            region = map_received(fds[0], h.size, writable=False)
        except BaseException as e:
            self._refuse(e)
            raise
        self.reply(True)
        return Received(region, h.length, h.flags, self.peer)

    def _refuse(self, e: BaseException) -> None:
        if isinstance(e, HandoverRefused):
            self.reply(False, str(e), e.errno or 0)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stale_socket(path: str) -> bool:
    """True if `path` is a Unix socket nobody listens on (connect says ECONNREFUSED)."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False  # EPROTOTYPE: someone listens with another socket type; leave it
    finally:
        probe.close()


class Listener:
    """A SOCK_SEQPACKET listening socket at `path` that accepts only allowed peers."""

    def __init__(self, path: str, allow: AllowList | None = None, backlog: int = 64) -> None:
        self.path = path
        self.allow = allow or AllowList()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        # Bound and listening under a temporary name, then renamed into place: whoever sees
        # `path` appear can connect at once (no ECONNREFUSED between bind and listen).
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
        if len(os.fsencode(tmp)) > 107:  # sun_path limit: bind in place instead
            tmp = path
        try:
            if os.path.lexists(path) and not _stale_socket(path):
                raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
            if tmp == path and os.path.lexists(path):
                os.unlink(path)  # a stale socket: left by a receiver that was killed
            self.sock.bind(tmp)
            self.sock.listen(backlog)
            if tmp != path:
                os.rename(tmp, path)  # replaces a stale socket, atomically
            self._ino = os.stat(path).st_ino
        except OSError as e:
            self.sock.close()
            if tmp != path:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            hint = "another receiver is listening there, or it is not a socket" \
                if e.errno == errno.EADDRINUSE else None
            raise KernelError.from_oserror(f"listen on {path}", e, hint) from e

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self, timeout: float | None = None) -> Connection:
        """The next allowed peer. A peer not allowed gets a refusal reply and is closed
        before anything it sent is read; PeerNotAllowed is raised here for the log."""
        if timeout is not None:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                raise HandoverRefused(f"no peer connected in {timeout:g}s", op=f"accept on {self.path}",
                                      errno=errno.ETIMEDOUT)
        try:
            s, _ = self.sock.accept()
        except OSError as e:
            raise KernelError.from_oserror(f"accept on {self.path}", e) from e
        s.set_inheritable(False)
        cred = PeerCred.of(s)
        conn = Connection(s, cred)
        if not self.allow.allows(cred):
            msg = (f"peer pid {cred.pid} uid {cred.uid} gid {cred.gid} is not allowed "
                   f"(allowed: {self.allow.describe()})")
            conn.reply(False, msg, errno.EACCES)
            conn.close()
            raise PeerNotAllowed(msg, op=f"accept on {self.path}", errno=errno.EACCES,
                                 hint="add it with --allow-uid/--allow-gid")
        conn.reply(True, "ready")
        return conn

    def close(self) -> None:
        if self.sock.fileno() < 0:
            return
        self.sock.close()
        try:  # remove the socket file only if it is still the one we bound
            if os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        except OSError:
            pass

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

