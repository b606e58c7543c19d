"""Is this socket accelerated? For fastpath's proxy, which splices: splice(2) reads TCP's
receive queue and never sees bytes redirected into a socket's psock queue, so a proxy must
copy (recv/send) on sockets that are in a sockhash.

    from fastpath.sockredir.query import is_accelerated
    if is_accelerated(sock): ...copy...

Cost: getsockname + getpeername + two getsockopts (SO_COOKIE, SO_NETNS_COOKIE), a stat of
the pin and one map lookup per sockhash known (a few microseconds). The answer is exact: the sockhash
value read from user space is the socket cookie of the socket stored under the key, so a
stale or colliding key cannot give a false yes.

Which maps: this instance's pinned fp_sockhash, plus every other live map named
fp_sockhash (other instances, or a map whose pins a `disable` removed while its
connections still redirect), found by walking BPF map ids at most once per RESCAN_S.
That walk needs CAP_SYS_ADMIN; without it only the pinned map is consulted.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

from fastpath.errors import KernelError
from fastpath.sockredir import keys as K
from fastpath.sockredir import libbpf as B
from fastpath.sockredir import loader

SO_COOKIE = 57
SO_NETNS_COOKIE = 71
RESCAN_S = 1.0
MAP_NAME = b"fp_sockhash"


def socket_key(sock: socket.socket) -> K.SockKey:
    """The key sockops gave this socket (raises OSError if it is not connected)."""
    local, remote = sock.getsockname(), sock.getpeername()
    netns = 0
    if K.is_loopback(remote[0]):
        netns = struct.unpack("<Q", sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
    return K.SockKey.for_end(sock.family, local[:2], remote[:2], netns)


def socket_cookie(sock: socket.socket) -> int:
    return struct.unpack("<Q", sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]


class _Maps:
    """Open fds of the sockhash maps worth asking, refreshed at most every RESCAN_S."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.maps: dict[int, B.KernelMap] = {}
        self.scanned = 0.0
        self.pin_ident: tuple | None = None
        self.others: set[int] = set()  # ids of maps that are not fp_sockhash

    def get(self) -> list:
        try:
            st = os.stat(loader.pin_path(loader.MAP_SOCKHASH))
            ident = (st.st_dev, st.st_ino)
        except OSError:
            ident = None
        with self.lock:
            now = time.monotonic()
            # a new pin (enable) is seen at once; other maps at most RESCAN_S late
            if ident != self.pin_ident or now - self.scanned >= RESCAN_S:
                self._rescan()
                self.scanned = now
                self.pin_ident = ident
            return list(self.maps.values())

    def _rescan(self) -> None:

        found: dict[int, B.KernelMap] = {}
        pinned = loader.pin_path(loader.MAP_SOCKHASH)
        if os.path.exists(pinned):
            try:
                fd = B.obj_get(pinned)
                found[B.obj_id(fd.fileno())] = B.KernelMap(fd, K.SOCK_KEY.size, 8, pinned)
            except KernelError:  # unpinned between the exists() and the open: none now
                pass
        ids = B.map_ids()
        self.others &= set(ids)
        for map_id in ids:
            if map_id in found or map_id in self.others:
                continue
            if map_id in self.maps:
                found[map_id] = self.maps.pop(map_id)
                continue
            mfd = B.map_fd_by_id(map_id)
            if mfd is None:
                continue
            if B.map_info(mfd.fileno()).name == MAP_NAME:
                found[map_id] = B.KernelMap(mfd, K.SOCK_KEY.size, 8, f"map id {map_id}")
            else:
                self.others.add(map_id)
                mfd.close()
        # Maps that went away are dropped, not closed: another thread may be in the middle
        # of a lookup on one (get() hands out the list without holding the lock during
        # lookups); its Fd closes when the last reference goes.
        self.maps = found


_maps = _Maps()


def is_accelerated(sock: socket.socket) -> bool:
    """True when `sock` (a connected TCP socket) is in a fastpath sockhash, i.e. the bytes
    its peer sends may arrive through the psock queue that splice(2) does not read."""
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        key = socket_key(sock).pack()
        cookie = socket_cookie(sock)
    except OSError:
        return False
    for m in _maps.get():
        try:
            raw = m.lookup(key)
        except KernelError:  # its last user unpinned and closed it since the scan: skip
            continue
        if raw is not None and struct.unpack("<Q", raw[:8])[0] == cookie:
            return True
    return False
