"""The typed failures of fastpath.shm; each is a FastpathError with the operation named."""

from __future__ import annotations

from fastpath.errors import FastpathError


class HandoverRefused(FastpathError):
    """A hand-over was refused: by us (what arrived was unsafe to map) or by the peer
    (its reply said why). Nothing was mapped and every received fd was closed."""


class PeerNotAllowed(HandoverRefused):
    """SO_PEERCRED says the connecting process is not on the allow list."""


class PeerDied(FastpathError):
    """The other side of a channel went away without closing it (socket EOF or its pidfd
    became readable). Messages it committed before dying were still delivered."""


class ChannelClosed(FastpathError):
    """The other side closed the channel cleanly: no more messages (or releases) will come."""


class ChannelTimeout(FastpathError):
    """A blocking wait on a channel ran out of time (ring full, or no message)."""
