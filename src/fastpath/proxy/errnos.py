"""Every errno the proxy's data path decides on, in one table, each with its reason (the
models: trio's _unix_pipes.py, Go's internal/poll/splice_linux.go). forward.py and the
worker take their sets from here; an errno in no table is a bug or a resource problem
the caller reports as such.
"""

from __future__ import annotations

import enum
import errno


class Decision(enum.Enum):
    PEER_GONE = "peer-gone"        # carry it to the other side as a reset
    NO_SPLICE = "no-splice"        # before any byte moved: copy instead, for good
    PAUSE_ACCEPT = "pause-accept"  # stop accepting a tick; the kernel's queue holds them
    SKIP_ACCEPTED = "skip"         # that one accepted connection is gone: take the next


# read(2)/write(2)/splice(2) on an established connection (EAGAIN, "wait for epoll", and
# EINTR, "retry", are handled where the call is made)
DATA: dict[int, tuple[Decision, str]] = {
    errno.ECONNRESET: (Decision.PEER_GONE, "the peer sent RST"),
    errno.EPIPE: (Decision.PEER_GONE, "writing to a peer that closed its read side"),
    errno.ETIMEDOUT: (Decision.PEER_GONE, "retransmissions or keepalives gave up"),
    errno.EHOSTUNREACH: (Decision.PEER_GONE, "an ICMP unreachable for the flow"),
    errno.ENETUNREACH: (Decision.PEER_GONE, "an ICMP unreachable for the flow"),
    errno.ECONNABORTED: (Decision.PEER_GONE, "the stack aborted the connection"),
    errno.ENOTCONN: (Decision.PEER_GONE, "no longer connected (reset while we waited)"),
    errno.EINVAL: (Decision.NO_SPLICE, "splice(2): this socket/pipe pair cannot splice"),
    errno.ENOSYS: (Decision.NO_SPLICE, "splice(2) is missing"),
    errno.EOPNOTSUPP: (Decision.NO_SPLICE, "this file type has no splice_read"),
}

# accept(2) on a listener (accept(2) lists them)
ACCEPT: dict[int, tuple[Decision, str]] = {
    errno.EMFILE: (Decision.PAUSE_ACCEPT, "this process is out of fds"),
    errno.ENFILE: (Decision.PAUSE_ACCEPT, "the system is out of files"),
    errno.ENOBUFS: (Decision.PAUSE_ACCEPT, "socket buffers are exhausted"),
    errno.ENOMEM: (Decision.PAUSE_ACCEPT, "memory is exhausted"),
    errno.ECONNABORTED: (Decision.SKIP_ACCEPTED, "the client reset before we accepted"),
    errno.EPROTO: (Decision.SKIP_ACCEPTED, "a protocol error on the new connection"),
    errno.EPERM: (Decision.SKIP_ACCEPTED, "netfilter refused the connection"),
}


def of(table: dict[int, tuple[Decision, str]], decision: Decision) -> frozenset[int]:
    return frozenset(e for e, (d, _) in table.items() if d is decision)


def why(table: dict[int, tuple[Decision, str]], err: int | None) -> str:
    """The table's reason for err, for log lines."""
    entry = table.get(err or 0)
    return entry[1] if entry else (errno.errorcode.get(err or 0) or str(err))
