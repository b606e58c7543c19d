"""Network namespaces: create, delete, open, and run code inside one.

Kernel facts this module relies on:
- A named netns is a bind mount of /proc/<tid>/ns/net on /run/netns/<name> (as iproute2
  makes it); /run/netns itself is made a shared mount first, so the bind propagates to
  other mount namespaces. Deleting is umount2(MNT_DETACH) + unlink; the kernel frees the
  namespace when the last fd, process and mount holding it is gone (setns(2)).
- setns(fd, CLONE_NEWNET) and unshare(CLONE_NEWNET) change the netns of the calling
  *thread* only, so a thread can step into a netns, create a socket (which stays in the
  netns it was created in for its whole life, see socket(7) / netlink(7)) and step back
  while other threads carry on. /proc/sys/net follows the netns of the thread that opens
  the file.

Decision: we never let a library create a namespace as a side effect of opening one.
pyroute2 opens `netns=NAME` with O_CREAT by default, which would silently make an empty
namespace when the one we meant has vanished; here `Netns.open` only opens what exists
and reports a vanished namespace as NotFound naming it. Netlink sockets for a netns are
made here (enter, socket, leave) and handed to pyroute2 as a file descriptor, which is
also much faster than pyroute2's own way (a forked child per socket).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
from typing import TypeAlias

from fastpath.errors import AlreadyExists, KernelError, NotFound, UsageError
from fastpath.kernel.fd import Fd
from fastpath.kernel.libc import CLONE_NEWNET, check, libc

NETNS_RUN_DIR = "/run/netns"
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

_run_dir_lock = threading.Lock()
_run_dir_ready = False
_check = check


NS_GET_NSTYPE = 0xB703  # ioctl_ns(2): the CLONE_NEW* type of an nsfs fd (Linux 4.11)


def nstype(fd: int) -> int | None:
    """CLONE_NEWNET for a network namespace fd; None for anything that is no namespace."""
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        return None


def setns(fd: int, op: str = "setns") -> None:
    _check(libc.setns(fd, CLONE_NEWNET), op)


def path_of(name: str) -> str:
    """/run/netns/<name>; a name is a file name, never a path."""
    if not name or "/" in name or name in (".", ".."):
        raise UsageError(f"invalid netns name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    try:
        return _is_nsfs(path_of(name))
    except OSError:
        return False


def _is_nsfs(path: str) -> bool:
    # A created-but-never-mounted file (a crash between open(O_CREAT) and mount) is a plain
    # empty file on tmpfs; a live netns mount point reports the nsfs device.
    st = os.stat(path)
    parent = os.stat(os.path.dirname(path))
    return st.st_dev != parent.st_dev


def list_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


class Netns(Fd):
    """An open netns file descriptor, owned (kernel.fd.Fd): closed once, then -1.

    `Netns.open(spec)` takes what callers have: None (this thread's current netns), a name
    under /run/netns, a path (/run/netns/x, /proc/PID/ns/net: CNI_NETNS), or an open fd
    (a CNI agent receives one over SCM_RIGHTS; we dup it, the caller keeps its own).
    It never creates anything.
    """

    __slots__ = ()

    def __init__(self, fd: int, label: str) -> None:
        super().__init__(fd, label)

    @property
    def label(self) -> str:
        return self.what

    @classmethod
    def open(cls, spec: "NetnsSpec") -> "Netns":
        if isinstance(spec, Netns):
            return cls(_dup(spec.fd, spec.label), spec.label)
        if spec is None:
            return cls(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC), "current")
        if isinstance(spec, int):
            fd = _dup(spec, f"fd {spec}")
            if nstype(fd) != CLONE_NEWNET:
                os.close(fd)
                raise UsageError(f"fd {spec} is not a network namespace")
            return cls(fd, f"fd {spec}")
        if not isinstance(spec, str):
            raise UsageError(f"netns must be a name, a path or an fd, not {type(spec).__name__}")
        path = spec if "/" in spec else path_of(spec)
        label = spec
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"netns {label} does not exist", errno=errno.ENOENT) from None
        except OSError as e:
            raise KernelError.from_oserror(f"open netns {label}", e) from e
        try:
            if nstype(fd) != CLONE_NEWNET:
                if "/" not in spec:
                    # an unmounted leftover file under /run/netns (a half-made netns)
                    raise NotFound(f"netns {label} does not exist (stale mount point)")
                raise UsageError(f"{label} is not a network namespace")
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, label)

    def __enter__(self) -> "Netns":
        return self

    def inode(self) -> tuple[int, int]:
        st = os.fstat(self.fd)
        return (st.st_dev, st.st_ino)

    def socket(self, family: int, type_: int, proto: int = 0) -> socket.socket:
        """A socket that lives in this netns for its whole life."""
        with entered(self):
            return socket.socket(family, type_, proto)

    def __repr__(self) -> str:
        return f"Netns({self.label!r}, fd={self.fd})"


NetnsSpec: TypeAlias = "Netns | str | int | None"


def _dup(fd: int, label: str) -> int:
    try:
        return os.dup(fd)
    except OSError as e:
        raise KernelError.from_oserror(f"dup netns {label}", e) from e


@contextlib.contextmanager
def entered(ns: Netns):
    """Run the body with this thread in `ns`; always returns to where it was."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(ns.fd, f"enter netns {ns.label}")
        try:
            yield ns
        finally:
            # Failing to return would leave this thread in the wrong netns: never carry on.
            if libc.setns(home, CLONE_NEWNET) != 0:
                os.abort()
    finally:
        os.close(home)


def _prepare_run_dir() -> None:
    """Make /run/netns a shared mount, as `ip netns add` does (once per process)."""
    global _run_dir_ready
    with _run_dir_lock:
        if _run_dir_ready:
            return
        os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
        d = NETNS_RUN_DIR.encode()
        if libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
            # Not a mount point yet: bind it onto itself, then share.
            _check(libc.mount(d, d, b"none", MS_BIND | MS_REC, None), f"bind mount {NETNS_RUN_DIR}")
            _check(libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None), f"share {NETNS_RUN_DIR}")
        _run_dir_ready = True


def create(name: str) -> None:
    """Create the named netns, with `lo` down as the kernel makes it. AlreadyExists if it is there."""
    path = path_of(name)
    _prepare_run_dir()
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise AlreadyExists(f"netns {name} already exists", errno=errno.EEXIST) from None
    except OSError as e:
        raise KernelError.from_oserror(f"create netns {name}", e) from e
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(libc.unshare(CLONE_NEWNET), f"create netns {name}")
            try:
                _check(libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                       f"create netns {name}")
            finally:
                if libc.setns(home, CLONE_NEWNET) != 0:
                    os.abort()
        finally:
            os.close(home)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def delete(name: str) -> bool:
    """Remove the named netns; False when it was not there (idempotent)."""
    path = path_of(name)
    if not os.path.lexists(path):
        return False
    libc.umount2(path.encode(), MNT_DETACH)  # EINVAL: not mounted (a half-made one); unlink anyway
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise KernelError.from_oserror(f"delete netns {name}", e) from e
    return True


def join(spec: "NetnsSpec") -> None:
    """Move the calling thread into a netns for good, as `ip netns exec` does: for a
    process that joins before it starts threads or opens sockets (a proxy in a node)."""
    with Netns.open(spec) as ns:
        setns(ns.fd, f"enter netns {ns.label}")


def run_in(spec: "NetnsSpec", fn, *args):
    """fn(*args) inside a netns, from a short-lived thread of its own, and its result (or
    its exception, raised here). The calling thread never moves: one process can own
    sockets in several namespaces (each stays where it was created)."""
    out: dict = {}

    def body():
        try:
            with Netns.open(spec) as ns, entered(ns):
                out["v"] = fn(*args)
        except BaseException as e:  # re-raised in the caller
            out["e"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out.get("v")


def pids_in(ns: Netns) -> list[int]:
    """Processes whose netns is `ns` (to stop them before the netns is deleted)."""
    want = ns.inode()
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{p}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == want:
            out.append(int(p))
    return out
