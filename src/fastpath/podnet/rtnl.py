"""rtnetlink sockets bound to one netns, and netlink errors as fastpath errors.

A netlink socket stays in the netns it was created in, so `Rtnl(ns)` makes its socket
inside `ns` (fastpath.kernel.netns) and every request on it acts there: no setns per
request, no forked helper. One Rtnl per netns is meant to be reused across many pods
(a node's socket serves all its pods). Multicast groups are off: we only ask and answer.
"""

from __future__ import annotations

import errno as _errno
import os
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from fastpath.errors import AlreadyExists, KernelError, NotFound
from fastpath.kernel.netns import Netns, NetnsSpec

NETLINK_ROUTE = 0


class Rtnl:
    """An IPRoute whose socket lives in one netns; closes once."""

    def __init__(self, ns: "NetnsSpec" = None) -> None:
        self.ns = Netns.open(ns)
        sock = self.ns.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        try:
            self.ipr = IPRoute(fileno=sock.detach(), groups=0)
        except BaseException:
            self.ns.close()
            raise

    @property
    def label(self) -> str:
        return self.ns.label

    def call(self, op: str, method: str, *args, **kwargs):
        """self.ipr.<method>(*args, **kwargs); a NetlinkError becomes a typed error naming op."""
        try:
            return getattr(self.ipr, method)(*args, **kwargs)
        except NetlinkError as e:
            raise netlink_error(f"{op} in netns {self.label}", e) from e
        except OSError as e:
            raise KernelError.from_oserror(f"{op} in netns {self.label}", e) from e

    def index(self, ifname: str) -> int | None:
        link = self.link(ifname)
        return None if link is None else link["index"]

    def link(self, ifname: str):
        """The link message, looked up by name in the kernel (RTM_GETLINK with IFLA_IFNAME:
        one lookup; pyroute2's link_lookup dumps every link, O(links) per call), or None."""
        try:
            got = self.ipr.link("get", ifname=ifname)
        except NetlinkError as e:
            if e.code == _errno.ENODEV:
                return None
            raise netlink_error(f"get link {ifname} in netns {self.label}", e) from e
        return got[0] if got else None

    def close(self) -> None:
        ipr, self.ipr = getattr(self, "ipr", None), None
        if ipr is not None:
            ipr.close()
        self.ns.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def netlink_error(op: str, e) -> Exception:
    code = getattr(e, "code", None) or 0
    msg = _errno.errorcode.get(code, "")
    text = (str(e.args[1]) if len(e.args) > 1 else "") or os.strerror(code)
    err: KernelError | AlreadyExists | NotFound
    if code == _errno.EEXIST:
        err = AlreadyExists(text, op=op, errno=code)
    elif code in (_errno.ENODEV, _errno.ESRCH) and "route" not in op:
        err = NotFound(text, op=op, errno=code)
    else:
        err = KernelError(text or msg, op=op, errno=code)
    return err
